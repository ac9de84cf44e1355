"""``listen.queue.queued``: the kernel's count of connections waiting to be accepted."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from trio_sock.listen.queue import queued

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("family", [socket.AF_UNIX, socket.AF_INET])
def test_queued_counts_connections_not_yet_accepted(short_tmp: Path, family: int) -> None:
    address = str(short_tmp / "sock") if family == socket.AF_UNIX else ("127.0.0.1", 0)
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind(address)
        listener.listen(8)
        assert queued(listener) == 0
        clients = [socket.socket(family, socket.SOCK_STREAM) for _ in range(3)]
        try:
            for client in clients:
                client.connect(listener.getsockname())
            assert queued(listener) == 3
            listener.accept()[0].close()
            assert queued(listener) == 2
        finally:
            for client in clients:
                client.close()
