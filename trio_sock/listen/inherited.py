"""Listening sockets this process inherited (``--fd``, systemd), served as they are."""

from __future__ import annotations

import errno
import logging
import socket
from typing import TYPE_CHECKING

from trio_sock.config.addresses import Address, TcpAddress, UnixAddress
from trio_sock.errors import ListenError
from trio_sock.listen.listener import Listener

if TYPE_CHECKING:
    from trio_sock.config.server import ListenFd

_log = logging.getLogger("trio_sock.listeners")


def adopt_listener(inherited: ListenFd, *, quiet: bool = False) -> Listener:
    """Serve a listening socket this process inherited (from systemd or a parent) as it is.

    Its family and type are read from the socket itself.  Nothing about its file
    is ours: no lock, no mode, and it is never removed.

    Raises:
        ListenError: the fd is not open, not a socket, not a stream socket, or not
            listening.
    """
    label = f"fd {inherited.fd}" + (f" ({inherited.name})" if inherited.name else "")
    try:
        sock = socket.socket(fileno=inherited.fd)
    except OSError as exc:
        reason = "it is not a socket" if exc.errno == errno.ENOTSOCK else exc.strerror
        raise ListenError(
            f"cannot serve {label}: {reason}; pass a listening socket's descriptor with --fd",
            errno=exc.errno,
        ) from exc
    try:
        address = _inherited_address(sock, label)
        if inherited.address is not None:
            if inherited.address.transport != address.transport:
                raise ListenError(
                    f"cannot serve {label}: it is a {address.transport} socket, not"
                    f" {inherited.address}",
                    errno=errno.EAFNOSUPPORT,
                )
            address = inherited.address
    except BaseException:
        sock.detach()  # not ours to close: leave the descriptor as it came
        raise
    sock.setblocking(False)
    if not quiet:
        _log.info("listening on %s: %s", label, address)
    return Listener(sock, address)


def check_inherited(inherited: ListenFd) -> None:
    """Check, and leave untouched, a descriptor ``adopt_listener`` will serve.

    Raises:
        ListenError: as ``adopt_listener`` would.
    """
    adopt_listener(inherited, quiet=True).socket.detach()


def _inherited_address(sock: socket.socket, label: str) -> Address:
    if sock.type != socket.SOCK_STREAM:
        kind = "datagram" if sock.type == socket.SOCK_DGRAM else str(sock.type.name)
        raise ListenError(
            f"cannot serve {label}: it is a {kind} socket, not a stream socket",
            errno=errno.EPROTOTYPE,
        )
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ListenError(
            f"cannot serve {label}: the socket is not listening; call listen() on it first",
            errno=errno.EINVAL,
        )
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):  # an abstract name comes back as bytes
            name = name.decode(errors="backslashreplace")
        if not name:
            raise ListenError(f"cannot serve {label}: the Unix socket has no name")
        return UnixAddress("@" + name[1:] if name.startswith("\0") else name)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return TcpAddress(name[0], name[1])
    raise ListenError(
        f"cannot serve {label}: it is a {sock.family.name} socket; only Unix and TCP are served",
        errno=errno.EAFNOSUPPORT,
    )
