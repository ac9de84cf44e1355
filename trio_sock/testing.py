"""For your own tests: run a server with your handler, talk to it, stop it.

In a pytest-trio test (or any Trio code)::

    from trio_sock.testing import serving

    async def test_my_echo() -> None:
        async with serving(echo) as server:
            async with await trio_sock.open_stream(server.addresses[0]) as stream:
                await stream.send_all(b"hi")
                assert await stream.receive_some() == b"hi"

``serving`` listens on a Unix socket in a fresh temporary directory and on a
free loopback TCP port (``server.addresses``, in that order), and stops the
server and removes the directory when the block ends.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trio_sock.config.addresses import TcpAddress, UnixAddress
from trio_sock.config.server import ServerConfig
from trio_sock.server.serve import Server, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio_sock.server.handlers import Handler


@contextlib.asynccontextmanager
async def serving(
    handler: Handler | None = None,
    config: ServerConfig | None = None,
    **changes: Any,  # noqa: ANN401 - any field of ServerConfig, checked by attrs.evolve
) -> AsyncIterator[Server]:
    """Serve ``handler`` for the length of an ``async with`` block.

    Args:
        handler: An async handler or a sans-I/O protocol class; ``None`` for the
            increment protocol.
        config: Settings to start from (its addresses are replaced); by default
            ``ServerConfig()``, with a one-second grace.
        changes: Fields of ``config`` to change, as ``attrs.evolve`` takes them
            (``idle_timeout=0.5``, ``max_clients=1``...).

    Yields:
        The running server: ``addresses[0]`` is its Unix socket, ``addresses[1]``
        its TCP address, with the real port.
    """
    # /tmp rather than $TMPDIR: a Unix socket's path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="trio-sock-", dir=_short_temp()) as directory:
        base = config if config is not None else ServerConfig(grace=1.0)
        addresses = (UnixAddress(str(Path(directory) / "sock")), TcpAddress("127.0.0.1", 0))
        settings = attrs.evolve(base, addresses=addresses, **changes)
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(serve, settings, handler)
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()


def _short_temp() -> str | None:
    default = tempfile.gettempdir()
    return "/tmp" if len(default) > 60 and Path("/tmp").is_dir() else None
