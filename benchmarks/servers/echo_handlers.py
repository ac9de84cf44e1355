"""Echo handlers for trio_sock, one of each kind, for benchmarks/perf.py.

python -m trio_sock server --handler echo_handlers:Echo          # sans-I/O
python -m trio_sock server --handler echo_handlers:echo          # async, on Connection
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio_sock


class Echo:
    """Every chunk back unchanged, on the fast path: a sans-I/O class."""

    __slots__ = ()
    done = False

    def data_received(self, data: bytes) -> bytes:
        return data


async def echo(conn: trio_sock.Connection) -> None:
    """Every chunk back unchanged: the obvious async handler."""
    async for data in conn:
        await conn.send_all(data)
