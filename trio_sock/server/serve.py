"""Serve the increment protocol: supervision, limits, peer policy and shutdown.

The shape is hypercorn's Trio worker: client tasks live in an outer nursery,
accept loops in an inner one, the idle reaper in one around both.  Stopping
cancels the inner nursery (no new clients), closes the listeners, then gives
the outer one a deadline: the grace period.  Each client task (``stream``, ``fast``)
handles its own failures, so a reset, garbage or a timeout ends that client
and nothing else.
"""

from __future__ import annotations

import errno
import logging
import math
import resource
import socket
from typing import TYPE_CHECKING, Final, Literal

import attrs
import trio

from trio_sock.listen.open_all import open_listeners
from trio_sock.protocol import Increment
from trio_sock.server.clients import ClientSlots, ClientTask, Context, Door
from trio_sock.server.fast import serve_plain_client
from trio_sock.server.handled import serve_handled_client
from trio_sock.server.handlers import Handler, sort_handler
from trio_sock.server.peers import AccessPolicy, PeerCredentials, policy_for
from trio_sock.server.reaper import reap_idle
from trio_sock.server.stats import Counters, ServerStats
from trio_sock.server.stream import serve_stream_client
from trio_sock.server.words import counted
from trio_sock.tls import server_context

if TYPE_CHECKING:
    from trio_sock.config.addresses import Address
    from trio_sock.config.server import ServerConfig
    from trio_sock.listen.listener import Listener

_log = logging.getLogger("trio_sock.server")

#: Out of descriptors, accept() fails at once until a client leaves; pausing
#: this long (as ``trio.serve_listeners`` does) avoids a hot loop meanwhile.
ACCEPT_BACKOFF: Final = 0.1
#: Connections accepted in a row before the accept loop lets other tasks run:
#: enough that a burst costs few trips through Trio's run loop, few enough that
#: a flood of new clients does not starve those already connected, and that
#: workers sharing one listening socket each get a share of a burst.
ACCEPT_BATCH: Final = 16
#: At most one warning per this many seconds about failing accepts or refused
#: peers, with a count: a flood of them must not become a flood of logs.
WARNING_INTERVAL: Final = 1.0
#: Descriptors the server itself may hold besides clients: stdio, listeners,
#: lock files, epoll, Trio's wakeup pair, a resolver thread's socket, the probe.
_RESERVED_FDS: Final = 16

# accept() failing with these means the process or system is out of resources:
# wait for clients to leave and try again.
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# These concern one connection that died in the queue (a reset, a firewall, a
# network gone): skip it, go on at once.  The list is Trio's own
# (``_ignorable_accept_errno_names``), since Linux passes them all through accept().
_CONNECTION_GONE: Final = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
        "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
    )
    if hasattr(errno, name)
)  # fmt: skip


@attrs.define(eq=False)
class Server:
    """A running server, as ``nursery.start(serve, config)`` returns it.

    Cancelling the nursery that runs ``serve`` stops it at once (clients are
    cancelled, socket files removed); ``stop()`` stops it gracefully.
    """

    addresses: tuple[Address, ...]
    """Every bound address, in config order; TCP port 0 replaced by the real one."""
    _context: Context
    _accepting: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    @property
    def accepted(self) -> int:
        """Connections accepted since the start."""
        return self._context.counters.accepted

    @property
    def active_clients(self) -> int:
        """Clients being served right now: ``stats().active``, without the sums."""
        return len(self._context.counters.connected)

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._accepting.cancel_called

    def stats(self) -> ServerStats:
        """The counters since the start: accepted, active, refused, bytes..."""
        return self._context.counters.snapshot()

    def stop(self) -> None:
        """Stop accepting and remove socket files now; let clients finish within the grace.

        ``serve`` returns once the last client is gone or the grace is over.
        Calling it again does nothing; to stop at once, cancel ``serve``'s nursery.
        """
        self._accepting.cancel()


