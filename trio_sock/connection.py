"""One client's connection, from accept to close; the hot path lives here.

Every way a connection can end is caught here and becomes the ``reason`` in
the one log record each client leaves: ``eof``, ``idle timeout``, a reset,
``cancelled at shutdown``.  Nothing a client does escapes its own task.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Final

import attrs
import trio

from .access import PeerCredentials
from .config import TcpAddress
from .errors import why_broken
from .protocol import ONCE_SIZE, increment
from .stats import Counters, Tally

if TYPE_CHECKING:
    import socket
    import ssl

    from .config import Address, ServerConfig

_log = logging.getLogger("trio_sock.server")
_clients_log = logging.getLogger("trio_sock.clients")

#: Trio's own ``receive_some`` default: one read drains most socket buffers, and
#: a client that never reads its replies pins at most this much (plus the reply).
RECEIVE_SIZE: Final = 65536
#: In --once mode, after the reply, how long and how much of the client's
#: remaining input to discard before closing (see ``_close_gently``): plenty
#: for a line piped into nc, too little for a client to hold its slot.
LINGER_TIME: Final = 2.0
LINGER_BYTES: Final = 1024 * 1024
IDLE_TIMEOUT: Final = "idle timeout"


@attrs.frozen
class Context:
    """What every client task of one server shares."""

    config: ServerConfig
    limiter: trio.CapacityLimiter
    """Each task holds one slot of it, from before its accept() until it ends."""
    counters: Counters
    tls: ssl.SSLContext | None = None
    """Set when TCP clients speak TLS."""


async def _start_tls(
    plain: trio.SocketStream, tls: ssl.SSLContext, limit: float
) -> tuple[trio.SSLStream[trio.SocketStream] | None, str]:
    """Do the TLS handshake within ``limit`` seconds: the stream, or None and why not."""
    stream = trio.SSLStream(plain, tls, server_side=True)
    with trio.move_on_after(limit):
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            return None, f"tls handshake failed: {why_broken(exc)}"
        return stream, ""
    return None, "tls handshake timeout"


async def serve_connection(
    conn: socket.socket,
    peer: object,
    slot: object,
    number: int,
    address: Address,
    context: Context,
) -> None:
    """Run one client to its end, whatever that end is; never raise.

    Args:
        conn: The accepted socket; closed when this returns.
        peer: The peer as logs show it: ``(host, port)`` or ``PeerCredentials``.
        slot: The limiter slot taken for this client; released when this returns.
        number: The client's number since the server started.
        address: The listener it came through.
        context: What the server's client tasks share.
    """
    config = context.config
    plain = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
    stream: trio.abc.Stream = plain
    tally = Tally(trio.current_time())
    context.counters.arrived(tally)
    reason = "cancelled at shutdown"
    try:
        if context.tls is not None and isinstance(address, TcpAddress):
            secure, reason = await _start_tls(plain, context.tls, config.tls_handshake_timeout)
            if secure is None:
                return
            stream = secure
        if config.once:
            reason = await _reply_once(stream, config, tally)
        else:
            reason = await _reply_until_eof(stream, config, tally)
        if stream is not plain and reason == "eof":
            await _say_goodbye(stream, _linger(config))
    except trio.BrokenResourceError as exc:
        reason = why_broken(exc)
    except Exception as exc:
        # A bug, not the client's doing: say so, but keep serving the others.
        reason = "internal error"
        _log.error(
            "client %d on %s failed: %r",
            number,
            address,
            exc,
            exc_info=_log.isEnabledFor(logging.DEBUG),
        )
    finally:
        context.limiter.release_on_behalf_of(slot)
        plain.socket.close()  # TLS said goodbye already where there was anything to say
        context.counters.left(tally, idle=reason == IDLE_TIMEOUT)
        if _clients_log.isEnabledFor(logging.INFO):
            _log_departure(number, address, peer, tally, reason)


def _log_departure(number: int, address: Address, peer: object, tally: Tally, reason: str) -> None:
    if isinstance(peer, tuple):
        host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
        peer_text = f"{host}:{peer[1]}"
    else:
        peer_text = str(peer)
    duration = trio.current_time() - tally.started
    _clients_log.info(
        "client %d left %s peer=%s in=%d out=%d duration=%.3fs reason=%s",
        number,
        address,
        peer_text,
        tally.received,
        tally.sent,
        duration,
        reason,
        extra={
            "client": number,
            "listener": str(address),
            "transport": address.transport,
            "peer": peer_text,
            "bytes_in": tally.received,
            "bytes_out": tally.sent,
            "duration": round(duration, 6),
            "reason": reason,
            **(attrs.asdict(peer) if isinstance(peer, PeerCredentials) else {}),
        },
    )


async def _reply_until_eof(stream: trio.abc.Stream, config: ServerConfig, tally: Tally) -> str:
    """The hot path: reply to every chunk until the client's EOF.

    One read, one translate, one send per chunk.  The idle watchdog is one
    cancel scope whose deadline moves after each reply, rather than a new
    scope per read.  A client that stops reading blocks ``send_all``, which
    stops the reads: at most one chunk per client is ever buffered here.
    """
    idle, delay = config.idle_timeout, config.delay
    with trio.CancelScope(deadline=trio.current_time() + idle) as watchdog:
        while data := await stream.receive_some(RECEIVE_SIZE):
            tally.received += len(data)
            if delay:  # simulated work is the server's time, not the client's idleness
                watchdog.deadline = math.inf
                await trio.sleep(delay)
                watchdog.deadline = trio.current_time() + idle
            await stream.send_all(increment(data))
            tally.sent += len(data)
            watchdog.deadline = trio.current_time() + idle
        return "eof"
    return IDLE_TIMEOUT


async def _reply_once(stream: trio.abc.Stream, config: ServerConfig, tally: Tally) -> str:
    """The book's server: read one byte, write its successor, close."""
    data: bytes | bytearray | None = None
    with trio.move_on_after(config.idle_timeout):
        data = await stream.receive_some(ONCE_SIZE)
    if not data:
        return "eof before a byte" if data is not None else IDLE_TIMEOUT
    tally.received = 1
    if config.delay:  # simulated work is not the client's idleness
        await trio.sleep(config.delay)
    with trio.move_on_after(config.idle_timeout):
        await stream.send_all(increment(data))
        tally.sent = 1
    if not tally.sent:
        return IDLE_TIMEOUT
    await _close_gently(stream, _linger(config))
    return "replied once"


