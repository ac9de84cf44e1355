"""The rows of README's comparison table that concern other libraries, checked here.

Each test runs the other library as a user would, on this interpreter, and
asserts what the table says of it; if a new release changes its behaviour,
the test fails and the table must change with it.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import TYPE_CHECKING

import pytest
import trio

from trio_sock import ListenError, ServerConfig, UnixAddress, serve

if TYPE_CHECKING:
    from pathlib import Path


def answers(path: Path) -> bool:
    """Whether something accepts connections on the socket file ``path``."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def test_trio_has_no_unix_listener_of_its_own() -> None:
    # python-trio/trio#279: open_tcp_listeners and serve_tcp, but no Unix counterpart.
    assert hasattr(trio, "serve_tcp")
    assert not hasattr(trio, "open_unix_listener")
    assert not hasattr(trio, "serve_unix")


def test_asyncio_takes_a_live_servers_socket_file_and_trio_sock_does_not(
    short_tmp: Path,
) -> None:
    path = short_tmp / "sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    try:

        async def asyncio_server() -> None:
            server = await asyncio.start_unix_server(lambda r, w: None, str(path))
            server.close()
            await server.wait_closed()

        asyncio.run(asyncio_server())  # no error: it unlinked the live server's file
        assert not answers(path), "the live server's socket file was replaced"
    finally:
        live.close()

    path.unlink(missing_ok=True)
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    try:

        async def trio_sock_server() -> None:
            await serve(ServerConfig(addresses=[UnixAddress(str(path))]))

        with pytest.raises(ListenError, match="a server is already listening there"):
            trio.run(trio_sock_server)
        assert answers(path), "trio_sock left the live server alone"
    finally:
        live.close()


def test_asyncio_leaves_its_socket_file_behind_at_exit_on_this_python(short_tmp: Path) -> None:
    path = short_tmp / "sock"

    async def asyncio_server() -> None:
        server = await asyncio.start_unix_server(lambda r, w: None, str(path))
        server.close()
        await server.wait_closed()

    asyncio.run(asyncio_server())
    # Python 3.13 added cleanup_socket=True; before it, the file stays.
    if sys.version_info >= (3, 13):
        assert not path.exists()
    else:
        assert path.exists()


async def test_trio_sock_removes_its_socket_file_at_exit(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, ServerConfig(addresses=[UnixAddress(str(path))]))
        assert path.exists()
        server.stop()
    assert not path.exists()
