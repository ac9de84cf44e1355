"""The fast path: ``serve_plain_client``, ``reap_idle``, and the accept loop that feeds them.

``serve_plain_client`` runs here on the non-blocking end of a real socket pair
(a ``socketpair`` or a loopback TCP connection) inside Trio, behind a ``Door``
that notes how each client ended; or on a double whose ``recv``/``send`` follow
a script (EAGAIN, short sends, errors) over a real socket, whose descriptor
Trio's ``wait_readable``/``wait_writable`` need.

Synchronisation is ``trio.testing.wait_all_tasks_blocked``, never a sleep:
between local sockets the kernel moves the bytes within the system call, so once
every task is blocked nothing more happens by itself.  Anything about time (the
idle reaper) runs on ``autojump_clock``, where those waits end at once.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import random
import socket
from typing import TYPE_CHECKING, cast

import attrs
import pytest
import trio
import trio.testing

from tests.helpers import IO_TIMEOUT, address_of, open_stream, start_in
from tests.helpers import connect as connect_blocking
from trio_sock import ServerConfig, UnixAddress, increment
from trio_sock.server.accept import ACCEPT_BATCH
from trio_sock.server.clients import EOF, IDLE_TIMEOUT, SHUTDOWN, ClientSlots, Context, Door
from trio_sock.server.fast import EAGER_PROBE, FAIRNESS_BATCH, RECEIVE_SIZE, serve_plain_client
from trio_sock.server.reaper import reap_idle, reap_step
from trio_sock.server.stats import Tally

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from trio_sock.config.addresses import Address

#: The size of a socket buffer that a 64 KiB reply cannot fit in at once: the
#: kernel doubles it and rounds it up to its minimum, a few KiB either way.
SMALL_BUFFER = 4096


# --- plumbing ---------------------------------------------------------------------------


@pytest.fixture(params=["unix", "tcp"])
def kind(request: pytest.FixtureRequest) -> str:
    """The kind of socket pair (or server listener) a test runs on."""
    value: str = request.param
    return value


def socket_pair(
    kind: str, *, server_sndbuf: int | None = None, client_rcvbuf: int | None = None
) -> tuple[socket.socket, socket.socket]:
    """A connected pair: the server's end non-blocking (as the accept loop leaves it),
    and the client's end, with the buffer sizes asked for."""
    if kind == "unix":
        server, client = socket.socketpair()
        if client_rcvbuf is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, client_rcvbuf)
    else:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            client = socket.socket()
            if client_rcvbuf is not None:  # before connect(): it sets the window scale
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, client_rcvbuf)
            client.connect(listener.getsockname())
            server, _ = listener.accept()
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if server_sndbuf is not None:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server_sndbuf)
    server.setblocking(False)
    return server, client


