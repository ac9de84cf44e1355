"""Serve the increment protocol: supervision, limits, timeouts and shutdown.

The shape is hypercorn's Trio worker: client tasks live in an outer nursery,
accept loops in an inner one.  Stopping cancels the inner nursery (no new
clients), closes the listeners, then gives the outer one a deadline: the grace
period.  Each client task handles its own failures, so a reset, garbage or a
timeout ends that client and nothing else.
"""

from __future__ import annotations

import errno
import logging
import math
import resource
from typing import TYPE_CHECKING, Final

import attrs
import trio

from .listeners import Listener, open_listeners
from .protocol import ONCE_SIZE, increment

if TYPE_CHECKING:
    import socket

    from .config import Address, ServerConfig

_log = logging.getLogger("trio_sock.server")
_clients_log = logging.getLogger("trio_sock.clients")

#: Trio's own ``receive_some`` default: one read drains most socket buffers, and
#: a client that never reads its replies pins at most this much (plus the reply).
RECEIVE_SIZE: Final = 65536
#: Out of descriptors, accept() fails at once until a client leaves; pausing
#: this long (as ``trio.serve_listeners`` does) avoids a hot loop meanwhile.
ACCEPT_BACKOFF: Final = 0.1
#: At most one log line per this many seconds about failing accepts, with a count.
ACCEPT_ERROR_LOG_INTERVAL: Final = 1.0
#: In --once mode, after the reply, how long and how much of the client's
#: remaining input to discard before closing (see ``_close_gently``): plenty
#: for a line piped into nc, too little for a client to hold its slot.
LINGER_TIME: Final = 2.0
LINGER_BYTES: Final = 1024 * 1024
#: Descriptors the server itself may hold besides clients: stdio, listeners,
#: epoll, Trio's wakeup pair, a resolver thread's socket, the socket-file probe.
_RESERVED_FDS: Final = 16

# accept() failing with these means the process or system is out of resources:
# wait for clients to leave and try again.
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# These concern one connection that died in the queue: skip it, go on at once.
_CONNECTION_GONE: Final = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})


@attrs.define(eq=False)
class Server:
    """A running server, as ``nursery.start(serve, config)`` returns it.

    Cancelling the nursery that runs ``serve`` stops it at once (clients are
    cancelled, socket files removed); ``stop()`` stops it gracefully.
    """

    addresses: tuple[Address, ...]
    """Every bound address, in config order; TCP port 0 replaced by the real one."""
    _limiter: trio.CapacityLimiter
    _accepting: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    accepted: int = 0
    """Connections accepted since the start."""

    @property
    def active_clients(self) -> int:
        """Clients being served right now."""
        return int(self._limiter.borrowed_tokens)

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._accepting.cancel_called

    def stop(self) -> None:
        """Stop accepting and remove socket files now; let clients finish within the grace.

        ``serve`` returns once the last client is gone or the grace is over.
        Calling it again does nothing; to stop at once, cancel ``serve``'s nursery.
        """
        self._accepting.cancel()


