"""TCP listeners, as ``trio.open_tcp_listeners`` opens them, and with ``SO_REUSEPORT``."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

import trio

from trio_sock.config.addresses import TcpAddress
from trio_sock.listen.listener import DEFAULT_BACKLOG, Listener, close_on_error, explain
from trio_sock.trace import new_socket

if TYPE_CHECKING:
    from trio_sock.trace import Tracer


async def open_tcp_listeners(
    address: TcpAddress,
    *,
    backlog: int | None = None,
    reuse_port: bool = False,
    tracer: Tracer | None = None,
    option: str = "--tcp",
) -> list[Listener]:
    """Listen on a TCP address, as ``trio.open_tcp_listeners`` does.

    A host name may resolve to several addresses (``localhost``: ``::1`` and
    ``127.0.0.1``); each gets a listener.  Port 0 is reported as the real port.

    Args:
        address: Where to listen.
        backlog: Listen queue length; ``None`` for the most the kernel allows.
        reuse_port: Set ``SO_REUSEPORT``, so that ``open_reuse_port_copy`` (or another
            process of this user asking for it too) may bind the same address.
        tracer: ``--trace``: the socket, bind and listen calls are written.
        option: The option that gave ``address``, which an error message names.

    Raises:
        ListenError: with a message that says what to do.
    """
    if reuse_port or tracer is not None:
        return await _open_own_listeners(address, backlog, reuse_port=reuse_port, tracer=tracer)
    try:
        opened = await trio.open_tcp_listeners(address.port, host=address.host, backlog=backlog)
    except OSError as exc:
        raise explain(address, exc, option) from exc
    listeners = []
    for listener in opened:
        # The server accepts on plain non-blocking sockets, so take the fd over.
        sock = socket.socket(fileno=listener.socket.detach())
        sock.setblocking(False)
        host, port = sock.getsockname()[:2]
        listeners.append(Listener(sock, TcpAddress(host, port)))
    return listeners


async def _open_own_listeners(
    address: TcpAddress, backlog: int | None, *, reuse_port: bool, tracer: Tracer | None
) -> list[Listener]:
    """``trio.open_tcp_listeners`` again, with the calls in our hands: it has no way to
    set ``SO_REUSEPORT`` before ``bind()``, nor to trace its calls."""
    try:
        found = await trio.socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise explain(address, exc) from exc
    listeners: list[Listener] = []
    unsupported: OSError | None = None
    with close_on_error(listeners):
        for family, _, _, _, sockaddr in found:
            try:
                sock = _bind(family, sockaddr, backlog, reuse_port=reuse_port, tracer=tracer)
            except OSError as exc:
                if exc.errno != errno.EAFNOSUPPORT:
                    raise explain(address, exc) from exc
                unsupported = exc  # as Trio: fine while another family works
                continue
            host, port = sock.getsockname()[:2]
            listeners.append(Listener(sock, TcpAddress(host, port), reuse_port=reuse_port))
    if not listeners and unsupported is not None:
        raise explain(address, unsupported)
    return listeners


def _bind(
    family: int,
    sockaddr: tuple[Any, ...],
    backlog: int | None,
    *,
    reuse_port: bool = True,
    tracer: Tracer | None = None,
) -> socket.socket:
    """A non-blocking TCP socket (with ``SO_REUSEPORT``), bound to ``sockaddr`` and listening."""
    sock = new_socket(family, tracer)
    with close_on_error(sock):
        # The options trio.open_tcp_listeners sets: a restart may bind at once
        # over connections in TIME_WAIT, and [::] does not also take 0.0.0.0.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(DEFAULT_BACKLOG if backlog is None else backlog)
    sock.setblocking(False)
    return sock


def open_reuse_port_copy(listener: Listener, *, backlog: int | None = None) -> Listener:
    """Another listening socket on the very address of ``listener`` (port 0 already
    replaced by the real one), for the kernel to spread connections between them.

    Args:
        listener: A TCP listener opened with ``reuse_port=True``.
        backlog: Listen queue length of the new socket.

    Raises:
        ValueError: ``listener`` was not opened with ``SO_REUSEPORT`` by this process.
        ListenError: the kernel refused the bind (explained).
    """
    if not listener.reuse_port:
        raise ValueError(f"{listener.address} was not opened with reuse_port=True")
    try:
        sock = _bind(listener.socket.family, listener.socket.getsockname(), backlog)
    except OSError as exc:
        raise explain(listener.address, exc) from exc
    return Listener(sock, listener.address, reuse_port=True)
