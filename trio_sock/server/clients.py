"""How clients come in and go out: slots, counters, departure records.

Both ways of serving a client (``fast`` for plain sockets, ``stream``
for TLS, ``--once`` and ``--delay``) begin with ``Door.arrived`` and end with
``Door.left``, so every client is counted, timed, logged and closed the same
way whichever path served it.  The ``reason`` each path gives ``left`` is the
one in the client's departure record: ``eof``, ``idle timeout``, a reset,
``cancelled at shutdown``.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Final, TypeAlias

import attrs
import trio

from trio_sock.config.addresses import TcpAddress
from trio_sock.protocol import Increment
from trio_sock.server import departures
from trio_sock.server.goodbye import LINGER_TIME
from trio_sock.server.peers import PeerCredentials
from trio_sock.server.stats import Counters, Tally

if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Awaitable, Callable, Iterator

    from trio_sock.config.addresses import Address
    from trio_sock.config.server import ServerConfig
    from trio_sock.server.handlers import AsyncHandler, SansIOProtocol
    from trio_sock.trace import Tracer

_log = logging.getLogger("trio_sock.server")

#: A client's task, one per way of serving: its socket, its peer as ``accept`` gave it
#: (or its credentials), its number since the start, and the door it came through.
ClientTask: TypeAlias = "Callable[[socket.socket, object, int, Door], Awaitable[None]]"

EOF: Final = "eof"
#: The protocol said it was done (its ``done`` attribute), and its last reply was sent.
DONE: Final = "done"
IDLE_TIMEOUT: Final = "idle timeout"
SHUTDOWN: Final = "cancelled at shutdown"


class ClientSlots:
    """``--max-clients``: how many clients are being served, and room for more.

    A count rather than a ``trio.CapacityLimiter``: the only ones ever waiting
    for room are the accept loops, one per listener, and a client needs no
    token of its own (a limiter's borrower set costs each client memory).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.taken = 0
        self._room = trio.lowlevel.ParkingLot()

    async def wait_for_room(self) -> None:
        """Return once fewer than ``total`` slots are taken."""
        while self.taken >= self.total:
            await self._room.park()

    def release(self) -> None:
        """Give back the slot of a client that left."""
        self.taken -= 1
        if self._room:
            # Wake every waiting loop, not one: the one woken may find its queue
            # empty and wait on its listener again, and the room must not be
            # lost for a loop whose queue is not.  Losers look and park again.
            self._room.unpark_all()


@attrs.frozen
class Context:
    """What every client task of one server shares."""

    config: ServerConfig
    slots: ClientSlots
    """One is taken before each accept() and given back when that client leaves:
    capacity, not a count of clients (each door's ``counters.connected`` is the count)."""
    clock: Callable[[], float]
    """Trio's clock, looked up once: the fast path reads it after every wait."""
    tls: ssl.SSLContext | None = None
    """Set when TCP clients speak TLS."""
    protocol: Callable[[], SansIOProtocol] = Increment
    """Makes each client's sans-I/O protocol (``handlers``), unless ``handler`` is set."""
    handler: AsyncHandler | None = None
    """The async handler each client's task runs, if the server has one."""
    linger: float = LINGER_TIME
    """After its last reply, how long the server discards a client's input before closing
    (``goodbye.linger``: ``LINGER_TIME``, or the idle timeout if that is shorter)."""
    departure_log: departures.DepartureLog = attrs.Factory(departures.DepartureLog)
    """Which departures get a record of their own."""
    tracer: Tracer | None = None
    """``--trace``: each client's socket calls are written as they are made."""
    numbers: Iterator[int] = attrs.Factory(lambda: itertools.count(1))
    """Each connection's number since the start, whichever listener took it."""


@attrs.frozen
class Door:
    """One listener, as its clients' tasks see it."""

    address: Address
    context: Context
    serve: ClientTask
    """The task that serves each of its clients: ``fast.serve_plain_client`` when
    nothing (TLS, ``--once``, ``--delay``) stands in its way."""
    counters: Counters = attrs.Factory(Counters)
    """This listener's figures."""

    @staticmethod
    def uses_fast_path(address: Address, context: Context) -> bool:
        """True if clients of ``address`` need no more than a plain socket."""
        config = context.config
        tls = context.tls is not None and isinstance(address, TcpAddress)
        return not (tls or config.once or config.delay)

    def arrived(self, conn: socket.socket) -> Tally:
        """Count a client in; from now on ``reaper.reap_idle`` times its idleness."""
        now = self.context.clock()
        tally = Tally(now, alive=now, watched=conn)
        self.counters.arrived(tally)
        return tally

    def failed(self, number: int, exc: Exception) -> str:
        """Report a bug in serving a client (the handler's, or ours; not the client's
        doing), with its traceback, which whoever fixes it needs; the reason to log."""
        self.counters.failed += 1
        _log.error("client %d on %s failed: %r", number, self.address, exc, exc_info=exc)
        return f"error: {type(exc).__name__}"

    def left(
        self, conn: socket.socket, peer: object, number: int, tally: Tally, reason: str
    ) -> None:
        """Close a client's socket, give back its slot, count and log its departure.

        Args:
            conn: The client's socket (TLS said its goodbye already, if it could).
            peer: As the accept loop gave it: ``(host, port)``, a Unix peer's
                ``PeerCredentials`` if the peer policy needed them, else ``None``.
            number: The client's number since the server started.
            tally: Its figures, from ``arrived``.
            reason: Why it ended.
        """
        context = self.context
        context.slots.release()
        logged = context.departure_log.will_log(reason)
        if logged and peer is None:
            peer = _credentials(conn)
        conn.close()
        self.counters.left(tally, idle=reason == IDLE_TIMEOUT)
        if logged:
            departures.log(number, self.address, peer, tally, reason)


def _credentials(conn: socket.socket) -> PeerCredentials | None:
    """Who connected, asked only now that the departure record needs it."""
    try:
        return PeerCredentials.of(conn)
    except OSError:  # cannot happen on a connected Unix socket; a log line is not worth a crash
        return None
