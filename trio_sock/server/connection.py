"""``Connection``: what an async handler gets, a client as a Trio stream.

A ``WatchedStream`` (a ``trio.abc.HalfCloseableStream`` that passes Trio's own
conformance checks, tries each system call before waiting, and counts every
byte moved as the client's sign of life) that also says where the client came
from and through which listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio_sock.server.watched_stream import WatchedStream

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from trio_sock.config.addresses import Address, TcpAddress
    from trio_sock.server.peers import PeerCredentials
    from trio_sock.server.stats import Tally


class Connection(WatchedStream):
    """One client, as an async handler sees it: a half-closeable Trio stream.

    ``async for data in conn`` reads until the client's EOF; ``send_all`` writes;
    ``send_eof`` half-closes; the server closes it when the handler returns.

    Error handling:
        The client leaving (a reset, a broken pipe) raises
        ``trio.BrokenResourceError``; the server closing it (idle timeout,
        shutdown) raises ``trio.ClosedResourceError``, in the pending call and
        every call after.  Either one escaping the handler is an ordinary
        departure, recorded with its reason.
    """

    def __init__(
        self,
        sock: socket.socket,
        tally: Tally,
        clock: Callable[[], float],
        *,
        address: Address,
        peer: TcpAddress | PeerCredentials | None,
    ) -> None:
        super().__init__(sock, tally, clock)
        self.address = address
        """The listener's address, as the server's ready line shows it."""
        self.peer = peer
        """The client: its ``TcpAddress`` on TCP, its ``PeerCredentials`` (pid, uid,
        gid) on a Unix socket; ``None`` for an inherited socket of another family."""
