"""A listening socket as the server holds it, and what every way of opening one shares.

``Listener`` (the socket, its real address, and the socket file and lock it
owns), ``explain`` (an OS error as one line that says what to do: the one place
that translates them) and ``close_on_error`` (as Trio's: what was opened is
closed on every failure path, cancellation included).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol

import attrs

from trio_sock.config.addresses import Address, TcpAddress
from trio_sock.config.defaults import MAX_BACKLOG
from trio_sock.errors import ListenError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trio_sock.listen.lockfile import LockFile

_log = logging.getLogger("trio_sock.listeners")

#: Trio's own default backlog: the most there is; the kernel caps it at
#: ``net.core.somaxconn``.
DEFAULT_BACKLOG: Final = MAX_BACKLOG


class _Closeable(Protocol):
    def close(self) -> None: ...


@contextlib.contextmanager
def close_on_error(resource: _Closeable | Sequence[_Closeable]) -> Iterator[None]:
    """Close ``resource`` (each of them, for a list filled inside the block) if the
    block raises anything, cancellation included; on success leave it open."""
    try:
        yield
    except BaseException:
        for item in resource if isinstance(resource, Sequence) else [resource]:
            item.close()
        raise


def identity(found: os.stat_result) -> tuple[int, int, int]:
    """What tells our socket file from any other: device, inode, and being a socket.

    Nothing else: a chmod, chgrp, touch or hard link changes a file's metadata,
    not whose it is.  No other file can get our inode number meanwhile: the
    bound socket holds its inode until the listener closes, and ``close``
    removes the file before that.
    """
    return (found.st_dev, found.st_ino, stat.S_IFMT(found.st_mode))


def stat_in(directory: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False)
    except OSError:
        return None


@attrs.define(eq=False)
class SocketFile:
    """The socket file a listener bound, identified by inode, not by name."""

    shown: str
    name: str
    directory: int
    """The socket's directory, opened; ours to close."""
    identity: tuple[int, int, int]

    def remove(self) -> None:
        """Unlink the name if it still is the file we bound (leave anything else
        alone), then close the directory."""
        try:
            now = stat_in(self.directory, self.name)
            if now is None:
                return
            if identity(now) != self.identity:
                _log.warning("%s was replaced by another file; leaving it in place", self.shown)
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name, dir_fd=self.directory)
        finally:
            os.close(self.directory)


@attrs.define(eq=False)
class Listener:
    """A bound, listening, non-blocking socket, and the address it really has.

    Error handling:
        ``close`` never raises and may be called any number of times: the
        server calls it as soon as shutdown starts and again on every exit path.
    """

    socket: socket.socket
    """The listening socket, non-blocking; the server accepts on it directly."""
    address: Address
    """The address as bound: a TCP port of 0 is replaced by the real one."""
    _socket_file: SocketFile | None = None
    _lock: LockFile | None = None
    reuse_port: bool = attrs.field(default=False, kw_only=True)
    """A TCP socket this process opened with ``SO_REUSEPORT``: ``open_reuse_port_copy``
    may bind more to the same address."""

    def close(self) -> None:
        """Remove our socket file (first, so new clients see no server), then close."""
        if self._socket_file is not None:
            self._socket_file.remove()
            self._socket_file = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self.socket.close()


def explain(address: Address, exc: OSError, option: str | None = None) -> ListenError:
    """Translate an OS error into one line that says what to do; the one place that does.

    ``option`` is the command-line option that gave ``address``: by default ``--tcp``
    or ``--unix``, as its kind says."""
    if option is None:
        option = "--tcp" if isinstance(address, TcpAddress) else "--unix"
    if isinstance(exc, socket.gaierror):
        reason = f"cannot resolve host {address.host!r} ({exc.strerror})"  # type: ignore[union-attr]
        hint = f"use an IP address or a known host name with {option}"
    elif exc.errno == errno.EADDRINUSE:
        reason = "address already in use"
        hint = f"stop the server using it, or pick another address with {option}"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
        if isinstance(address, TcpAddress):
            hint = f"ports below 1024 need privileges; pick another port with {option}"
        else:
            hint = f"pick a directory you may write to with {option}"
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason = "this machine has no such address"
        hint = f"use 127.0.0.1, [::1], 0.0.0.0 or [::] with {option}"
    else:
        reason = exc.strerror or str(exc)
        hint = f"check the address given with {option}"
    return ListenError(f"cannot listen on {address}: {reason}; {hint}", errno=exc.errno)
