"""``proxy_protocol``: each connection's PROXY header read first, the client it names the peer.

In-process servers, spoken to as a load balancer would: a header, then the
client's bytes, in one send or a byte at a time.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from typing import TYPE_CHECKING, Final

import attrs
import pytest
import trio
import trio.testing

from tests.helpers import (
    address_of,
    exchange,
    open_stream,
    receive_to_eof,
    start_in,
    wait_for_log,
)
from trio_sock import Connection, TcpAddress
from trio_sock.server.behind_proxy import PROXY_HEADER_TIMEOUT

if TYPE_CHECKING:
    from tests.helpers import Processes
    from trio_sock import ServerConfig

TRANSPORTS: Final = ("unix", "tcp")
V1: Final = b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 443\r\n"
SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2: Final = (
    SIGNATURE
    + struct.pack("!BBH", 0x21, 0x11, 12)
    + struct.pack("!4s4sHH", bytes([203, 0, 113, 7]), bytes([192, 0, 2, 1]), 4242, 443)
)
V2_LOCAL: Final = SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0)


def behind(config: ServerConfig) -> ServerConfig:
    return attrs.evolve(config, proxy_protocol=True)


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_header_names_the_client_and_never_reaches_the_protocol(
    nursery: trio.Nursery,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
    header: bytes,
    transport: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    server = await start_in(nursery, behind(server_config))
    async with await open_stream(address_of(server, transport)) as stream:
        await stream.send_all(header + b"A")
        assert await stream.receive_some() == b"B"  # the header was not incremented
    await trio.testing.wait_all_tasks_blocked()  # the client's task has left, and said so
    [record] = [r for r in caplog.records if "left" in r.getMessage()]
    assert "peer=203.0.113.7:4242" in record.getMessage()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_header_a_byte_at_a_time_works(
    nursery: trio.Nursery, server_config: ServerConfig, transport: str
) -> None:
    seen: list[object] = []

    async def note(conn: Connection) -> None:
        seen.append(conn.peer)
        async for data in conn:
            await conn.send_all(data)

    server = await start_in(nursery, behind(server_config), note)
    async with await open_stream(address_of(server, transport)) as stream:
        for byte in V2:
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.001)  # each its own segment
        await stream.send_all(b"hello")
        await stream.send_eof()
        assert await receive_to_eof(stream) == b"hello"
    assert seen == [TcpAddress("203.0.113.7", 4242)]


async def test_v2_local_is_served_with_the_balancer_as_the_peer(
    nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    seen: list[object] = []

    async def note(conn: Connection) -> None:
        seen.append(conn.peer)
        await conn.send_all(b"ok")

    server = await start_in(nursery, behind(server_config), note)
    async with await open_stream(address_of(server, "tcp")) as stream:
        await stream.send_all(V2_LOCAL)
        assert await receive_to_eof(stream) == b"ok"
        local = stream.socket.getsockname()
    assert seen == [TcpAddress(local[0], local[1])]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_connection_without_a_header_is_closed_and_the_others_go_on(
    nursery: trio.Nursery,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    server = await start_in(nursery, behind(server_config))
    address = address_of(server, transport)
    async with await open_stream(address) as good, await open_stream(address) as bad:
        await good.send_all(V1)
        await bad.send_all(b"A")  # no header: a client that bypassed the balancer
        # Closed, its "A" unread: an EOF, or the reset that unread input makes.
        with contextlib.suppress(trio.BrokenResourceError):
            assert await receive_to_eof(bad) == b""
        await good.send_all(b"A")
        assert await good.receive_some() == b"B"
    reasons = [str(getattr(r, "reason", "")) for r in caplog.records]
    assert any(
        reason.startswith("bad PROXY header: no PROXY protocol header") for reason in reasons
    )
    assert server.active_clients <= 1


async def test_a_header_not_complete_within_the_limit_closes_the_connection(
    nursery: trio.Nursery, server_config: ServerConfig, autojump_clock: trio.abc.Clock
) -> None:
    server = await start_in(nursery, behind(server_config))
    async with await open_stream(address_of(server, "tcp")) as stream:
        await stream.send_all(V1[:10])  # and then nothing
        started = trio.current_time()
        assert await receive_to_eof(stream) == b""
        assert trio.current_time() - started == pytest.approx(PROXY_HEADER_TIMEOUT, abs=0.1)
    assert server.stats().accepted == 1


async def test_without_the_option_a_header_is_ordinary_data(
    nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    server = await start_in(nursery, server_config)
    async with await open_stream(address_of(server, "tcp")) as stream:
        await stream.send_all(b"PROXY")
        assert await stream.receive_some() == b"QSPYZ"


def test_the_command_line_reads_the_header_and_logs_the_real_client(procs: Processes) -> None:
    server = procs.server("--proxy-protocol", "--unix", str(procs.cwd / "sock"), "--tcp", "0")
    assert exchange(server.tcp(), V2 + b"A") == b"B"
    stderr = wait_for_log(server, "left tcp:")
    assert "peer=203.0.113.7:4242" in stderr
    assert server.stop() == 0