async def serve(
    config: ServerConfig,
    handler: Handler | None = None,
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on every address of ``config`` and serve each client in its own task.

    Use it as ``server = await nursery.start(serve, config, handler)``: ``start``
    returns once every listener is bound and accepting.

    Args:
        config: What to listen on and how to serve.
        handler: What each client gets: a sans-I/O protocol class (see
            ``trio_sock.server.handlers``); ``None`` for the increment protocol.
        task_status: Given by ``nursery.start``; receives the ``Server``.

    Returns:
        After ``Server.stop()``, once every client has finished or been cancelled.

    Raises:
        ListenError: an address could not be bound; nothing is left open.
        TypeError: ``handler`` is neither kind of handler.
        ValueError: ``config`` asks for ``once`` or ``delay``, which belong to the
            increment protocol, with another handler; or for more than one worker,
            which ``serve`` (one process) would not honour.

    Error handling:
        Cancellation from outside stops everything at once; every exit path
        closes the listeners and removes the socket files that are still ours.
        An exception from a handler ends its client only: logged with its
        traceback, counted (``stats().failed``), and the server goes on.
    """
    served = sort_handler(handler)
    if handler is not None and (config.once or config.delay):
        raise ValueError("once and delay belong to the increment protocol, not to a handler")
    if config.workers != 1:
        raise ValueError(
            f"serve() is one process, so workers={config.workers} would be ignored;"
            " run trio_sock.workers.supervisor.supervise for several, or set workers=1"
        )
    _warn_if_fds_are_short(config.max_clients)
    tls = None
    if config.tls_cert is not None and config.tls_key is not None:
        tls = server_context(config.tls_cert, config.tls_key)  # a bad file fails here, early
    listeners = await open_listeners(config)
    try:
        clock = trio.lowlevel.current_clock().current_time
        slots = ClientSlots(config.max_clients)
        context = Context(
            config,
            slots,
            Counters(),
            clock,
            tls,
            protocol=served.protocol or Increment,
            handler=served.handler,
        )
        server = Server(tuple(listener.address for listener in listeners), context)
        async with trio.open_nursery() as housekeeping:
            housekeeping.start_soon(reap_idle, context.counters.connected, config.idle_timeout)
            housekeeping.start_soon(context.departure_log.summarize)
            async with trio.open_nursery() as clients:
                with server._accepting:
                    async with trio.open_nursery() as accepting:
                        for listener in listeners:
                            accepting.start_soon(_accept_loop, listener, clients, context)
                        task_status.started(server)
                for listener in listeners:
                    listener.close()
                active = server.active_clients
                _log.info(
                    "stopped accepting; %s %ss to finish",
                    counted(active, "client has", "clients have"),
                    config.grace,
                )
                if active:
                    clients.cancel_scope.deadline = trio.current_time() + config.grace
                else:
                    clients.cancel_scope.cancel()
            housekeeping.cancel_scope.cancel()
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


class _Throttle:
    """Says when a repeated warning may be logged again, and how many it stands for."""

    def __init__(self) -> None:
        self._next = -math.inf
        self._count = 0

    def due(self) -> int:
        """Count one event; return how many to report now, or 0 to stay quiet."""
        self._count += 1
        now = trio.current_time()
        if now < self._next:
            return 0
        self._next = now + WARNING_INTERVAL
        return self.unreported()

    @property
    def pending(self) -> int:
        """Events counted since the last report."""
        return self._count

    def unreported(self) -> int:
        """How many events came since the last report; counts them as reported."""
        count, self._count = self._count, 0
        return count


def _path_for(address: Address, context: Context) -> ClientTask:
    """Which loop serves the clients of ``address``: the user's async handler, the fast
    path for a sans-I/O protocol on a plain socket, else the stream path."""
    if context.handler is not None:
        return serve_handled_client
    if Door.uses_fast_path(address, context):
        return serve_plain_client
    return serve_stream_client


async def _accept_loop(listener: Listener, clients: trio.Nursery, context: Context) -> None:
    """Accept clients on one listener for as long as the server accepts.

    Once the listener is readable it accepts until the queue is empty
    (``EAGAIN``), ``ACCEPT_BATCH`` at a time: a burst of connections costs a
    few trips through Trio's run loop, not one each.
    """
    sock, slots, counters = listener.socket, context.slots, context.counters
    door = Door(listener.address, context, _path_for(listener.address, context))
    # Every client task gets the same name: Trio would otherwise format one for each.
    name = f"{door.serve.__module__}.{door.serve.__qualname__}"
    admit = _Admission(listener.address, policy_for(listener.address, context.config), counters)
    is_unix = sock.family == socket.AF_UNIX
    if not is_unix:
        # Replies are written whole, at once: Nagle's algorithm could only delay
        # them.  Linux copies TCP_NODELAY from the listener to each accepted
        # socket, which saves a system call per client.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    failures = _Throttle()
    accept, start_soon, serve = sock.accept, clients.start_soon, door.serve
    while True:
        await trio.lowlevel.wait_readable(sock)
        # At most ACCEPT_BATCH before waiting again: while more are queued the
        # wait returns at once, but only after the other tasks had their turn.
        for _ in range(ACCEPT_BATCH):
            # --max-clients is backpressure: while no slot is free, connections
            # stay in the kernel's listen queue; none is refused.
            if slots.taken >= slots.total:
                await slots.wait_for_room()
            try:
                conn, peer = accept()
            except BlockingIOError:  # the queue is empty
                break
            except OSError as exc:
                await _accept_failed(exc, listener, counters, failures)
                break
            counters.accepted += 1
            if failures.pending:
                _log.warning(
                    "accept on %s works again, after %s",
                    listener.address,
                    counted(failures.unreported(), "more failure"),
                )
            conn.setblocking(False)
            if is_unix:
                peer = admit.credentials(conn)
                if peer is False:
                    conn.close()
                    continue
            # Only accepted clients hold a slot: a quiet listener's loop holds none.
            slots.taken += 1  # given back by Door.left when the client leaves
            start_soon(serve, conn, peer, counters.accepted, door, name=name)


class _Admission:
    """Applies a Unix listener's peer policy, and reports refusals without a flood."""

    def __init__(self, address: Address, policy: AccessPolicy | None, counters: Counters) -> None:
        self._address = address
        self._policy = policy
        self._counters = counters
        self._refusals = _Throttle()

    def credentials(self, conn: socket.socket) -> PeerCredentials | Literal[False] | None:
        """The peer's credentials if the policy needed them, ``None`` if there is no
        policy (the departure record asks later, if it is logged), ``False`` if refused."""
        if self._policy is None:
            return None
        peer = PeerCredentials.of(conn)
        refusals = self._refusals
        if not self._policy.allows(conn, peer):
            self._counters.refused += 1
            if count := refusals.due():
                _log.warning(
                    "refused peers on %s not allowed by the peer policy: %d (last: %s)",
                    self._address,
                    count,
                    peer,
                )
            return False
        if refusals.pending:
            _log.warning(
                "refused peers on %s not allowed by the peer policy: %d more",
                self._address,
                refusals.unreported(),
            )
        return peer


async def _accept_failed(
    exc: OSError, listener: Listener, counters: Counters, failures: _Throttle
) -> None:
    """Pause on a lack of resources, skip a connection that died in the queue, else raise."""
    if exc.errno in _CONNECTION_GONE:
        return
    if exc.errno not in _OUT_OF_RESOURCES:
        raise exc
    counters.accept_errors += 1
    if count := failures.due():
        _log.warning(
            "accept on %s failed %s: %s; retrying",
            listener.address,
            counted(count, "time"),
            exc.strerror,
        )
    await trio.sleep(ACCEPT_BACKOFF)
