"""What "idle" means: a client that neither sends nor reads, on every path.

Any progress either way is a sign of life: bytes that arrived while the server
itself stood still, a reply taken 4 KiB at a time, a TLS record trickling in.
The stream path's own stream passes Trio's conformance checks.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Final

import attrs
import pytest
import trio
import trio.testing

from tests.helpers import address_of, connect, open_stream, start_in
from trio_sock import increment
from trio_sock.server.reaper import REAP_STEP_MIN, reap_idle
from trio_sock.server.stats import Tally
from trio_sock.server.watched_stream import WatchedStream

if TYPE_CHECKING:
    from tests.helpers import Processes
    from trio_sock import ServerConfig

#: Short enough to keep the freeze test quick, long enough that a loaded CI
#: machine never makes a client that talks look idle.
FREEZE_IDLE: Final = 1.0


def departures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_sock.clients"]


# --- a frozen server ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["unix", "tcp"])
def test_clients_that_sent_while_the_server_was_frozen_are_answered_not_dropped(
    procs: Processes, where: str
) -> None:
    server = procs.server(
        *("--unix", str(procs.cwd / "sock"), "--tcp", "0"),
        *("--idle-timeout", str(FREEZE_IDLE), "--log-level", "info"),
    )
    address = server.unix() if where == "unix" else server.tcp()
    talkers = [connect(address) for _ in range(5)]
    silent = [connect(address) for _ in range(2)]
    try:
        for sock in [*talkers, *silent]:
            sock.sendall(b"A")
            assert sock.recv(1) == b"B"
        server.send_signal(signal.SIGSTOP)  # Ctrl-Z, a long GC pause, a suspended VM
        for sock in talkers:
            sock.sendall(b"C")
        time.sleep(FREEZE_IDLE * 2.5)  # the scenario itself: frozen for longer than the timeout
        server.send_signal(signal.SIGCONT)
        for sock in talkers:
            assert sock.recv(1) == b"D"
        for sock in silent:  # idle before, during and after the freeze: dropped
            try:
                assert sock.recv(1) == b""
            except TimeoutError:
                raise AssertionError(server.stderr()) from None
    finally:
        for sock in [*talkers, *silent]:
            sock.close()
    assert server.stop() == 0
    log = server.stderr()
    assert log.count("reason=idle timeout") == len(silent), log


# --- progress on the stream path ---------------------------------------------------------


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_a_client_that_takes_its_reply_slowly_is_not_idle_on_the_stream_path(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    # --delay puts every client on the stream path; the reply outgrows the kernel's buffers.
    config = attrs.evolve(server_config, delay=0.001, idle_timeout=2.0)
    server = await start_in(nursery, config)
    data = bytes(range(256)) * 4096  # 1 MiB
    reply = bytearray()
    stream = await open_stream(address_of(server, transport))
    async with stream, trio.open_nursery() as client:

        async def send() -> None:
            await stream.send_all(data)
            await stream.send_eof()

        client.start_soon(send)
        started = trio.current_time()
        while chunk := await stream.receive_some(4096):
            reply += chunk
            await trio.sleep(0.25)  # 4 KiB every 0.25 s: far slower than it sends
        # Reading took far longer than the idle timeout, yet the client never paused for it.
        assert trio.current_time() - started > 10 * config.idle_timeout
    assert reply == increment(data)
    await trio.testing.wait_all_tasks_blocked()
    (record,) = departures(caplog)
    assert record.reason == "eof"  # type: ignore[attr-defined]
    assert (record.bytes_in, record.bytes_out) == (len(data), len(data))  # type: ignore[attr-defined]


async def test_a_client_that_stops_reading_mid_reply_is_dropped_and_its_bytes_counted_exactly(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    config = attrs.evolve(server_config, delay=0.001, idle_timeout=2.0)
    server = await start_in(nursery, config)
    data = b"x" * (4 * 1024 * 1024)
    stream = await open_stream(address_of(server, "unix"))
    async with stream, trio.open_nursery() as sending:
        sending.start_soon(_send_ignoring_breakage, stream, data)
        got = len(await stream.receive_some(4096))
        # Then it neither reads nor (once the buffers are full) sends.
        with trio.move_on_after(60) as waited:
            while True:
                await trio.sleep(1)
                if any(departures(caplog)):
                    break
        assert not waited.cancelled_caught, "the silent client was never dropped"
        sending.cancel_scope.cancel()
    (record,) = departures(caplog)
    assert record.reason == "idle timeout"  # type: ignore[attr-defined]
    # Bytes the socket took count, even those of a reply never finished.
    assert record.bytes_out >= got  # type: ignore[attr-defined]
    assert 0 < record.bytes_in - record.bytes_out <= 65536  # type: ignore[attr-defined]


async def _send_ignoring_breakage(stream: trio.abc.SendStream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


async def test_once_mode_still_drops_a_client_that_never_sends(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
) -> None:
    server = await start_in(nursery, attrs.evolve(server_config, once=True, idle_timeout=3.0))
    stream = await open_stream(address_of(server, "tcp"))
    async with stream:
        started = trio.current_time()
        assert await stream.receive_some(1) == b""
        assert 3.0 <= trio.current_time() - started <= 3.0 + 0.3 + 1e-9
    assert server.stats().dropped_idle == 1


async def test_delay_longer_than_the_idle_timeout_is_the_servers_time_not_the_clients(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
) -> None:
    server = await start_in(nursery, attrs.evolve(server_config, delay=20, idle_timeout=5))
    stream = await open_stream(address_of(server, "unix"))
    async with stream:
        await stream.send_all(b"A")
        assert await stream.receive_some(1) == b"B"
    assert server.stats().dropped_idle == 0


# --- absurd timeouts ---------------------------------------------------------------------


async def test_a_tiny_idle_timeout_does_not_make_the_reaper_spin() -> None:
    clients: set[Tally] = set()
    cpu = time.process_time()
    with trio.move_on_after(0.5):
        await reap_idle([clients], 1e-300)
    used = time.process_time() - cpu
    # Bounded below by REAP_STEP_MIN, the reaper wakes ~50 times in 0.5 s;
    # spinning, it burns the whole half second.
    assert used < 0.1, f"the reaper used {used:.3f}s of CPU in 0.5s with no client"
    assert REAP_STEP_MIN > 0


# --- the stream path's stream is a Trio stream ------------------------------------------


def _watched_pair() -> tuple[WatchedStream, trio.SocketStream, Tally]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    clock = trio.current_time
    tally = Tally(clock(), alive=clock(), watched=ours)
    other = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
    return WatchedStream(ours, tally, clock), other, tally


async def _stream_maker() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
    watched, other, _ = _watched_pair()
    return watched, other


async def _clogged_stream_maker() -> tuple[
    trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream
]:
    watched, other, _ = _watched_pair()
    # Fill the buffers both ways, so that the next send blocks.
    for stream in (watched, other):
        while True:
            with trio.move_on_after(0.01) as scope:
                await stream.send_all(b"x" * 65536)
            if scope.cancelled_caught:
                break
    return watched, other


async def test_the_stream_path_stream_passes_trios_half_closeable_stream_checks() -> None:
    await trio.testing.check_half_closeable_stream(_stream_maker, _clogged_stream_maker)


async def test_every_byte_moved_either_way_is_a_sign_of_life_and_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watched, other, tally = _watched_pair()
    async with watched, other:
        await trio.sleep(10)
        await other.send_all(b"abc")
        assert await watched.receive_some() == b"abc"
        assert tally.alive == trio.current_time()
        await trio.sleep(10)
        await watched.send_all(b"de")
        assert tally.alive == trio.current_time()
        assert (tally.received, tally.sent) == (3, 2)


async def test_a_stream_dropped_as_idle_fails_its_pending_call_and_every_call_after() -> None:
    watched, other, tally = _watched_pair()
    async with watched, other:

        async def drop_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            tally.idle = True
            trio.lowlevel.notify_closing(watched.socket)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drop_soon)
            with pytest.raises(trio.ClosedResourceError):
                await watched.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await watched.send_all(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await watched.receive_some()
