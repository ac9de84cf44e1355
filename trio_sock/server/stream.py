"""Clients the fast path cannot serve: TLS, the book's ``--once``, ``--delay``.

These go through Trio streams: a ``WatchedStream`` over the socket (TLS in an
``SSLStream`` on top of it), and the code is written plainly, since speed is
``fast``'s business.  Idleness is timed as on the fast path: every byte
the ``WatchedStream`` moves is a sign of life, and ``reaper.reap_idle`` drops a
client whose last one is too old.  Nothing a client does escapes its own task:
every end becomes the ``reason`` in its departure record.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, TypeVar

import trio

from trio_sock.config.addresses import TcpAddress
from trio_sock.errors import why_broken
from trio_sock.protocol import ONCE_SIZE, increment
from trio_sock.server.clients import DONE, EOF, IDLE_TIMEOUT, SHUTDOWN
from trio_sock.server.fast import RECEIVE_SIZE
from trio_sock.server.goodbye import LINGER_BYTES, linger
from trio_sock.server.handlers import eof_reply
from trio_sock.server.watched_stream import WatchedStream

if TYPE_CHECKING:
    import socket
    import ssl

    from trio_sock.config.server import ServerConfig
    from trio_sock.server.clients import Door
    from trio_sock.server.handlers import SansIOProtocol
    from trio_sock.server.stats import Tally


W = TypeVar("W", bound=WatchedStream)


async def start_tls(
    plain: W, tls: ssl.SSLContext, limit: float
) -> tuple[trio.SSLStream[W] | None, str]:
    """Do the TLS handshake within ``limit`` seconds: the stream, or None and why not."""
    stream = trio.SSLStream(plain, tls, server_side=True)
    with trio.move_on_after(limit):
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            return None, f"tls handshake failed: {why_broken(exc)}"
        return stream, ""
    return None, "tls handshake timeout"


async def serve_stream_client(conn: socket.socket, peer: object, number: int, door: Door) -> None:
    """Serve one client over a Trio stream (TLS, ``--once``, ``--delay``); never raise.

    The arguments are ``fast.serve_plain_client``'s; so is the promise that
    every end goes through ``Door.left`` with its reason.
    """
    tally = door.arrived(conn)
    reason = SHUTDOWN
    try:
        reason = await _serve(conn, door, tally)
    except trio.BrokenResourceError as exc:
        reason = why_broken(exc)
    except trio.ClosedResourceError:  # only the reaper closes a client's stream under it
        reason = IDLE_TIMEOUT
    except Exception as exc:
        reason = door.failed(number, exc)
    finally:
        door.left(conn, peer, number, tally, reason)


async def _serve(conn: socket.socket, door: Door, tally: Tally) -> str:
    config, tls = door.context.config, door.context.tls
    secure = tls is not None and isinstance(door.address, TcpAddress)
    # Under TLS, the departure record counts the bytes the protocol saw, not the records.
    plain = WatchedStream(conn, tally, door.context.clock, count=not secure)
    stream: trio.abc.Stream = plain
    if tls is not None and secure:
        tls_stream, reason = await start_tls(plain, tls, config.tls_handshake_timeout)
        if tls_stream is None:
            return reason
        stream = tls_stream
    if config.once:
        return await _reply_once(stream, config, tally, counted=not secure)
    protocol = door.context.protocol()
    reason = await _reply_over_stream(stream, config, tally, protocol, counted=not secure)
    if stream is not plain and reason in (EOF, DONE):
        await say_goodbye(stream, linger(config))
    return reason


async def _reply_over_stream(
    stream: trio.abc.Stream,
    config: ServerConfig,
    tally: Tally,
    protocol: SansIOProtocol,
    *,
    counted: bool,
) -> str:
    """Reply to every chunk with ``protocol`` until the client's EOF or the protocol's
    ``done``, over any Trio stream (TLS, ``--delay``).

    ``fast.serve_plain_client`` does the same for plain sockets, faster; this
    one is written plainly.  A client that stops reading blocks ``send_all``,
    which stops the reads: at most one chunk per client is ever buffered here.

    Args:
        stream: The client's stream.
        config: For ``delay``.
        tally: The client's figures.
        protocol: The client's sans-I/O protocol.
        counted: The ``WatchedStream`` below counts the bytes already (no TLS).
    """
    delay = config.delay
    while data := await stream.receive_some(RECEIVE_SIZE):
        if not counted:
            tally.received += len(data)
        if delay:  # simulated work is the server's time, not the client's idleness
            tally.alive = math.inf
            await trio.sleep(delay)
            tally.alive = trio.current_time()
        # Handlers are promised bytes; SSLStream gives a bytearray.
        reply = protocol.data_received(data if isinstance(data, bytes) else bytes(data))
        await _send(stream, reply, tally, counted=counted)
        if protocol.done:
            return DONE
    await _send(stream, eof_reply(protocol), tally, counted=counted)
    return EOF


async def _send(stream: trio.abc.Stream, reply: bytes, tally: Tally, *, counted: bool) -> None:
    if reply:
        await stream.send_all(reply)
        if not counted:
            tally.sent += len(reply)


async def _reply_once(
    stream: trio.abc.Stream, config: ServerConfig, tally: Tally, *, counted: bool
) -> str:
    """The book's server: read one byte, write its successor, close."""
    data = await stream.receive_some(ONCE_SIZE)
    if not data:
        return "eof before a byte"
    if not counted:
        tally.received = 1
    if config.delay:  # simulated work is not the client's idleness
        tally.alive = math.inf
        await trio.sleep(config.delay)
        tally.alive = trio.current_time()
    await stream.send_all(increment(data))
    if not counted:
        tally.sent = 1
    await _close_gently(stream, linger(config))
    return "replied once"


async def say_goodbye(stream: trio.abc.Stream, linger: float) -> None:
    """End a TLS session with close_notify, so the client knows the replies are whole.

    A plain TCP or Unix close says that by itself; TLS needs its own message,
    which costs one send and is bounded by ``linger``.
    """
    # The client left first, or was dropped as idle: there is nothing to tell it.
    with (
        trio.move_on_after(linger),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.aclose()


async def _close_gently(stream: trio.abc.Stream, linger: float) -> None:
    """Send EOF, then discard what the client still sends, for a little while.

    Closing a socket with unread input makes the kernel reset the connection,
    and a reset can destroy the reply before the client reads it: ``echo A |
    nc`` sends two bytes and would never see its ``B``.
    """
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        await say_goodbye(stream, linger)  # TLS has no half-close: close_notify is its EOF
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
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client is gone, or was dropped as idle: nothing left to protect
