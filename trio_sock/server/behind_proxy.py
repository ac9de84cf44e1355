"""``--proxy-protocol``: each client's PROXY header is read first, then it is served as usual.

A load balancer begins each connection with a header naming the real client
(``trio_sock.proxy_header``).  Reading it is all that happens before the usual
path: within ``PROXY_HEADER_TIMEOUT``, and byte-exact (the socket is peeked,
and only the header's bytes are taken, so what the client sent after it stays
for the path that serves it).  A missing, malformed or slow header ends that
connection alone, as a departure with its reason; departure records are
already rate-limited, so a flood of bad headers is no flood of logs.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Final

import trio

from trio_sock.config.addresses import TcpAddress
from trio_sock.proxy_header import ProxyHeader, ProxyHeaderError, parse
from trio_sock.server.clients import SHUTDOWN

if TYPE_CHECKING:
    from trio_sock.server.clients import ClientTask, Door

#: The contract's limit: a balancer sends its header at once; a client that does
#: not is no balancer.
PROXY_HEADER_TIMEOUT: Final = 5.0
#: The longest header there is: v2's fixed part and the most its length can say.
_LONGEST: Final = 16 + 65535


def behind_proxy(serve: ClientTask) -> ClientTask:
    """``serve``, after the client's PROXY header, with the client it names as the peer."""

    async def serve_after_header(
        conn: socket.socket, peer: object, number: int, door: Door
    ) -> None:
        try:
            with trio.fail_after(PROXY_HEADER_TIMEOUT):
                header = await _read_header(conn)
        except trio.TooSlowError:
            reason = f"no PROXY header within {PROXY_HEADER_TIMEOUT:g}s"
        except ProxyHeaderError as exc:
            reason = f"bad PROXY header: {exc}"
        except OSError as exc:  # a reset
            reason = exc.strerror or "broken"
        except BaseException:  # cancelled at shutdown: the slot and socket go back all the same
            door.left(conn, peer, number, door.arrived(conn), SHUTDOWN)
            raise
        else:
            # v2 LOCAL (a health check), UNKNOWN, or a Unix client: the balancer is the peer.
            if isinstance(header.source, TcpAddress):
                peer = (header.source.host, header.source.port)
            await serve(conn, peer, number, door)
            return
        door.left(conn, peer, number, door.arrived(conn), reason)

    return serve_after_header


async def _read_header(conn: socket.socket) -> ProxyHeader:
    """The header at the start of ``conn``'s stream; only its own bytes are taken."""
    taken = b""
    while True:
        try:
            seen = conn.recv(_LONGEST - len(taken), socket.MSG_PEEK)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(conn)
            continue
        found = parse(taken + seen)
        if found is not None:
            header, size = found
            _take(conn, size - len(taken))
            return header
        if not seen:
            raise ProxyHeaderError("the connection closed before its header was complete")
        taken += _take(conn, len(seen))  # all of it is header: the header is not complete


def _take(conn: socket.socket, size: int) -> bytes:
    """``size`` bytes that a peek has shown are there."""
    taken = b""
    while len(taken) < size:
        chunk = conn.recv(size - len(taken))
        if not chunk:  # cannot be, for bytes already seen; never a loop without end
            raise ProxyHeaderError("the connection lost bytes of its header")
        taken += chunk
    return taken
