"""The server's figures, by listener (``Server.stats_by_listener``) and in all (``stats``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import trio
import trio.testing

from tests.helpers import address_of, open_stream
from trio_sock import Server, ServerStats

if TYPE_CHECKING:
    import pytest


async def exchange_on(server: Server, transport: str, data: bytes) -> None:
    async with await open_stream(address_of(server, transport)) as stream:
        await stream.send_all(data)
        received = b""
        while len(received) < len(data):
            received += await stream.receive_some()


async def test_each_listener_counts_its_own_clients(server: Server) -> None:
    await exchange_on(server, "unix", b"AB")
    await exchange_on(server, "tcp", b"ABC")
    await exchange_on(server, "tcp", b"ABCD")
    held = await open_stream(address_of(server, "tcp"))
    async with held:
        await held.send_all(b"xyz")
        assert await held.receive_some() == b"yz{"
        unix, tcp = server.addresses
        by_listener = server.stats_by_listener()
        assert list(by_listener) == [unix, tcp]
        assert by_listener[unix] == ServerStats(
            accepted=1, active=0, refused=0, dropped_idle=0, bytes_in=2, bytes_out=2,
            accept_errors=0,
        )  # fmt: skip
        # The held client's bytes count while it is still connected.
        assert by_listener[tcp] == ServerStats(
            accepted=3, active=1, refused=0, dropped_idle=0, bytes_in=10, bytes_out=10,
            accept_errors=0,
        )  # fmt: skip
        assert server.stats() == ServerStats.total(by_listener.values())
        assert (server.accepted, server.active_clients) == (4, 1)


async def test_clients_are_numbered_across_listeners(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "trio_sock.clients")  # a record for every departure
    for transport in ("unix", "tcp", "unix"):
        await exchange_on(server, transport, b"A")
    await trio.testing.wait_all_tasks_blocked()
    records = [r for r in caplog.records if r.name == "trio_sock.clients"]
    numbers = {r.__dict__["client"]: r.__dict__["listener"].split(":")[0] for r in records}
    assert numbers == {1: "unix", 2: "tcp", 3: "unix"}
    assert [s.accepted for s in server.stats_by_listener().values()] == [2, 1]


def test_a_total_adds_every_figure() -> None:
    names = [field.name for field in attrs.fields(ServerStats)]
    one = ServerStats(**{name: i + 1 for i, name in enumerate(names)})
    two = ServerStats(**{name: 10 * (i + 1) for i, name in enumerate(names)})
    total = ServerStats.total([one, two])
    assert [getattr(total, name) for name in names] == [11 * (i + 1) for i in range(len(names))]
    assert ServerStats.total([]) == ServerStats(**dict.fromkeys(names, 0))