async def serve(
    config: ServerConfig, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on every address of ``config`` and serve each client in its own task.

    Use it as ``server = await nursery.start(serve, config)``: ``start`` returns
    once every listener is bound and accepting.

    Args:
        config: What to listen on and how to serve.
        task_status: Given by ``nursery.start``; receives the ``Server``.

    Returns:
        After ``Server.stop()``, once every client has finished or been cancelled.

    Raises:
        ListenError: an address could not be bound; nothing is left open.

    Error handling:
        Cancellation from outside stops everything at once; every exit path
        closes the listeners and removes the socket files that are still ours.
    """
    _warn_if_fds_are_short(config.max_clients)
    listeners = await open_listeners(config)
    try:
        server = Server(
            tuple(listener.address for listener in listeners),
            trio.CapacityLimiter(config.max_clients),
        )
        async with trio.open_nursery() as clients:
            with server._accepting:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(_accept_loop, listener, clients, server, config)
                    task_status.started(server)
            for listener in listeners:
                listener.close()
            active = server.active_clients
            _log.info(
                "stopped accepting; %d active clients have %ss to finish", active, config.grace
            )
            if active:
                clients.cancel_scope.deadline = trio.current_time() + config.grace
            else:
                clients.cancel_scope.cancel()
        if clients.cancel_scope.cancelled_caught and active:
            _log.info("grace period over; cancelled the clients still active")
    finally:
        for listener in listeners:
            listener.close()


def _warn_if_fds_are_short(max_clients: int) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_clients + _RESERVED_FDS > soft:
        _log.warning(
            "--max-clients %d is more than the open-file limit (%d) allows; beyond about"
            " %d clients, new connections wait until others leave (raise it with ulimit -n)",
            max_clients,
            soft,
            soft - _RESERVED_FDS,
        )


class _AcceptErrorLog:
    """Log failing accepts at most once per interval, with how many there were."""

    def __init__(self) -> None:
        self._next = -math.inf
        self._count = 0

    def failed(self, exc: OSError, address: Address) -> None:
        self._count += 1
        now = trio.current_time()
        if now >= self._next:
            _log.warning(
                "accept on %s failed %d times: %s; retrying", address, self._count, exc.strerror
            )
            self._next = now + ACCEPT_ERROR_LOG_INTERVAL
            self._count = 0


async def _accept_loop(
    listener: Listener, clients: trio.Nursery, server: Server, config: ServerConfig
) -> None:
    """Accept clients on one listener for as long as the server accepts."""
    sock, limiter, errors = listener.socket, server._limiter, _AcceptErrorLog()
    while True:
        # Wait for a pending connection *before* taking a client slot: a slot
        # held by a loop whose listener is quiet would starve the others.
        await trio.lowlevel.wait_readable(sock)
        slot = object()
        # --max-clients is backpressure: while no slot is free, connections
        # stay in the kernel's listen queue; none is refused.
        await limiter.acquire_on_behalf_of(slot)
        try:
            conn, peer = sock.accept()
        except BlockingIOError:
            limiter.release_on_behalf_of(slot)
            continue
        except OSError as exc:
            limiter.release_on_behalf_of(slot)
            if exc.errno in _OUT_OF_RESOURCES:
                errors.failed(exc, listener.address)
                await trio.sleep(ACCEPT_BACKOFF)
                continue
            if exc.errno in _CONNECTION_GONE:
                continue
            raise
        server.accepted += 1
        clients.start_soon(
            _serve_client, conn, peer, slot, server.accepted, listener.address, server, config
        )


async def _serve_client(
    conn: socket.socket,
    peer: object,
    slot: object,
    number: int,
    address: Address,
    server: Server,
    config: ServerConfig,
) -> None:
    """Run one client to its end, whatever that end is; never raise."""
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
    tally = _Tally(trio.current_time())
    reason = "cancelled at shutdown"
    try:
        if config.once:
            reason = await _reply_once(stream, config, tally)
        else:
            reason = await _reply_until_eof(stream, config, tally)
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else "broken"
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
        server._limiter.release_on_behalf_of(slot)
        stream.socket.close()
        if _clients_log.isEnabledFor(logging.INFO):
            _log_departure(number, address, peer, tally, reason)


@attrs.define
class _Tally:
    started: float
    received: int = 0
    sent: int = 0


def _log_departure(number: int, address: Address, peer: object, tally: _Tally, reason: str) -> None:
    peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "local"
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
        },
    )


async def _reply_until_eof(stream: trio.SocketStream, config: ServerConfig, tally: _Tally) -> str:
    """The hot path: reply to every chunk until the client's EOF.

    One read, one translate, one send per chunk.  The idle watchdog is one
    cancel scope whose deadline moves after each reply, rather than a new
    scope per read.  A client that stops reading blocks ``send_all``, which
    stops the reads: at most one chunk per client is ever buffered here.
    """
    receive_some, send_all, idle, delay = (
        stream.receive_some,
        stream.send_all,
        config.idle_timeout,
        config.delay,
    )
    with trio.CancelScope(deadline=trio.current_time() + idle) as watchdog:
        while data := await receive_some(RECEIVE_SIZE):
            tally.received += len(data)
            if delay:  # simulated work is the server's time, not the client's idleness
                watchdog.deadline = math.inf
                await trio.sleep(delay)
                watchdog.deadline = trio.current_time() + idle
            await send_all(increment(data))
            tally.sent += len(data)
            watchdog.deadline = trio.current_time() + idle
        return "eof"
    return "idle timeout"


async def _reply_once(stream: trio.SocketStream, config: ServerConfig, tally: _Tally) -> str:
    """The book's server: read one byte, write its successor, close."""
    data: bytes | None = None
    with trio.move_on_after(config.idle_timeout):
        data = await stream.receive_some(ONCE_SIZE)
    if not data:
        return "eof before a byte" if data is not None else "idle timeout"
    tally.received = 1
    if config.delay:  # simulated work is not the client's idleness
        await trio.sleep(config.delay)
    with trio.move_on_after(config.idle_timeout):
        await stream.send_all(increment(data))
        tally.sent = 1
    if not tally.sent:
        return "idle timeout"
    await _close_gently(stream)
    return "replied once"


async def _close_gently(stream: trio.SocketStream) -> None:
    """Send EOF, then discard what the client still sends, for a little while.

    Closing a socket with unread input makes the kernel reset the connection,
    and a reset can destroy the reply before the client reads it: ``echo A |
    nc`` sends two bytes and would never see its ``B``.
    """
    with trio.move_on_after(LINGER_TIME):
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
