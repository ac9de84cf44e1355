"""Closing a connection the server is done with, without resetting away its last reply.

Closing a socket with unread input makes the kernel reset the connection, and
a reset can destroy the reply before the client reads it.  So when the server,
not the client, ends a conversation (a protocol's ``done``, a handler that
returns, the book's ``--once``), it sends its EOF first and discards what the
client still sends, for a little while (``LINGER_TIME``, ``LINGER_BYTES``),
until the client's own EOF.  This is that, on the raw socket; ``--once``
does the same over its Trio stream (``stream._close_gently``), where the
bytes it discards are counted as the client's.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from trio_sock.config.server import ServerConfig

#: After the server's last reply, how long and how much of the client's remaining
#: input to discard before closing: plenty for a line piped into nc, too little for
#: a client to hold its slot.
LINGER_TIME: Final = 2.0
LINGER_BYTES: Final = 1024 * 1024
#: Read size while discarding.
_DISCARD_SIZE: Final = 65536


def linger(config: ServerConfig) -> float:
    """How long to wait for a goodbye: never longer than the client may idle."""
    return min(LINGER_TIME, config.idle_timeout)


async def close_gently(conn: socket.socket, linger: float) -> None:
    """Send EOF on ``conn`` (a plain socket), then discard its input until the client's
    EOF, ``LINGER_BYTES`` or ``linger`` seconds; the caller closes it after."""
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        return  # gone already: nothing left to protect
    discarded = 0
    with trio.move_on_after(linger):
        while discarded < LINGER_BYTES:
            data = _receive(conn)
            if data is None:
                await trio.lowlevel.wait_readable(conn)
                continue
            if not data:
                return
            discarded += len(data)


def _receive(conn: socket.socket) -> bytes | None:
    """What ``conn`` holds (``b""`` at EOF or on an error), or None if nothing yet."""
    try:
        return conn.recv(_DISCARD_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""
