"""echo: the smallest handler: every byte comes back as it was sent.

Serve it from this directory with every option trio_sock has, then talk to it:

    python -m trio_sock server --handler echo:handle
    nc -U server_socket            # type a line: it comes back
"""

import trio_sock


async def handle(conn: trio_sock.Connection) -> None:
    async for data in conn:
        await conn.send_all(data)
