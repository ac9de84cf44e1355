"""The hot path: a plain TCP or Unix client's replies, on its raw socket.

This is the one loop every byte of every plain client goes through, so it
does only what the protocol needs, and each choice below is there for speed:

- The socket is non-blocking and every call is *tried first*: ``recv`` and
  ``send`` usually succeed at once, and Trio's scheduler is entered only on
  ``EAGAIN`` (``wait_readable``/``wait_writable``).  ``trio.SocketStream``
  checkpoints before every call instead, a trip through the run loop each time.
- A short read means the socket was drained, and the client is most likely
  waiting for its reply: reading again at once would only fail with ``EAGAIN``.
  Instead the loop lets every other task have its turn (a checkpoint) and
  reads then: on a busy server the client has answered by that time, and a
  checkpoint costs less than waiting on epoll (Trio re-arms the descriptor with
  a system call for every wait).  Where that look keeps finding nothing, the
  loop waits on epoll straight away, and looks first only now and then.
- A client whose reads and sends never block would never yield: every
  ``FAIRNESS_BATCH`` chunks without a wait, the loop checkpoints, so a
  streaming client cannot starve a ping-pong one (nor a shutdown).
- The idle timeout costs each client one float store per wait: the loop
  notes when each wait ends (the client's last sign of life), and one task,
  ``reaper.reap_idle``, drops the clients whose last sign is too old.  A cancel scope
  per client would cost memory, and moving its deadline after each reply a
  trip through Trio's deadline heap.
- At most one chunk is in flight per client: a client that stops reading
  blocks the send, which stops the reads, so the kernel's buffers (not this
  process) hold what it keeps sending, and its reply waits in ``pending``.

``wait_readable``/``wait_writable`` lose nothing when cancelled, so
cancellation (shutdown) can strike at any wait with nothing lost or repeated.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import trio

from trio_sock.server.clients import DONE, EOF, IDLE_TIMEOUT, SHUTDOWN
from trio_sock.server.goodbye import close_gently
from trio_sock.server.handlers import eof_reply
from trio_sock.server.reaper import unsent_bytes

if TYPE_CHECKING:
    import socket

    from trio_sock.server.clients import Door

#: Trio's own ``receive_some`` default: one read drains most socket buffers, and
#: a client that never reads its replies pins at most this much (plus the reply).
RECEIVE_SIZE: Final = 65536
#: Chunks handled without a wait before the loop yields to other tasks:
#: 16 x 64 KiB is 1 MiB, well under a millisecond of work, so a streaming
#: client delays the others by less than that and still loses no throughput.
FAIRNESS_BATCH: Final = 16
#: While looking again after a checkpoint keeps failing (the client is slow to
#: answer, or the server has time to spare), the loop waits on epoll at once, and
#: tries the look again only once in this many waits: a miss costs a checkpoint
#: and a failed recv, a hit saves registering a wait.
EAGER_PROBE: Final = 8


async def serve_plain_client(conn: socket.socket, peer: object, number: int, door: Door) -> None:
    """Serve one plain client from accept to close with the server's sans-I/O protocol,
    until the client's EOF or the protocol's ``done``; never raise.

    Args:
        conn: The accepted socket, non-blocking; closed when this returns.
        peer: The peer as ``Door.left`` logs it.
        number: The client's number since the server started.
        door: The listener it came through.

    Error handling:
        Every end (EOF, a reset, idleness, a bug, cancellation at any wait)
        goes through ``Door.left`` with its reason; nothing escapes but
        ``Cancelled``.  Cancelled waits lose nothing: the tally is exact.
    """
    tally = door.arrived(conn)
    clock = door.context.clock
    protocol = door.context.protocol()
    # No local names for Trio's functions here: each local costs every idle client 8 bytes.
    pending: memoryview | None = None  # the part of a reply the socket has not taken yet
    drained = False  # the last read was short: the next one would most likely fail
    misses = 0  # looks after a checkpoint that found nothing, and waits since (see below)
    busy = 0  # chunks since the last wait
    closing = False  # the last reply is being sent: then close
    reason = SHUTDOWN
    try:
        while True:
            while pending:  # the client reads slower than it writes: wait for room
                tally.unsent = unsent_bytes(conn)  # its taking bytes is a sign of life
                await trio.lowlevel.wait_writable(conn)
                tally.alive, tally.unsent = clock(), None
                sent = _send(conn, pending)
                tally.sent += sent
                pending = pending[sent:] or None  # an empty view still holds the whole chunk
            if closing:
                if reason == DONE:  # the server ends it: unread input must not reset the reply
                    tally.alive = math.inf  # the server's time, not the client's idleness
                    await close_gently(conn, door.context.linger)
                return
            if not drained:
                if busy == FAIRNESS_BATCH:
                    tally.alive, busy = clock(), 0
                    await trio.lowlevel.checkpoint()
                chunk = _receive(conn)
            else:
                tally.alive, busy = clock(), 0
                chunk = None
                if misses % EAGER_PROBE == 0:  # look after the other tasks' turn
                    await trio.lowlevel.checkpoint()
                    chunk = _receive(conn)
                if chunk is None:
                    misses += 1
                    await trio.lowlevel.wait_readable(conn)
                    tally.alive = clock()
                    chunk = _receive(conn)
                else:
                    misses = 0
            if chunk is None:
                drained = True
                continue
            if not chunk:
                reason, closing = EOF, True
                if last := eof_reply(protocol):
                    pending = memoryview(last)
                continue
            size = len(chunk)
            drained = size < RECEIVE_SIZE
            busy += 1
            tally.received += size
            chunk = protocol.data_received(chunk)  # the reply replaces the request
            if chunk:
                sent = _send(conn, chunk)
                tally.sent += sent
                if sent < len(chunk):
                    pending = memoryview(chunk)[sent:]
            del chunk  # a quiet client must not keep its last 64 KiB alive
            if protocol.done:
                reason, closing = DONE, True
    except trio.ClosedResourceError:  # only reap_idle closes a socket under a wait
        reason = IDLE_TIMEOUT
    except OSError as exc:  # a reset, a broken pipe
        reason = exc.strerror or "broken"
    except Exception as exc:
        reason = door.failed(number, exc)
    finally:
        door.left(conn, peer, number, tally, reason)


# EAGAIN is caught in these two small functions rather than in the loop: an
# exception raised through a frame makes Python keep a frame object for it for
# as long as the frame lives, which for an idle client is a few hundred bytes each.


def _receive(conn: socket.socket) -> bytes | None:
    """What the socket holds (``b""`` at EOF), or None if nothing yet."""
    try:
        return conn.recv(RECEIVE_SIZE)
    except BlockingIOError:
        return None


def _send(conn: socket.socket, data: bytes | memoryview) -> int:
    """How much of ``data`` the socket took (0 if none, for now)."""
    try:
        return conn.send(data)
    except BlockingIOError:
        return 0
