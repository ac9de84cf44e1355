from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import Processes
from trio_sock import Server, ServerConfig, TcpAddress, UnixAddress, serve

if TYPE_CHECKING:
    from collections.abc import Iterator

    import trio


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh directory with a short path: Unix socket paths must fit in 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def procs(short_tmp: Path) -> Iterator[Processes]:
    """Start subprocesses in ``short_tmp``; none outlives the test, whatever its outcome."""
    processes = Processes(short_tmp)
    try:
        yield processes
    finally:
        processes.cleanup()


@pytest.fixture
def server_config(short_tmp: Path) -> ServerConfig:
    """A config with one Unix socket in ``short_tmp`` and TCP on a free loopback port."""
    return ServerConfig(
        addresses=(UnixAddress(str(short_tmp / "sock")), TcpAddress("127.0.0.1", 0)),
        grace=1.0,
    )


@pytest.fixture
async def server(nursery: trio.Nursery, server_config: ServerConfig) -> Server:
    """A server running in the test's nursery; cancelled when the test ends."""
    running: Server = await nursery.start(serve, server_config)
    return running
