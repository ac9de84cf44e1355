"""Stopping serves what the kernel had already queued (the contract's Shutdown).

A server is held at ``max_clients=1`` by one silent client, so that a known
number of connections wait in the kernel's listen queue; then it is stopped.
Closing the listener would reset them, and a load balancer cannot retry a
connection it saw accepted: they must be taken and served within the grace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs
import pytest
import trio
import trio.testing

from tests.helpers import address_of, open_stream, start_in

if TYPE_CHECKING:
    from trio_sock import ServerConfig

TRANSPORTS: Final = ("unix", "tcp")
QUEUED: Final = 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connections_queued_when_the_server_stops_are_served_not_reset(
    nursery: trio.Nursery, server_config: ServerConfig, transport: str
) -> None:
    server = await start_in(nursery, attrs.evolve(server_config, max_clients=1, grace=5.0))
    address = address_of(server, transport)
    async with await open_stream(address) as holder:  # takes the only slot
        queued = [await open_stream(address) for _ in range(QUEUED)]
        for stream in queued:
            await stream.send_all(b"A")
        await trio.testing.wait_all_tasks_blocked()
        assert server.stats().accepted == 1  # the others wait in the kernel's queue
        server.stop()
        for stream in queued:
            with trio.fail_after(5):
                assert await stream.receive_some() == b"B"
            await stream.aclose()
        await holder.send_all(b"A")
        assert await holder.receive_some() == b"B"
        assert server.stats().accepted == 1 + QUEUED
        # Only a connection after the listener closed is refused (a balancer retries it).
        with pytest.raises(OSError, match=r"No such file|all attempts to connect"):
            await open_stream(address)
