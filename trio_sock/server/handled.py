"""A client served by the user's async handler, from accept to close.

The handler gets a ``Connection`` and runs in the client's own task; whatever
ends it (returning, the client leaving, the server closing the connection, a
bug) goes through ``Door.left`` with its reason, as on every other path.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from trio_sock.config.addresses import TcpAddress
from trio_sock.errors import why_broken
from trio_sock.server.clients import DONE, IDLE_TIMEOUT, SHUTDOWN
from trio_sock.server.connection import PlainConnection, TlsConnection
from trio_sock.server.goodbye import close_gently
from trio_sock.server.stream import say_goodbye, start_tls

if TYPE_CHECKING:
    import socket

    from trio_sock.server.clients import Door
    from trio_sock.server.handlers import AsyncHandler
    from trio_sock.server.stats import Tally


async def serve_handled_client(conn: socket.socket, peer: object, number: int, door: Door) -> None:
    """Run the server's async handler on one client; never raise but ``Cancelled``.

    The arguments are ``fast.serve_plain_client``'s.
    """
    tally = door.arrived(conn)
    reason = SHUTDOWN
    handler = door.context.handler
    assert handler is not None  # this path is chosen for servers that have one
    try:
        reason = await _run(handler, conn, peer, door, tally)
    except Exception as exc:
        reason = _departure(exc, tally) or door.failed(number, exc)
    finally:
        door.left(conn, peer, number, tally, reason)


async def _run(
    handler: AsyncHandler, conn: socket.socket, peer: object, door: Door, tally: Tally
) -> str:
    """Run ``handler`` on the client, over TLS if its listener speaks it; why it ended."""
    context = door.context
    secure = context.tls is not None and isinstance(door.address, TcpAddress)
    plain = PlainConnection(
        conn,
        tally,
        context.clock,
        address=door.address,
        peer=peer,
        count=not secure,
    )
    if not secure:
        await handler(plain)
        if tally.idle:
            return IDLE_TIMEOUT
        # Unless the client has finished already, or the handler closed it itself.
        if not tally.finished and conn.fileno() != -1:
            tally.alive = math.inf  # the server's time, not the client's idleness
            await close_gently(conn, context.linger)
        return DONE
    assert context.tls is not None
    tls, reason = await start_tls(plain, context.tls, context.config.tls_handshake_timeout)
    if tls is None:
        return reason
    await handler(TlsConnection(tls, tally))
    if tally.idle:
        return IDLE_TIMEOUT
    await say_goodbye(tls, context.linger)  # close_notify: the replies are whole
    return DONE


def _departure(exc: Exception, tally: Tally) -> str | None:
    """Why the client left, if ``exc`` says it left (or was closed) rather than a bug.

    The errors the connection itself raises (``BrokenResourceError``: the client
    went away; ``ClosedResourceError``: the server closed it) are ordinary ends,
    also when a handler's own nursery wraps them in a group.
    """
    if isinstance(exc, BaseExceptionGroup):
        ends, bugs = exc.split((trio.BrokenResourceError, trio.ClosedResourceError))
        if ends is None or bugs is not None:
            return None
        first: BaseException = ends
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        return _departure(first, tally) if isinstance(first, Exception) else None
    if isinstance(exc, trio.BrokenResourceError):
        return why_broken(exc)
    if isinstance(exc, trio.ClosedResourceError):
        return IDLE_TIMEOUT if tally.idle else DONE
    return None