def _linger(config: ServerConfig) -> float:
    """How long to wait for a goodbye: never longer than the client may idle."""
    return min(LINGER_TIME, config.idle_timeout)


async def _say_goodbye(stream: trio.abc.Stream, linger: float) -> None:
    """End a TLS session with close_notify, so the client knows the replies are whole.

    A plain TCP or Unix close says that by itself; TLS needs its own message,
    which costs one send and is bounded by ``linger``.
    """
    # BrokenResourceError: the client left first, so there is nothing to tell it.
    with trio.move_on_after(linger), contextlib.suppress(trio.BrokenResourceError):
        await stream.aclose()


async def _close_gently(stream: trio.abc.Stream, linger: float) -> None:
    """Send EOF, then discard what the client still sends, for a little while.

    Closing a socket with unread input makes the kernel reset the connection,
    and a reset can destroy the reply before the client reads it: ``echo A |
    nc`` sends two bytes and would never see its ``B``.
    """
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        await _say_goodbye(stream, linger)  # TLS has no half-close: close_notify is its EOF
        return
    with trio.move_on_after(linger):
        try:
            await stream.send_eof()
            discarded = 0
            while discarded < LINGER_BYTES:
                chunk = await stream.receive_some(RECEIVE_SIZE)
                if not chunk:
                    return
                discarded += len(chunk)
        except trio.BrokenResourceError:
            return  # the client is gone already: nothing left to protect
