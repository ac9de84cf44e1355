"""Stopping a ``--workers`` server serves what the kernel had already queued (the
contract's Shutdown), as one server does (``tests/server/test_shutdown_queue.py``).

Two workers share one listening socket, each held at ``--max-clients 1`` by a client
that got its reply, so that the connections after them wait in the kernel's queue,
accepted by no one; then the parent gets SIGTERM.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Final

import pytest

from tests.helpers import EVENT_TIMEOUT, assert_no_traceback, connect

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers import Processes

QUEUED: Final = 3


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_connections_queued_when_the_parent_is_stopped_are_served_not_reset(
    procs: Processes, short_tmp: Path, transport: str
) -> None:
    server = procs.server(
        "--unix", str(short_tmp / "s"), "--tcp", "0", "--workers", "2", "--max-clients", "1",
        "--grace", "10",
    )  # fmt: skip
    address = server.unix() if transport == "unix" else server.tcp()
    holders = []
    for _ in range(2):  # the second finds the first's worker full: the other one takes it
        holder = connect(address)
        holder.sendall(b"A")
        assert holder.recv(1) == b"B"
        holders.append(holder)
    queued = [connect(address) for _ in range(QUEUED)]  # every worker full: none accepts
    for sock in queued:
        sock.sendall(b"A")
    server.send_signal(signal.SIGTERM)
    for sock in queued:
        sock.settimeout(EVENT_TIMEOUT)
        assert sock.recv(1) == b"B"  # a reset would raise ConnectionResetError here
        sock.close()
    for holder in holders:
        holder.sendall(b"C")
        assert holder.recv(1) == b"D"
        holder.close()
    assert server.wait() == 0
    assert_no_traceback(server.stderr())
