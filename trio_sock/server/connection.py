"""``Connection``: what an async handler gets, a client as a Trio stream.

On a plain socket it is a ``PlainConnection``: a ``WatchedStream`` (a
``trio.abc.HalfCloseableStream`` that passes Trio's own conformance checks,
tries each system call before waiting, and counts every byte moved as the
client's sign of life).  Over TLS it is a ``TlsConnection``: a
``trio.abc.Stream`` (TLS has no half-close) over a ``trio.SSLStream`` over the
same.  Both say where the client came from and through which listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from trio_sock.config.addresses import TcpAddress
from trio_sock.server.peers import PeerCredentials
from trio_sock.server.watched_stream import WatchedStream

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from trio_sock.config.addresses import Address
    from trio_sock.server.stats import Tally


class Connection(trio.abc.Stream):
    """One client, as an async handler sees it: a Trio stream.

    ``async for data in conn`` reads until the client's EOF; ``send_all``
    writes; the server closes it when the handler returns.  On a plain socket
    it is also a ``trio.abc.HalfCloseableStream`` (``send_eof``); over TLS it
    is not, as TLS has no half-close.

    Error handling:
        The client leaving (a reset, a broken pipe) raises
        ``trio.BrokenResourceError``; the server closing it (idle timeout,
        shutdown) raises ``trio.ClosedResourceError``, in the pending call and
        every call after.  Either one escaping the handler is an ordinary
        departure, recorded with its reason.
    """

    __slots__ = ()

    address: Address
    """The listener's address, as the server's ready line shows it."""

    @property
    def peer(self) -> TcpAddress | PeerCredentials | None:
        """The client: its ``TcpAddress`` on TCP, its ``PeerCredentials`` (pid, uid,
        gid) on a Unix socket; ``None`` for an inherited socket of another family."""
        raise NotImplementedError

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise NotImplementedError


class PlainConnection(WatchedStream, Connection):
    """A client on a plain TCP or Unix socket: a half-closeable stream."""

    __slots__ = ("_peer", "_peer_known", "address")

    def __init__(
        self,
        sock: socket.socket,
        tally: Tally,
        clock: Callable[[], float],
        *,
        address: Address,
        peer: object,
        count: bool = True,
    ) -> None:
        """``peer`` is what ``accept`` gave (or the Unix peer's credentials, if the
        peer policy asked for them); ``Connection.peer`` is made of it on first use,
        which most handlers never make: a ``TcpAddress`` is validated, and a Unix
        peer's credentials cost a system call."""
        super().__init__(sock, tally, clock, count=count)
        self.address = address
        self._peer = peer
        self._peer_known = isinstance(peer, PeerCredentials)

    @property
    def peer(self) -> TcpAddress | PeerCredentials | None:
        if not self._peer_known:
            self._peer, self._peer_known = _peer_of(self.socket, self._peer), True
        return self._peer  # type: ignore[return-value]

    async def aclose(self) -> None:
        # The kernel tells a Unix peer's credentials only while the socket is open,
        # and a handler may still ask for them after closing it.
        if not self._peer_known and self.socket.fileno() != -1:
            self._peer, self._peer_known = _peer_of(self.socket, self._peer), True
        await super().aclose()


def _peer_of(sock: socket.socket, peer: object) -> TcpAddress | PeerCredentials | None:
    """The client as ``Connection.peer`` names it, from what ``accept`` gave."""
    if isinstance(peer, tuple):
        return TcpAddress(peer[0], peer[1])
    try:
        return PeerCredentials.of(sock)  # a Unix socket: accept gave no address worth a name
    except OSError:  # not a Unix socket: an inherited one of another family
        return None


class TlsConnection(Connection):
    """A client speaking TLS, once its handshake is done: what it sends, decrypted.

    The bytes counted (``Tally``) are the ones the handler sees, not the records.
    """

    def __init__(self, tls: trio.SSLStream[PlainConnection], tally: Tally) -> None:
        self.tls = tls
        """The TLS stream, for what it knows of the session (``tls.ssl_object``)."""
        self._tally = tally
        self.address = tls.transport_stream.address

    @property
    def peer(self) -> TcpAddress | PeerCredentials | None:
        return self.tls.transport_stream.peer

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.tls.send_all(data)
        self._tally.sent += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.tls.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.tls.receive_some(max_bytes)
        self._tally.received += len(data)
        return bytes(data)  # handlers are given bytes; SSLStream gives a bytearray

    async def aclose(self) -> None:
        await self.tls.aclose()