def stream_of(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


def random_bytes(size: int, seed: int) -> bytes:
    """Bytes that differ from offset to offset, so a lost, repeated or moved byte shows."""
    return random.Random(seed).randbytes(size)


def assert_replies(replies: bytes | bytearray, data: bytes) -> None:
    """``replies`` is ``data`` with each byte incremented; else name the first wrong offset."""
    expected = increment(data)
    assert len(replies) == len(expected), f"{len(replies)} reply bytes for {len(data)} sent"
    if replies != expected:
        offset = next(i for i, (a, b) in enumerate(zip(replies, expected, strict=True)) if a != b)
        pytest.fail(
            f"wrong reply at offset {offset} of {len(data)}:"
            f" {bytes(replies[offset : offset + 8])!r} != {expected[offset : offset + 8]!r}"
        )


async def receive_exactly(
    stream: trio.abc.ReceiveStream, size: int, read_size: int = RECEIVE_SIZE
) -> bytes:
    """``size`` bytes; fails (rather than hangs) if they do not all come."""
    data = bytearray()
    with trio.move_on_after(IO_TIMEOUT):
        while len(data) < size:
            chunk = await stream.receive_some(min(read_size, size - len(data)))
            assert chunk, f"EOF after {len(data)} of {size} bytes"
            data += chunk
        return bytes(data)
    pytest.fail(f"only {len(data)} of {size} bytes came back")


async def exchange(
    stream: trio.SocketStream, data: bytes, *, read_size: int = RECEIVE_SIZE
) -> bytes:
    """Send ``data`` while reading its replies in another task (the full duplex a
    large exchange needs), ``read_size`` bytes at most per read; returns the replies."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, data)
        return await receive_exactly(stream, len(data), read_size)


def drain(sock: socket.socket) -> bytes:
    """Everything ``sock`` can read right now, without waiting."""
    sock.setblocking(False)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


EAGAIN = BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))

#: One step of a script: at most this many bytes, ``None`` for all, or an error to raise.
Step = int | None | OSError


def steps(script: Iterable[Step]) -> Iterator[Step]:
    return iter(script)


@attrs.define(eq=False)
class Double:
    """A socket double over a real socket.  Each ``recv`` and ``send`` follows the
    next step of its script, then does what the real socket does (once a script
    runs out, the real socket decides alone); every outcome is recorded.  With
    ``keep_open``, ``close`` leaves the real socket open, for the test to look
    at what the server left in it."""

    real: socket.socket
    recvs: Iterator[Step] = attrs.field(default=(), converter=steps)
    sends: Iterator[Step] = attrs.field(default=(), converter=steps)
    keep_open: bool = False
    recv_log: list[int | str] = attrs.Factory(list)
    send_log: list[int | str] = attrs.Factory(list)
    closed: bool = False

    def fileno(self) -> int:
        return self.real.fileno()

    @property
    def family(self) -> int:
        return self.real.family

    def close(self) -> None:
        self.closed = True
        if not self.keep_open:
            self.real.close()

    def recv(self, size: int) -> bytes:
        step = next(self.recvs, None)
        try:
            if isinstance(step, OSError):
                raise step
            data = self.real.recv(size if step is None else min(size, step))
        except OSError as exc:
            self.recv_log.append(type(exc).__name__)
            raise
        self.recv_log.append(len(data))
        return data

    def send(self, data: bytes | memoryview) -> int:
        step = next(self.sends, None)
        try:
            if isinstance(step, OSError):
                raise step
            sent = self.real.send(data if step is None else data[:step])
        except OSError as exc:
            self.send_log.append(type(exc).__name__)
            raise
        self.send_log.append(sent)
        return sent

    def short_sends(self) -> int:
        """Sends that took some of the reply, not all: the kernel's buffer was full."""
        return sum(1 for n in self.send_log if isinstance(n, int) and 0 < n < RECEIVE_SIZE)


@attrs.define(eq=False)
class Ended:
    """How a client's task ended, as ``Door.left`` heard it."""

    tally: Tally
    reason: str
    at: float


@attrs.frozen
class NotingDoor(Door):
    """A door that also notes each client's end, by number, before the real ``left``."""

    ended: dict[int, Ended] = attrs.Factory(dict)

    def left(
        self, conn: socket.socket, peer: object, number: int, tally: Tally, reason: str
    ) -> None:
        self.ended[number] = Ended(tally, reason, trio.current_time())
        super().left(conn, peer, number, tally, reason)


@attrs.define(eq=False)
class Client:
    """One client served by ``serve_plain_client`` in its own cancel scope."""

    number: int
    conn: object
    """What the server side serves: a socket, or a double of one."""
    door: NotingDoor
    scope: trio.CancelScope

    @property
    def end(self) -> Ended | None:
        return self.door.ended.get(self.number)

    @property
    def task_name(self) -> str:
        return f"fast path client {self.number}"

    @property
    def tally(self) -> Tally:
        """The client's figures, while it is served and after."""
        if self.end is not None:
            return self.end.tally
        return next(t for t in self.door.counters.connected if t.watched is self.conn)

    async def ended(self) -> Ended:
        """Wait until every task is blocked; then the client's task must have ended."""
        await trio.testing.wait_all_tasks_blocked()
        assert self.end is not None, "the client's task has not ended"
        return self.end


@attrs.define(eq=False)
class FastPath:
    """Clients served by ``serve_plain_client`` as the server serves them: behind one
    door, counted in its counters (and reaped by ``reap_idle`` if it runs)."""

    nursery: trio.Nursery
    door: NotingDoor
    _numbers: Iterator[int] = attrs.Factory(lambda: itertools.count(1))

    @classmethod
    def open(cls, nursery: trio.Nursery, idle: float | None = None) -> FastPath:
        """Serve in ``nursery``; with ``idle``, run the idle reaper there too."""
        config = ServerConfig() if idle is None else ServerConfig(idle_timeout=idle)
        clock = trio.lowlevel.current_clock().current_time
        context = Context(config, ClientSlots(config.max_clients), clock)
        door = NotingDoor(UnixAddress("fastpath-test"), context, serve_plain_client)
        if idle is not None:
            nursery.start_soon(reap_idle, [door.counters.connected], idle)
        return cls(nursery, door)

    def serve(self, conn: object) -> Client:
        """Start serving ``conn`` (a socket or a double), as the accept loop does."""
        client = Client(next(self._numbers), conn, self.door, trio.CancelScope())

        async def run() -> None:
            with client.scope:
                peer = ("127.0.0.1", client.number)
                await serve_plain_client(
                    cast("socket.socket", conn), peer, client.number, self.door
                )

        self.door.context.slots.taken += 1
        self.nursery.start_soon(run, name=client.task_name)
        return client

    def connect(self, kind: str = "unix", **buffers: int) -> tuple[Client, trio.SocketStream]:
        """A new client on a socket pair: how it is served, and the client's end."""
        server, client = socket_pair(kind, **buffers)
        return self.serve(server), stream_of(client)


@pytest.fixture
def fast(nursery: trio.Nursery) -> FastPath:
    """The fast path with no idle reaper: clients end by EOF, error or cancellation."""
    return FastPath.open(nursery)


# --- serve_plain_client on real sockets -----------------------------------------------------

CHUNK_SIZES = [
    1,
    2,
    255,
    4096,
    RECEIVE_SIZE - 1,
    RECEIVE_SIZE,
    RECEIVE_SIZE + 1,
    3 * RECEIVE_SIZE + 7,
    1024 * 1024,
]


async def test_chunks_of_every_size_come_back_incremented_and_eof_ends_the_client(
    fast: FastPath, kind: str
) -> None:
    client, stream = fast.connect(kind)
    async with stream:
        total = 0
        for size in CHUNK_SIZES:
            data = random_bytes(size, seed=size)
            assert_replies(await exchange(stream, data), data)
            total += size
        await trio.testing.wait_all_tasks_blocked()
        assert client.end is None
        assert (client.tally.received, client.tally.sent) == (total, total)
        await stream.send_eof()
        end = await client.ended()
        assert await stream.receive_some(1) == b""  # and the server closed
    assert end.reason == EOF
    assert (end.tally.received, end.tally.sent) == (total, total)
    assert fast.door.counters.snapshot().active == 0


async def test_a_client_sending_much_while_reading_slowly_gets_every_byte_back_in_order(
    fast: FastPath, kind: str
) -> None:
    # Small buffers on the way back: each 64 KiB reply goes out in many short sends.
    server, client_end = socket_pair(kind, server_sndbuf=SMALL_BUFFER, client_rcvbuf=SMALL_BUFFER)
    double = Double(server)
    client = fast.serve(double)
    data = random_bytes(4 * 1024 * 1024, seed=1)
    stream = stream_of(client_end)
    async with stream:
        replies = await exchange(stream, data, read_size=1000)
        await stream.send_eof()
        end = await client.ended()
    assert_replies(replies, data)
    assert end.reason == EOF
    assert (end.tally.received, end.tally.sent) == (len(data), len(data))
    assert double.short_sends() > 0, "the buffers were large enough for whole replies"
    assert double.closed


async def test_a_peer_that_never_reads_pins_at_most_one_chunk_and_is_no_longer_read(
    fast: FastPath, kind: str
) -> None:
    server, client_end = socket_pair(kind, server_sndbuf=SMALL_BUFFER, client_rcvbuf=SMALL_BUFFER)
    client_end.setblocking(False)
    client = fast.serve(Double(server, keep_open=True))
    data = random_bytes(16 * 1024 * 1024, seed=2)
    sent = 0
    sending = trio.CancelScope()
    with server, client_end:

        async def send() -> None:
            nonlocal sent
            with sending:
                while sent < len(data):
                    try:
                        sent += client_end.send(data[sent : sent + RECEIVE_SIZE])
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(client_end)

        fast.nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        received, replied = client.tally.received, client.tally.sent
        assert client.end is None
        assert sent < len(data), "the kernel took all 16 MiB: no backpressure to test"
        assert 0 < received - replied <= RECEIVE_SIZE
        # The loop waits to send, with input waiting that it does not read.
        assert server.recv(1, socket.MSG_PEEK)
        assert received < sent
        await trio.testing.wait_all_tasks_blocked()
        assert (client.tally.received, client.tally.sent) == (received, replied)
        sending.cancel()
        client.scope.cancel()
        end = await client.ended()  # promptly: in the same pass of the scheduler
        assert end.reason == SHUTDOWN
        assert (end.tally.received, end.tally.sent) == (received, replied)
        # Every byte counted as sent is there for the client, once; every byte
        # counted as received was taken from the socket, and no more.
        assert_replies(drain(client_end), data[:replied])
        assert drain(server) == data[received:sent]


async def test_cancellation_while_waiting_for_input_loses_and_repeats_nothing(
    fast: FastPath, kind: str
) -> None:
    server, client_end = socket_pair(kind)
    client = fast.serve(Double(server, keep_open=True))
    stream = stream_of(client_end)
    with server:
        async with stream:
            sent = b""
            for size in (1, 1000, RECEIVE_SIZE + 3):
                data = random_bytes(size, seed=size)
                assert_replies(await exchange(stream, data), data)
                sent += data
            await trio.testing.wait_all_tasks_blocked()
            assert client.end is None  # waiting for input
            client.scope.cancel()
            end = await client.ended()
            assert client.scope.cancelled_caught
            assert end.reason == SHUTDOWN
            assert (end.tally.received, end.tally.sent) == (len(sent), len(sent))
            # Nothing more was sent back, and what comes next is left in the socket.
            assert drain(client_end) == b""
            await stream.send_all(b"after")
            await trio.testing.wait_all_tasks_blocked()
            assert drain(server) == b"after"


async def test_cancellation_while_waiting_to_send_leaves_exactly_what_was_counted_as_sent(
    fast: FastPath, kind: str
) -> None:
    # One large chunk, and a client that reads none of it before the cancellation.
    server, client_end = socket_pair(kind, server_sndbuf=SMALL_BUFFER, client_rcvbuf=SMALL_BUFFER)
    data = random_bytes(RECEIVE_SIZE, seed=3)
    client_end.sendall(data)
    client = fast.serve(Double(server, keep_open=True))
    stream = stream_of(client_end)
    with server:
        async with stream:
            await trio.testing.wait_all_tasks_blocked()
            assert client.tally.received == len(data)
            assert 0 < client.tally.sent < len(data), "the reply was not stuck half-way"
            client.scope.cancel()
            end = await client.ended()
            assert end.reason == SHUTDOWN
            sent = end.tally.sent
            # Over TCP, part of what was sent may still be in the server's send
            # buffer: read exactly as much as was counted; then there is nothing more.
            with trio.fail_after(5):
                replies = await receive_exactly(stream, sent, read_size=1000)
            await trio.testing.wait_all_tasks_blocked()
            assert drain(client_end) == b""
    assert_replies(replies, data[:sent])


# --- serve_plain_client on socket doubles ---------------------------------------------------


async def test_after_a_reply_the_loop_looks_once_then_only_now_and_then_before_waiting(
    fast: FastPath,
) -> None:
    # A client slow to answer (here: one that answers only after the server has
    # blocked): the first look after a reply finds nothing, and from then on the
    # loop waits on epoll first, looking again only once in EAGER_PROBE waits,
    # so that such a client costs a failed read only that rarely.
    server, client_end = socket_pair("unix")
    double = Double(server)
    rounds = 3 * EAGER_PROBE
    with client_end:
        client = fast.serve(double)
        for i in range(rounds):
            await trio.testing.wait_all_tasks_blocked()
            client_end.sendall(bytes([i]))
            await trio.testing.wait_all_tasks_blocked()
            assert client_end.recv(1) == bytes([i + 1])
        client_end.shutdown(socket.SHUT_WR)
        end = await client.ended()
    assert end.reason == EOF
    misses = double.recv_log.count("BlockingIOError")
    # The very first read finds nothing too (the client had not sent yet).
    assert 1 + rounds // EAGER_PROBE <= misses <= 2 + rounds // EAGER_PROBE
    assert double.recv_log.count(1) == rounds


async def test_short_sends_and_eagain_on_send_still_deliver_each_reply_whole_and_in_order(
    fast: FastPath,
) -> None:
    server, client_end = socket_pair("unix")
    double = Double(server, recvs=[EAGAIN], sends=[EAGAIN, 3, EAGAIN, EAGAIN, 1, None])
    stream = stream_of(client_end)
    async with stream:
        await stream.send_all(b"hello world")
        await stream.send_eof()
        client = fast.serve(double)
        assert await receive_exactly(stream, 11) == b"ifmmp!xpsme"
        end = await client.ended()
    assert end.reason == EOF
    assert (end.tally.received, end.tally.sent) == (11, 11)
    # A spurious EAGAIN first, then the request, then EOF.
    assert double.recv_log == ["BlockingIOError", 11, 0]
    assert double.send_log == ["BlockingIOError", 3, "BlockingIOError", "BlockingIOError", 1, 7]


@pytest.mark.parametrize("seed", range(8))
async def test_random_short_sends_and_eagains_change_no_byte_of_a_long_stream(
    fast: FastPath, seed: int
) -> None:
    rng = random.Random(seed)

    def script() -> Iterator[Step]:
        while True:
            yield rng.choice([EAGAIN, None, 1, rng.randrange(1, 2 * RECEIVE_SIZE)])

    server, client_end = socket_pair("unix")
    data = random_bytes(1024 * 1024 + seed, seed=seed)
    double = Double(server, recvs=script(), sends=script())
    client = fast.serve(double)
    stream = stream_of(client_end)
    async with stream:
        replies = await exchange(stream, data, read_size=rng.randrange(1, RECEIVE_SIZE))
        await stream.send_eof()
        end = await client.ended()
    assert_replies(replies, data)
    assert end.reason == EOF
    assert (end.tally.received, end.tally.sent) == (len(data), len(data))
    assert "BlockingIOError" in double.send_log
    assert double.short_sends() > 0


async def test_a_broken_pipe_ends_the_client_with_its_reason_and_the_tally_exact(
    fast: FastPath,
) -> None:
    server, client_end = socket_pair("unix")
    broken = BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
    with client_end:
        client_end.sendall(b"hello world")
        client = fast.serve(Double(server, sends=[3, EAGAIN, broken]))
        end = await client.ended()
        assert drain(client_end) == b"ifm"
    assert end.reason == os.strerror(errno.EPIPE)
    assert (end.tally.received, end.tally.sent) == (11, 3)


async def test_a_reset_while_waiting_for_input_ends_the_client_with_the_tally_exact(
    fast: FastPath,
) -> None:
    server, client_end = socket_pair("unix")
    reset = ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
    with client_end:
        client_end.sendall(b"abc")
        # The real socket answers the first read (abc) and the look after the
        # reply (EAGAIN: nothing yet); the read after the wait meets the reset.
        client = fast.serve(Double(server, recvs=[None, None, reset]))
        await trio.testing.wait_all_tasks_blocked()
        assert client.end is None  # replied, and waiting for more
        client_end.sendall(b"more")  # wakes the wait; the read then meets the reset
        end = await client.ended()
        assert client_end.recv(16) == b"bcd"
    assert end.reason == os.strerror(errno.ECONNRESET)
    assert (end.tally.received, end.tally.sent) == (3, 3)


@attrs.define(eq=False)
class Endless:
    """A client that always has a full chunk waiting and takes every reply whole:
    the loop never has to wait.  After ``limit`` chunks it sends EOF, so that a
    loop that never yields ends (and fails the test) instead of hanging it."""

    real: socket.socket
    limit: int
    chunks: int = 0

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()

    def recv(self, size: int) -> bytes:
        if self.chunks == self.limit:
            return b""
        self.chunks += 1
        return bytes(size)

    def send(self, data: bytes | memoryview) -> int:
        return len(data)


class StepCounter(trio.abc.Instrument):
    """Counts the chunks the fast path handles in each step of its task (between yields)."""

    def __init__(self, endless: Endless, task_name: str) -> None:
        self.endless = endless
        self.task_name = task_name
        self.per_step: list[int] = []
        self._before = 0

    def _is_fast_path(self, task: trio.lowlevel.Task) -> bool:
        return task.name == self.task_name

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._is_fast_path(task):
            self._before = self.endless.chunks

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._is_fast_path(task):
            self.per_step.append(self.endless.chunks - self._before)


async def test_a_client_that_never_makes_the_loop_wait_still_lets_other_tasks_run() -> None:
    server, client_end = socket_pair("unix")
    endless = Endless(server, limit=100 * FAIRNESS_BATCH)
    counter = StepCounter(endless, task_name="fast path client 1")
    other_turns = 0
    with client_end:
        trio.lowlevel.add_instrument(counter)
        try:
            async with trio.open_nursery() as nursery:
                client = FastPath.open(nursery).serve(endless)

                async def other() -> None:
                    nonlocal other_turns
                    for _ in range(20):
                        await trio.lowlevel.checkpoint()
                        other_turns += 1
                    nursery.cancel_scope.cancel()

                nursery.start_soon(other)
        finally:
            trio.lowlevel.remove_instrument(counter)
    assert other_turns == 20, "the other task was starved until the stream ended"
    assert endless.chunks < endless.limit
    assert len(counter.per_step) > 1, "the fast path never yielded"
    assert 0 < max(counter.per_step) <= FAIRNESS_BATCH
    end = client.end
    assert end is not None
    assert end.reason == SHUTDOWN
    assert (end.tally.received, end.tally.sent) == (endless.chunks * RECEIVE_SIZE,) * 2


# --- the idle reaper -------------------------------------------------------------------------


def step_of(idle: float) -> float:
    """How late the reaper may drop a client, by its docstring."""
    return reap_step(idle)


async def dropped(client: Client, stream: trio.SocketStream) -> float:
    """Wait for the server's EOF; return when the server dropped the client."""
    assert await stream.receive_some(1) == b""
    end = await client.ended()
    assert end.reason == IDLE_TIMEOUT
    return end.at


@pytest.mark.parametrize("idle", [0.5, 30.0])
@pytest.mark.parametrize("quiet_after", [0.0, 0.5])
async def test_a_lone_client_is_dropped_exactly_idle_seconds_after_its_last_word(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, idle: float, quiet_after: float
) -> None:
    """``quiet_after``: when the client last talks, in idle periods after it came."""
    fast = FastPath.open(nursery, idle)
    client, stream = fast.connect()
    async with stream:
        if quiet_after:
            await trio.sleep(quiet_after * idle)
            assert await exchange(stream, b"A") == b"B"
        quiet_since = trio.current_time()
        assert await dropped(client, stream) - quiet_since == pytest.approx(idle)


@pytest.mark.parametrize("idle", [0.5, 30.0])
@pytest.mark.parametrize("when", ["arrives", "talks"])
async def test_a_client_quiet_from_within_a_step_of_the_reapers_last_pass_is_at_most_a_step_late(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, idle: float, when: str
) -> None:
    # The client's last word comes half a step after a pass of the reaper, so it
    # falls due half a step after the next pass: the pass after that, a step
    # later, drops it.  Never early, never more than a step late.
    fast = FastPath.open(nursery, idle)
    if when == "arrives":
        await trio.sleep(step_of(idle) / 2)
        client, stream = fast.connect()
    else:
        client, stream = fast.connect()
        await trio.sleep(step_of(idle) / 2)
        assert await exchange(stream, b"A") == b"B"
    quiet_since = trio.current_time()
    async with stream:
        quiet = await dropped(client, stream) - quiet_since
    assert idle <= quiet <= idle + step_of(idle)


async def test_a_client_that_keeps_talking_is_never_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    idle = 10.0
    fast = FastPath.open(nursery, idle)
    client, stream = fast.connect()
    async with stream:
        for i in range(30):  # 270 virtual seconds, never 10 quiet in a row
            await trio.sleep(0.9 * idle)
            assert await exchange(stream, bytes([i])) == bytes([i + 1])
        assert client.end is None
        await stream.send_eof()
        end = await client.ended()
    assert end.reason == EOF


async def test_a_client_that_keeps_reading_slowly_is_never_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # The client sends everything at once but reads one small buffer's worth of
    # replies every 0.9 idle periods: the loop waits to send most of the time,
    # and each read is a sign of life.  (Over Unix sockets a read wakes the
    # writer once most of its send buffer is free: hence the small buffers.)
    idle = 10.0
    fast = FastPath.open(nursery, idle)
    client, stream = fast.connect(server_sndbuf=SMALL_BUFFER, client_rcvbuf=SMALL_BUFFER)
    data = random_bytes(256 * 1024, seed=4)
    began = trio.current_time()
    replies = bytearray()

    async def send_then_eof() -> None:
        await stream.send_all(data)
        await stream.send_eof()

    async with stream, trio.open_nursery() as sending:
        sending.start_soon(send_then_eof)
        for _ in range(len(data)):  # bounded: at least one byte a read
            await trio.sleep(0.9 * idle)
            chunk = await stream.receive_some(RECEIVE_SIZE)
            if not chunk:
                break
            replies += chunk
    assert_replies(replies, data)
    end = await client.ended()
    assert end.reason == EOF
    assert trio.current_time() - began > 5 * idle, "too fast to have tested anything"


@pytest.mark.parametrize("idle", [0.3, 5.0, 30.0])
async def test_clients_going_quiet_at_staggered_times_are_each_dropped_at_most_a_step_late(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, idle: float
) -> None:
    fast = FastPath.open(nursery, idle)
    began = trio.current_time()
    lateness: dict[int, float] = {}

    async def come_talk_then_go_quiet(number: int) -> None:
        # Arrivals staggered over three idle periods and last words a little
        # later, at offsets that are no multiple of a step.
        await trio.sleep_until(began + number * idle * 0.0737)
        client, stream = fast.connect()
        async with stream:
            await trio.sleep(number * idle * 0.0131)
            assert await exchange(stream, b"x") == b"y"
            quiet_since = trio.current_time()
            lateness[number] = await dropped(client, stream) - quiet_since - idle

    async with trio.open_nursery() as clients:
        for number in range(40):
            clients.start_soon(come_talk_then_go_quiet, number)
    assert len(lateness) == 40
    early = {n: late for n, late in lateness.items() if late < -1e-9}
    too_late = {n: late for n, late in lateness.items() if late > step_of(idle) + 1e-9}
    assert not early, f"dropped before idle: {early}"
    assert not too_late, f"dropped more than {step_of(idle)}s late: {too_late}"


async def test_a_client_the_server_is_working_for_is_left_alone_by_the_reaper(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fast = FastPath.open(nursery, 5.0)
    left, right = socket.socketpair()
    # --delay: while the server works, the client's last sign of life is "now", always.
    busy = Tally(trio.current_time(), alive=math.inf, watched=left)
    fast.door.counters.connected.add(busy)
    client, stream = fast.connect()
    async with stream:
        await dropped(client, stream)
    await trio.sleep(100)
    assert not busy.idle
    left.close()
    right.close()


async def test_an_infinite_idle_timeout_never_drops_a_client(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fast = FastPath.open(nursery, math.inf)
    client, stream = fast.connect()
    async with stream:
        for _ in range(1000):  # nearly three virtual years, a day at a time
            await trio.sleep(86_000)
        assert client.end is None
        assert await exchange(stream, b"A") == b"B"
        await stream.send_eof()
        end = await client.ended()
    assert end.reason == EOF


# --- through a real server -----------------------------------------------------------------


async def test_a_never_reader_blocked_on_send_is_dropped_by_idleness_through_the_server(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    kind: str,
) -> None:
    idle = 5.0
    server = await start_in(nursery, attrs.evolve(server_config, idle_timeout=idle))
    stream = await open_stream(address_of(server, kind))
    began = trio.current_time()
    with pytest.raises(trio.BrokenResourceError):
        await stream.send_all(b"x" * (64 * 1024 * 1024))
    dropped_after = trio.current_time() - began
    await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    stats = server.stats()
    assert (stats.active, stats.dropped_idle) == (0, 1)
    assert 0 < stats.bytes_in - stats.bytes_out <= RECEIVE_SIZE
    assert idle <= dropped_after <= idle + step_of(idle)


#: Round trips of the ping-pong client, each bounded by ``ROUND_TRIP_LIMIT``.
ROUND_TRIPS = 50
#: Far more than a ping-pong should ever wait for its reply (a few milliseconds).
ROUND_TRIP_LIMIT = 1.0
#: A streaming client that has sent this many chunks (1 GiB) stops: the bound on its loop.
STREAM_CHUNKS = 16 * 1024


async def test_a_ping_pong_client_is_served_promptly_while_another_streams_flat_out(
    nursery: trio.Nursery, server_config: ServerConfig, kind: str
) -> None:
    server = await start_in(nursery, server_config)
    address = address_of(server, kind)
    pinger = await open_stream(address)
    streamer = await open_stream(address)
    pattern = bytes(range(256)) * (RECEIVE_SIZE // 256)
    expected = increment(pattern) * 2
    echoed = 0
    chunks_sent = 0
    flowing = trio.Event()
    stop = trio.Event()

    async def stream_out() -> None:
        nonlocal chunks_sent
        while chunks_sent < STREAM_CHUNKS and not stop.is_set():
            await streamer.send_all(pattern)
            chunks_sent += 1
        await streamer.send_eof()

    async def stream_in() -> None:
        nonlocal echoed
        while chunk := await streamer.receive_some(RECEIVE_SIZE):
            start_at = echoed % len(pattern)
            assert chunk == expected[start_at : start_at + len(chunk)]
            echoed += len(chunk)
            if echoed >= FAIRNESS_BATCH * RECEIVE_SIZE:
                flowing.set()

    round_trips: list[float] = []
    async with pinger, streamer, trio.open_nursery() as streaming:
        streaming.start_soon(stream_out)
        streaming.start_soon(stream_in)
        with trio.fail_after(10):
            await flowing.wait()
        echoed_before = echoed
        for i in range(ROUND_TRIPS):
            began = trio.current_time()
            with trio.fail_after(ROUND_TRIP_LIMIT):
                await pinger.send_all(bytes([i]))
                assert await receive_exactly(pinger, 1) == bytes([i + 1])
            round_trips.append(trio.current_time() - began)
        echoed_during = echoed - echoed_before
        stream_still_running = chunks_sent < STREAM_CHUNKS
        stop.set()
    assert stream_still_running, "the stream ended before the ping-pongs did"
    assert echoed_during > 0, "the stream stalled while the ping-pongs ran"
    assert max(round_trips) < ROUND_TRIP_LIMIT
    assert len(round_trips) == ROUND_TRIPS


# --- the accept loop -------------------------------------------------------------------------


def burst(address: Address, count: int) -> list[socket.socket]:
    """``count`` clients that connect and send ``A``, all before the server gets to run."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = connect_blocking(address)
            socks.append(sock)
            sock.sendall(b"A")
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


async def test_a_burst_of_500_connections_is_accepted_a_batch_per_wakeup_and_all_are_served(
    nursery: trio.Nursery,
    server_config: ServerConfig,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[int] = []
    real_wait_readable = trio.lowlevel.wait_readable

    async def counted_wait_readable(sock: int | trio.lowlevel.FdStream | socket.socket) -> None:
        waits.append(sock if isinstance(sock, int) else sock.fileno())
        await real_wait_readable(sock)

    monkeypatch.setattr(trio.lowlevel, "wait_readable", counted_wait_readable)
    server = await start_in(nursery, server_config)
    await trio.testing.wait_all_tasks_blocked()
    listeners = set(waits)  # nothing but the accept loops waits yet
    assert len(listeners) == len(server.addresses)
    socks = burst(address_of(server, kind), 500)
    streams = [stream_of(sock) for sock in socks]
    await trio.testing.wait_all_tasks_blocked()
    assert server.accepted == 500
    assert server.active_clients == 500
    listener_waits = [fd for fd in waits if fd in listeners]
    # The two loops' first waits, then one per ACCEPT_BATCH accepted (the last
    # batch ends early, on EAGAIN): never one per connection.
    assert len(listener_waits) == len(listeners) + math.ceil(500 / ACCEPT_BATCH) + (
        500 % ACCEPT_BATCH == 0
    )
    for stream in streams:
        async with stream:
            assert await receive_exactly(stream, 1) == b"B"
            await stream.send_eof()
            assert await stream.receive_some(1) == b""
    await trio.testing.wait_all_tasks_blocked()
    assert server.active_clients == 0


async def test_max_clients_backpressures_a_burst_and_serves_the_queued_clients_later(
    nursery: trio.Nursery, server_config: ServerConfig, kind: str
) -> None:
    limit, waves = 10, 5
    server = await start_in(nursery, attrs.evolve(server_config, max_clients=limit))
    socks = burst(address_of(server, kind), limit * waves)
    try:
        for wave in range(waves):
            await trio.testing.wait_all_tasks_blocked()
            assert server.accepted == limit * (wave + 1)
            assert server.active_clients == limit
            served = socks[wave * limit : (wave + 1) * limit]
            queued = socks[(wave + 1) * limit :]
            assert all(drain(sock) == b"B" for sock in served)
            # Connected, and not refused: still waiting in the listen queue.
            assert all(drain(sock) == b"" for sock in queued)
            assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for sock in queued)
            for sock in served:
                sock.close()
        await trio.testing.wait_all_tasks_blocked()
        assert server.active_clients == 0
        assert server.stats().refused == 0
    finally:
        for sock in socks:
            sock.close()
