"""The server through its library API: ``await nursery.start(serve, config)``.

Time-dependent behaviour (idle timeout, grace, delay, negative checks) runs on
``autojump_clock``: virtual seconds pass only while every task is blocked,
which makes those tests instant and deterministic.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

import trio_sock.listen.open_all
import trio_sock.server.fast
import trio_sock.server.goodbye
import trio_sock.server.stats
import trio_sock.server.stream
from tests.helpers import address_of, open_stream, start_in
from trio_sock import (
    ListenError,
    Server,
    ServerConfig,
    TcpAddress,
    UnixAddress,
    increment,
    serve,
)
from trio_sock.protocol import Increment
from trio_sock.server.fast import RECEIVE_SIZE

if TYPE_CHECKING:
    from trio_sock.config.addresses import Address
    from trio_sock.server.clients import Door


def present(path: Path) -> bool:
    return path.exists()


def assert_refused(address: Address) -> None:
    assert isinstance(address, TcpAddress)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect((address.host, address.port))


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def roundtrip(stream: trio.SocketStream, data: bytes) -> bytes:
    await stream.send_all(data)
    return await receive_exactly(stream, len(data))


def departures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_sock.clients"]


@pytest.fixture(params=["unix", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


async def test_start_returns_a_server_that_knows_its_bound_addresses(
    server: Server, server_config: ServerConfig
) -> None:
    unix, tcp = server.addresses
    assert unix == server_config.addresses[0]
    assert isinstance(tcp, TcpAddress)
    assert tcp.host == "127.0.0.1"
    assert tcp.port != 0


async def test_each_byte_comes_back_incremented(server: Server, transport: str) -> None:
    stream = await open_stream(address_of(server, transport))
    async with stream:
        assert await roundtrip(stream, b"A") == b"B"
        assert await roundtrip(stream, b"Z") == b"["
        assert await roundtrip(stream, b"\xff") == b"\x00"


async def test_all_256_byte_values_come_back_in_order(server: Server, transport: str) -> None:
    stream = await open_stream(address_of(server, transport))
    async with stream:
        assert await roundtrip(stream, bytes(range(256))) == increment(bytes(range(256)))


async def test_a_multi_megabyte_stream_comes_back_whole_then_the_server_closes(
    server: Server, transport: str
) -> None:
    data = os.urandom(8 * 1024 * 1024)
    stream = await open_stream(address_of(server, transport))
    received = bytearray()

    async def send_then_eof() -> None:
        await stream.send_all(data)
        await stream.send_eof()

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send_then_eof)
        while chunk := await stream.receive_some(RECEIVE_SIZE):
            received += chunk
    assert len(received) == len(data)
    assert received == increment(data)


async def test_the_server_replies_until_the_client_sends_eof(
    server: Server, transport: str
) -> None:
    stream = await open_stream(address_of(server, transport))
    async with stream:
        for char in b"hello":
            assert await roundtrip(stream, bytes([char])) == bytes([char + 1])
        await stream.send_eof()
        assert await stream.receive_some(1) == b""


async def test_once_mode_replies_to_one_byte_then_closes(
    nursery: trio.Nursery, server_config: ServerConfig, transport: str
) -> None:
    server = await start_in(nursery, attrs.evolve(server_config, once=True))
    stream = await open_stream(address_of(server, transport))
    async with stream:
        await stream.send_all(b"A")
        assert await receive_exactly(stream, 1) == b"B"
        assert await stream.receive_some(1) == b""


async def test_once_mode_reply_survives_input_the_server_does_not_read(
    nursery: trio.Nursery, server_config: ServerConfig, transport: str
) -> None:
    # Closing with unread input resets the connection, which can destroy the
    # reply: the server must read and discard the rest first.
    server = await start_in(nursery, attrs.evolve(server_config, once=True))
    for _ in range(20):
        stream = await open_stream(address_of(server, transport))
        async with stream:
            await stream.send_all(b"A\n" + b"x" * 100_000)
            await stream.send_eof()
            assert await receive_exactly(stream, 1) == b"B"
            assert await stream.receive_some(1) == b""


async def test_once_mode_frees_the_slot_of_a_client_that_keeps_its_side_open(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
) -> None:
    server = await start_in(nursery, attrs.evolve(server_config, once=True, idle_timeout=1000))
    stream = await open_stream(server.addresses[0])
    async with stream:
        await stream.send_all(b"AB")
        assert await receive_exactly(stream, 1) == b"B"
        assert await stream.receive_some(1) == b""  # the server's EOF comes with the reply
        await trio.testing.wait_all_tasks_blocked()
        assert server.active_clients == 1  # still discarding what we might send
        await trio.sleep(trio_sock.server.goodbye.LINGER_TIME)
        await trio.testing.wait_all_tasks_blocked()
        assert server.active_clients == 0


async def test_every_address_serves_as_soon_as_start_returns(
    nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    server = await start_in(nursery, server_config)
    for address in server.addresses:
        stream = await open_stream(address)
        async with stream:
            assert await roundtrip(stream, b"a") == b"b"


async def test_a_listen_error_leaves_nothing_open(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = ServerConfig(
            addresses=[UnixAddress(str(path)), TcpAddress("127.0.0.1", taken.getsockname()[1])]
        )
        with pytest.RaisesGroup(pytest.RaisesExc(ListenError, match="already in use")):
            async with trio.open_nursery() as nursery:
                await nursery.start(serve, config)
    assert not present(path)


async def test_cancelling_the_nursery_closes_listeners_and_removes_the_socket_file(
    server_config: ServerConfig,
) -> None:
    path = Path(server_config.addresses[0].path)  # type: ignore[union-attr]
    async with trio.open_nursery() as nursery:
        server = await start_in(nursery, server_config)
        client = await open_stream(server.addresses[0])
        assert present(path)
        nursery.cancel_scope.cancel()
    assert not present(path)
    assert_refused(server.addresses[1])
    with pytest.raises(trio.BrokenResourceError):  # noqa: PT012 - either call may see the reset
        await client.send_all(b"A")
        assert await client.receive_some(1) == b""
        raise trio.BrokenResourceError
    await client.aclose()


async def test_stop_lets_an_active_client_finish_and_refuses_new_ones(
    server_config: ServerConfig,
) -> None:
    path = Path(server_config.addresses[0].path)  # type: ignore[union-attr]
    async with trio.open_nursery() as nursery:
        server = await start_in(nursery, attrs.evolve(server_config, grace=30))
        client = await open_stream(server.addresses[0])
        assert await roundtrip(client, b"A") == b"B"
        server.stop()
        assert server.stopping
        await trio.testing.wait_all_tasks_blocked()
        assert not present(path)
        assert_refused(server.addresses[1])
        assert await roundtrip(client, b"B") == b"C"
        await client.send_eof()
        assert await client.receive_some(1) == b""
        await client.aclose()
    # The nursery ended by itself: serve returned once the last client left.
    assert server.active_clients == 0


async def test_clients_still_active_when_the_grace_ends_are_cancelled(
    autojump_clock: trio.testing.MockClock,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = attrs.evolve(server_config, grace=5, idle_timeout=1000)
    caplog.set_level(logging.INFO, logger="trio_sock")
    async with trio.open_nursery() as nursery:
        server = await start_in(nursery, config)
        client = await open_stream(server.addresses[0])
        await trio.testing.wait_all_tasks_blocked()
        assert server.active_clients == 1
        stopped_at = trio.current_time()
        server.stop()
    assert trio.current_time() - stopped_at == pytest.approx(5)
    assert [r.reason for r in departures(caplog)] == ["cancelled at shutdown"]  # type: ignore[attr-defined]
    assert await client.receive_some(1) == b""
    await client.aclose()


async def test_stop_with_no_clients_returns_at_once(
    autojump_clock: trio.testing.MockClock, server_config: ServerConfig
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_in(nursery, attrs.evolve(server_config, grace=60))
        stopped_at = trio.current_time()
        server.stop()
        server.stop()  # a second call changes nothing
    assert trio.current_time() == stopped_at


async def test_an_idle_client_is_dropped_after_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    server = await start_in(nursery, attrs.evolve(server_config, idle_timeout=30))
    stream = await open_stream(address_of(server, transport))
    async with stream:
        began = trio.current_time()
        assert await stream.receive_some(1) == b""
        assert trio.current_time() - began == pytest.approx(30)
    await trio.testing.wait_all_tasks_blocked()
    assert [r.reason for r in departures(caplog)] == ["idle timeout"]  # type: ignore[attr-defined]


async def test_a_client_that_keeps_talking_is_never_idle(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    server = await start_in(nursery, attrs.evolve(server_config, idle_timeout=10))
    stream = await open_stream(server.addresses[0])
    async with stream:
        for _ in range(10):  # 70 virtual seconds in all, never 10 in a row
            await trio.sleep(7)
            assert await roundtrip(stream, b"x") == b"y"


async def test_a_slow_reply_is_not_counted_as_the_clients_idleness(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    transport: str,
) -> None:
    for once in (False, True):
        config = attrs.evolve(server_config, delay=20, idle_timeout=10, once=once)
        async with trio.open_nursery() as inner:
            server = await start_in(inner, config)
            stream = await open_stream(address_of(server, transport))
            began = trio.current_time()
            assert await roundtrip(stream, b"A") == b"B"
            assert trio.current_time() - began == pytest.approx(20)
            await stream.aclose()
            inner.cancel_scope.cancel()


async def test_a_client_that_never_reads_costs_at_most_one_chunk_then_is_dropped(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    server = await start_in(nursery, attrs.evolve(server_config, idle_timeout=5))
    stream = await open_stream(address_of(server, transport))
    with pytest.raises(trio.BrokenResourceError):
        await stream.send_all(b"x" * (64 * 1024 * 1024))
    await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    (record,) = departures(caplog)
    assert record.reason == "idle timeout"  # type: ignore[attr-defined]
    # The kernel's buffers hold the rest; the server itself never holds more
    # than the chunk it is trying to send back.
    received, sent = getattr(record, "bytes_in"), getattr(record, "bytes_out")  # noqa: B009
    assert 0 < received - sent <= RECEIVE_SIZE
    assert received < 64 * 1024 * 1024


async def test_max_clients_1_serves_one_at_a_time_and_refuses_nobody(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    transport: str,
) -> None:
    server = await start_in(nursery, attrs.evolve(server_config, max_clients=1, idle_timeout=1e6))
    address = address_of(server, transport)
    first = await open_stream(address)
    assert await roundtrip(first, b"1") == b"2"
    second = await open_stream(address)  # queued by the kernel, not refused
    await second.send_all(b"A")
    with trio.move_on_after(100):  # virtual time: the server has nothing else to do
        await second.receive_some(1)
        pytest.fail("the second client was served while the first was active")
    assert server.active_clients == 1
    await first.aclose()
    assert await receive_exactly(second, 1) == b"B"
    await second.aclose()


async def test_a_freed_slot_reaches_a_listener_with_a_queue_not_one_without(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    # The Unix loop, having accepted the only client it had, waits for room with
    # an empty queue; the TCP loop waits behind it with a client queued.  The
    # room made when the first client leaves must reach the TCP loop.
    server = await start_in(nursery, attrs.evolve(server_config, max_clients=1, idle_timeout=1e6))
    unix, tcp = address_of(server, "unix"), address_of(server, "tcp")
    first = await open_stream(unix)
    assert await roundtrip(first, b"1") == b"2"
    second = await open_stream(tcp)
    await second.send_all(b"A")
    await trio.testing.wait_all_tasks_blocked()
    assert server.active_clients == 1
    await first.aclose()
    with trio.fail_after(10):
        assert await receive_exactly(second, 1) == b"B"
    await second.aclose()


async def test_accepted_tcp_clients_have_nagle_off_and_every_client_is_non_blocking(
    nursery: trio.Nursery, server_config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TCP_NODELAY is set once, on the listener: Linux copies it to each accepted
    # socket.  Were it not copied, replies after the first could wait on an ACK.
    seen: list[tuple[int, int | None, bool]] = []
    real = trio_sock.server.fast.serve_plain_client

    async def noting(conn: socket.socket, peer: object, number: int, door: Door) -> None:
        nodelay = None
        if conn.family != socket.AF_UNIX:
            nodelay = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        seen.append((conn.family, nodelay, conn.getblocking()))
        await real(conn, peer, number, door)

    monkeypatch.setattr("trio_sock.server.accept.serve_plain_client", noting)
    server = await start_in(nursery, server_config)
    for transport in ("unix", "tcp"):
        stream = await open_stream(address_of(server, transport))
        async with stream:
            assert await roundtrip(stream, b"A") == b"B"
    assert sorted(seen) == sorted([(socket.AF_UNIX, None, False), (socket.AF_INET, 1, False)])


async def test_a_quiet_listener_never_holds_the_only_slot(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    # With one slot and two listeners, clients of the busy listener must keep
    # being served while the other listener has no clients at all.
    server = await start_in(nursery, attrs.evolve(server_config, max_clients=1))
    for _ in range(5):
        with trio.fail_after(1):
            stream = await open_stream(server.addresses[0])
            async with stream:
                assert await roundtrip(stream, b"A") == b"B"


async def test_abusive_clients_never_disturb_a_well_behaved_one(
    nursery: trio.Nursery, server: Server, transport: str
) -> None:
    address = address_of(server, transport)
    good = await open_stream(address)
    assert await roundtrip(good, b"A") == b"B"

    def reset(sock: trio.socket.SocketType) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def abuse(kind: str) -> None:
        stream = await open_stream(address)
        if kind == "reset mid-stream":
            await stream.send_all(os.urandom(100_000))
            reset(stream.socket)
        elif kind == "half-close":
            await stream.send_all(b"abc")
            await stream.send_eof()
            assert await receive_exactly(stream, 3) == b"bcd"
        elif kind == "garbage":
            garbage = os.urandom(50_000)
            assert await roundtrip(stream, garbage) == increment(garbage)
        await stream.aclose()

    for round_number in range(20):
        async with trio.open_nursery() as abusers:
            for kind in ("reset mid-stream", "half-close", "connect and close", "garbage"):
                abusers.start_soon(abuse, kind)
        char = bytes([65 + round_number])
        assert await roundtrip(good, char) == increment(char)
    await good.aclose()
    fresh = await open_stream(address)
    async with fresh:
        assert await roundtrip(fresh, b"z") == b"{"


async def test_a_bug_in_one_client_task_ends_only_that_client(
    nursery: trio.Nursery,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: Increment, data: bytes) -> bytes:
        raise RuntimeError("boom")

    other = await open_stream(server.addresses[1])
    monkeypatch.setattr(Increment, "data_received", broken)
    victim = await open_stream(server.addresses[0])
    async with victim:
        await victim.send_all(b"A")
        assert await victim.receive_some(1) == b""
    monkeypatch.undo()
    async with other:
        assert await roundtrip(other, b"A") == b"B"
    assert any("boom" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_thousands_of_connections_in_a_row_are_all_served(
    server: Server, transport: str
) -> None:
    address = address_of(server, transport)
    count = 2000
    before = server.accepted
    for i in range(count):
        stream = await open_stream(address)
        async with stream:
            char = bytes([i % 256])
            assert await roundtrip(stream, char) == increment(char)
    assert server.accepted - before == count


@pytest.fixture
def many_fds() -> int:
    """Room for both ends of a few thousand connections in this one process."""
    wanted = 3000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * wanted + 200
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return wanted


async def test_thousands_of_idle_clients_are_held_and_then_all_served(
    nursery: trio.Nursery, server_config: ServerConfig, many_fds: int
) -> None:
    server = await start_in(nursery, attrs.evolve(server_config, max_clients=many_fds + 10))
    streams = [await open_stream(server.addresses[0]) for _ in range(many_fds)]
    await trio.testing.wait_all_tasks_blocked()
    assert server.active_clients == many_fds
    for stream in streams:
        await stream.send_all(b"A")
    for stream in streams:
        assert await receive_exactly(stream, 1) == b"B"
        await stream.aclose()


class _AcceptFailing:
    """A listening socket double whose accept() fails with EMFILE a few times first."""

    def __init__(self, real: socket.socket, failures: int) -> None:
        self._real = real
        self.failures = failures

    @property
    def family(self) -> int:
        return self._real.family

    def fileno(self) -> int:
        return self._real.fileno()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._real.setsockopt(level, option, value)

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            self.failures -= 1
            raise OSError(24, "Too many open files")
        return self._real.accept()

    def close(self) -> None:
        self._real.close()


async def test_running_out_of_descriptors_is_survived_and_logged_without_a_flood(
    autojump_clock: trio.testing.MockClock,
    server_config: ServerConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing: list[_AcceptFailing] = []
    real_open = trio_sock.listen.open_all.open_listeners

    async def open_failing(config: ServerConfig) -> list[Any]:
        listeners = await real_open(config)
        for listener in listeners:
            listener.socket = _AcceptFailing(listener.socket, 100)  # type: ignore[assignment]
            failing.append(listener.socket)  # type: ignore[arg-type]
        return listeners

    monkeypatch.setattr("trio_sock.server.serve.open_listeners", open_failing)
    caplog.set_level(logging.WARNING, logger="trio_sock.server")
    async with trio.open_nursery() as nursery:
        server = await start_in(nursery, server_config)
        stream = await open_stream(server.addresses[0])
        began = trio.current_time()
        assert await roundtrip(stream, b"A") == b"B"
        elapsed = trio.current_time() - began
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert failing[0].failures == 0
    warnings = [r for r in caplog.records if "Too many open files" in r.getMessage()]
    # 100 failures, 0.1 s apart: about 10 s, logged about once a second.
    assert 9 <= elapsed <= 11
    assert 5 <= len(warnings) <= 12
    assert "failed" in warnings[-1].getMessage()


async def test_a_connection_that_dies_in_the_listen_queue_is_skipped(
    server_config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux passes a queued connection's own error (a reset, a timeout, a
    # firewall) through accept(): it must cost that connection only.
    real_open = trio_sock.listen.open_all.open_listeners

    class _FailsOnce(_AcceptFailing):
        def accept(self) -> tuple[socket.socket, Any]:
            if self.failures:
                self.failures -= 1
                raise TimeoutError(110, "Connection timed out")
            return self._real.accept()

    async def open_failing(config: ServerConfig) -> list[Any]:
        listeners = await real_open(config)
        listeners[0].socket = _FailsOnce(listeners[0].socket, 1)  # type: ignore[assignment]
        return listeners

    monkeypatch.setattr("trio_sock.server.serve.open_listeners", open_failing)
    async with trio.open_nursery() as nursery:
        server = await start_in(nursery, server_config)
        for _ in range(2):
            stream = await open_stream(server.addresses[0])
            async with stream:
                assert await roundtrip(stream, b"A") == b"B"
        nursery.cancel_scope.cancel()


async def test_the_stream_path_is_cancelled_promptly_while_blocked_on_a_peer_that_never_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A lockstep stream is a peer with no buffer at all: send_all blocks until
    # the other side reads, which this one never does.
    server_side, client_side = trio.testing.lockstep_stream_pair()
    tally = trio_sock.server.stats.Tally(0.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side.send_all, b"A" * 10)
        with trio.move_on_after(3) as scope:
            await trio_sock.server.stream._reply_over_stream(
                server_side, ServerConfig(), tally, Increment(), counted=False
            )
        nursery.cancel_scope.cancel()
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(3)
    assert (tally.received, tally.sent) == (10, 0)


async def test_the_stream_path_counts_what_it_relayed_and_ends_on_eof() -> None:
    server_side, client_side = trio.testing.memory_stream_pair()
    tally = trio_sock.server.stats.Tally(0.0)
    config = ServerConfig()

    async def client() -> None:
        await client_side.send_all(b"hello")
        await client_side.send_eof()
        assert await receive_exactly(client_side, 5) == b"ifmmp"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        reason = await trio_sock.server.stream._reply_over_stream(
            server_side, config, tally, Increment(), counted=False
        )
        assert reason == "eof"
    assert (tally.received, tally.sent) == (5, 5)
