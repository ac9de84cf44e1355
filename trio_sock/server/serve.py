"""``serve()`` and ``Server``: listeners opened, accept loops started, and the shutdown.

The shape is hypercorn's Trio worker: client tasks live in an outer nursery,
accept loops in an inner one, the idle reaper in one around both.  Stopping
cancels the inner nursery (no new clients), closes the listeners, then gives
the outer one a deadline: the grace period.  Each client task (``stream``, ``fast``)
handles its own failures, so a reset, garbage or a timeout ends that client
and nothing else.
"""

from __future__ import annotations

import logging
import resource
from typing import TYPE_CHECKING, Final

import attrs
import trio

from trio_sock.listen.open_all import open_listeners
from trio_sock.protocol import Increment
from trio_sock.server.accept import accept_loop
from trio_sock.server.clients import ClientSlots, Context
from trio_sock.server.goodbye import linger
from trio_sock.server.handlers import Handler, sort_handler
from trio_sock.server.reaper import reap_idle
from trio_sock.server.stats import Counters, ServerStats, add_up
from trio_sock.server.words import counted
from trio_sock.tls import server_context
from trio_sock.trace import Tracer

if TYPE_CHECKING:
    from trio_sock.config.addresses import Address
    from trio_sock.config.server import ServerConfig

_log = logging.getLogger("trio_sock.server")

#: Descriptors the server itself may hold besides clients: stdio, listeners,
#: lock files, epoll, Trio's wakeup pair, a resolver thread's socket, the probe.
_RESERVED_FDS: Final = 16


@attrs.define(eq=False)
class Server:
    """A running server, as ``nursery.start(serve, config)`` returns it.

    Cancelling the nursery that runs ``serve`` stops it at once (clients are
    cancelled, socket files removed); ``stop()`` stops it gracefully.
    """

    addresses: tuple[Address, ...]
    """Every bound address, in config order; TCP port 0 replaced by the real one."""
    _context: Context
    _counters: tuple[Counters, ...]
    """Each listener's, in the order of ``addresses``."""
    _accepting: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    @property
    def accepted(self) -> int:
        """Connections accepted since the start."""
        return sum(counters.accepted for counters in self._counters)

    @property
    def active_clients(self) -> int:
        """Clients being served right now: ``stats().active``, without the sums."""
        return sum(len(counters.connected) for counters in self._counters)

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._accepting.cancel_called

    def stats(self) -> ServerStats:
        """The counters since the start: accepted, active, refused, bytes..."""
        return ServerStats.total(counters.snapshot() for counters in self._counters)

    def stats_by_listener(self) -> dict[Address, ServerStats]:
        """``stats()`` for each listener, in the order of ``addresses``; listeners that
        share an address (two ``--fd`` sockets bound to one) are added up under it."""
        pairs = zip(self.addresses, self._counters, strict=True)
        return add_up({address: counters.snapshot()} for address, counters in pairs)

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
            clock,
            tls,
            protocol=served.protocol or Increment,
            handler=served.handler,
            linger=linger(config),
            tracer=Tracer() if config.trace else None,
        )
        counters = tuple(Counters() for _ in listeners)
        server = Server(tuple(listener.address for listener in listeners), context, counters)
        async with trio.open_nursery() as housekeeping:
            connected = [mine.connected for mine in counters]
            housekeeping.start_soon(reap_idle, connected, config.idle_timeout)
            housekeeping.start_soon(context.departure_log.summarize)
            async with trio.open_nursery() as clients:
                with server._accepting:
                    async with trio.open_nursery() as accepting:
                        for listener, mine in zip(listeners, counters, strict=True):
                            accepting.start_soon(accept_loop, listener, clients, context, mine)
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
