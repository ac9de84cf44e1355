"""The idle timeout: one task that drops the clients whose last sign of life is too old.

Every client's task notes when it last saw its client do something
(``Tally.alive``: the end of a wait on the fast path, a byte moved on a
``WatchedStream``), so the timeout costs each client a float store, not a
cancel scope whose deadline moves after each reply (a trip through Trio's
deadline heap).  This task wakes when the oldest client falls due, and wakes
that client's pending wait with ``notify_closing``: the wait raises
``trio.ClosedResourceError``, and the client's task ends with "idle timeout".

"Idle" means the client neither sent nor read, so before dropping a client
the reaper asks the kernel whether it did something the server has not seen
yet (``_shows_life``).  That matters after the *server* stood still (SIGSTOP,
a long GC pause, a suspended VM): its clients' bytes arrived meanwhile, and
when it resumes, the reaper may run before the tasks those bytes woke.
"""

from __future__ import annotations

import fcntl
import itertools
import math
import select
import socket
import sys
import termios
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from trio_sock.listen import unix_diag

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from trio_sock.server.stats import Tally

#: The reaper passes over the clients at most once per this many seconds, or
#: per tenth of the idle timeout if that is shorter: a client is dropped at
#: most that late, and 15,000 clients cost a few milliseconds per pass.
REAP_STEP: Final = 1.0
#: ...but never more often than this: an absurd ``--idle-timeout 1e-300`` must
#: not make the reaper spin a CPU, with or without clients.
REAP_STEP_MIN: Final = 0.01

# Linux's SIOCOUTQ is the terminal's TIOCOUTQ number, which Python names.
_SIOCOUTQ: Final = termios.TIOCOUTQ
# What poll() reports for a client that sent bytes, its EOF, or a reset that
# the server has not read yet.
_INPUT: Final = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def reap_step(idle: float) -> float:
    """How long the reaper sleeps at least between passes, for an ``idle`` timeout."""
    return max(REAP_STEP_MIN, min(REAP_STEP, idle / 10))


async def reap_idle(groups: Iterable[Collection[Tally]], idle: float) -> NoReturn:
    """Drop every client whose last sign of life is ``idle`` seconds old.

    ``groups`` are the clients of each listener, as they come and go.

    It wakes when the oldest client falls due, but at most once per
    ``reap_step(idle)``, so that thousands of clients falling due one after
    another cost one pass, not thousands.  A client is never dropped early,
    and at most one step late.
    """
    notify_closing = trio.lowlevel.notify_closing
    if idle == math.inf:
        await trio.sleep_forever()
    step = reap_step(idle)
    while True:
        now = trio.current_time()
        # A client that arrives while this sleeps falls due after now + idle.
        wake = now + idle
        for tally in itertools.chain.from_iterable(groups):
            due = tally.alive + idle
            if due > now:
                if due < wake:
                    wake = due
            elif _shows_life(tally):
                tally.alive = now
            elif tally.watched is not None:
                # Again at every pass until it leaves: a task that was about to
                # wait, not waiting, when this pass came would miss a single one.
                tally.idle = True
                notify_closing(tally.watched)
        await trio.sleep_until(max(wake, now + step))


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes sent to the peer that it has not taken yet; -1 if unknown.

    The kernel wakes a task waiting to send only once a good part of the send
    buffer is free (a quarter on a Unix socket, a third on TCP): a client that
    reads slowly takes bytes long before that.  Only this count shows it: on
    TCP ``SIOCOUTQ`` (bytes not yet acknowledged, and the client's kernel
    acknowledges as its reader makes room); on a Unix socket the peer's receive
    queue, asked of ``sock_diag``, since ``SIOCOUTQ`` there falls only when a
    whole 32 KiB buffer was read.  Asked only before a wait for room to send:
    the client is already the slower side.
    """
    try:
        if sock.family == socket.AF_UNIX:
            return unix_diag.unread_by_peer(sock)
        raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0" * 4)
    except (OSError, ValueError, unix_diag.UnixDiagError):
        return -1
    return int.from_bytes(raw, sys.byteorder, signed=True)


def _shows_life(tally: Tally) -> bool:
    """True if the client did something its task has not seen yet.

    While its task waits to read: bytes (or its EOF, or a reset) are there.
    While its task waits for room to send: the client took some of the bytes
    that were waiting (what it sent meanwhile does not count: a client that
    writes and never reads fills the buffers and then does neither).  A client
    whose socket is already closed is leaving by itself.
    """
    sock = tally.watched
    if sock is None or sock.fileno() == -1:
        return True
    if tally.unsent is not None:
        unsent = unsent_bytes(sock)
        if unsent >= 0 and tally.unsent >= 0:
            progress = unsent < tally.unsent
            tally.unsent = unsent
            return progress
        return _ready(sock, select.POLLOUT)  # the count is unknown: room is the best sign
    return _ready(sock, _INPUT)


def _ready(sock: socket.socket, events: int) -> bool:
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(0))
