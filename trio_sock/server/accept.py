"""The accept loop: one per listener, taking clients from the kernel's queue.

Each loop waits for its listener, then accepts in batches (``ACCEPT_BATCH``),
takes a client slot first (``--max-clients`` is backpressure: while none is
free, connections wait in the kernel's queue, never refused), applies the peer
policy, and starts the client's task on the path that serves it
(``_path_for``): the user's async handler, the fast path, or the stream path.
Running out of descriptors pauses it, with one warning a second.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
from functools import partial
from sys import intern
from typing import TYPE_CHECKING, Final, Literal

import trio

from trio_sock.listen.queue import queued
from trio_sock.server.behind_proxy import behind_proxy
from trio_sock.server.clients import ClientSlots, ClientTask, Context, Door
from trio_sock.server.fast import serve_plain_client
from trio_sock.server.handled import serve_handled_client
from trio_sock.server.peers import AccessPolicy, PeerCredentials, policy_for
from trio_sock.server.stream import serve_stream_client
from trio_sock.server.words import counted
from trio_sock.trace import traced_accept

if TYPE_CHECKING:
    from trio_sock.config.addresses import Address
    from trio_sock.listen.listener import Listener
    from trio_sock.server.stats import Counters
    from trio_sock.trace import Tracer

_log = logging.getLogger("trio_sock.server")

#: Out of descriptors, accept() fails at once until a client leaves; pausing
#: this long (as ``trio.serve_listeners`` does) avoids a hot loop meanwhile.
ACCEPT_BACKOFF: Final = 0.1


#: Connections accepted in a row before the accept loop lets other tasks run:
#: enough that a burst costs few trips through Trio's run loop, few enough that
#: a flood of new clients does not starve those already connected, and that
#: workers sharing one listening socket each get a share of a burst.
ACCEPT_BATCH: Final = 16


#: Under ``--trace``, how often the listen queue is looked at while every slot is taken.
QUEUE_LOOK_INTERVAL: Final = 0.1


#: The longest listen queue Linux keeps (a backlog is capped at 65535): the most
#: connections there can be to take from it at shutdown.
MAX_QUEUE: Final = 65535


#: At most one warning per this many seconds about failing accepts or refused
#: peers, with a count: a flood of them must not become a flood of logs.
WARNING_INTERVAL: Final = 1.0


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


def path_for(address: Address, context: Context) -> ClientTask:
    """Which loop serves the clients of ``address``: the user's async handler, the fast
    path for a sans-I/O protocol on a plain socket, else the stream path; each after
    the client's PROXY header, with ``--proxy-protocol``."""
    if context.handler is not None:
        serve = serve_handled_client
    elif Door.uses_fast_path(address, context):
        serve = serve_plain_client
    else:
        serve = serve_stream_client
    return behind_proxy(serve) if context.config.proxy_protocol else serve


async def accept_loop(
    listener: Listener, clients: trio.Nursery, context: Context, counters: Counters
) -> None:
    """Accept clients on one listener for as long as the server accepts, counting
    them in ``counters``.

    Once the listener is readable it accepts until the queue is empty
    (``EAGAIN``), ``ACCEPT_BATCH`` at a time: a burst of connections costs a
    few trips through Trio's run loop, not one each.
    """
    sock, slots, numbers = listener.socket, context.slots, context.numbers
    door = Door(listener.address, context, path_for(listener.address, context), counters)
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
    wait_for_room = slots.wait_for_room
    if context.tracer is not None:  # each client's socket then traces its own calls
        accept = traced_accept(sock, context.tracer)
        wait_for_room = partial(_wait_for_room_saying_so, slots, sock, context.tracer)

    def start(conn: socket.socket, address: tuple[str, ...] | str) -> None:
        """Admit one accepted connection (the peer policy) and start its task."""
        counters.accepted += 1
        number = next(numbers)
        conn.setblocking(False)
        peer: object
        if is_unix:
            peer = admit.credentials(conn)
            if peer is False:
                conn.close()
                return
        else:
            # A client holds its peer until it leaves: one string for the host
            # of many clients saves each idle one 58 bytes (of about 3,500).
            peer = (intern(address[0]), *address[1:])
        # Only accepted clients hold a slot: a quiet listener's loop holds none.
        slots.taken += 1  # given back by Door.left when the client leaves
        start_soon(serve, conn, peer, number, door, name=name)

    try:
        while True:
            await trio.lowlevel.wait_readable(sock)
            # At most ACCEPT_BATCH before waiting again: while more are queued the
            # wait returns at once, but only after the other tasks had their turn.
            for _ in range(ACCEPT_BATCH):
                # --max-clients is backpressure: while no slot is free, connections
                # stay in the kernel's listen queue; none is refused.
                if slots.taken >= slots.total:
                    await wait_for_room()
                try:
                    conn, peer = accept()
                except BlockingIOError:  # the queue is empty
                    break
                except OSError as exc:
                    await _accept_failed(exc, listener, counters, failures)
                    break
                start(conn, peer)
                if failures.pending:
                    _log.warning(
                        "accept on %s works again, after %s",
                        listener.address,
                        counted(failures.unreported(), "more failure"),
                    )
    except trio.Cancelled:
        # The server stops accepting.  What the kernel has already queued would be
        # reset when the listener closes, and a balancer cannot retry a connection
        # it saw accepted: take it now, to be served within the grace, as the others,
        # and close the listener at once, with no checkpoint between, so that nothing
        # can queue up in between (a balancer retries a refused connection).
        for _ in range(MAX_QUEUE):
            try:
                conn, peer = accept()
            except OSError:  # empty (EAGAIN), or nothing more to take
                break
            start(conn, peer)
        listener.close()
        raise


async def _wait_for_room_saying_so(slots: ClientSlots, sock: socket.socket, tracer: Tracer) -> None:
    """``slots.wait_for_room``, saying meanwhile (``--trace``) how many connections the
    kernel holds in the listen queue, each time that changes."""
    said = 0
    while slots.taken >= slots.total:
        try:
            waiting = queued(sock)
        except OSError:  # no sock_diag here: say nothing rather than guess
            waiting = said
        if waiting != said:
            tracer.note(
                f"{counted(waiting, 'connection')} waiting in the listen queue of"
                f" fd {sock.fileno()} (--max-clients {slots.total}: every slot taken)"
            )
            said = waiting
        with trio.move_on_after(QUEUE_LOOK_INTERVAL):
            await slots.wait_for_room()


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
