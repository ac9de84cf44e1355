"""Open the listening sockets: Unix-domain (with all socket-file safety) and TCP.

Every rule about socket files lives here and only here:

- the socket's directory is opened once; every later step names files relative
  to that descriptor, so a path component swapped meanwhile changes nothing;
- one server per path: each holds an exclusive lock on ``PATH.lock`` for its
  whole life (see ``lockfile``), taken first, so two started at once cannot both win;
- a path that exists and is not a socket is never touched;
- a live server's socket is never taken over: the kernel's list of listening
  sockets (``unix_diag``) says so without disturbing it; only a socket it does
  not list (or when it cannot be asked) is probed with ``connect()``; a stale
  file (nothing accepts on it) is replaced, with a warning;
- the socket is bound in a private directory of ours (see ``private_dir``),
  created with ``--socket-mode`` already applied (umask, then ``chmod``), given
  to ``--socket-group``, all before ``listen()``; no ``chmod``/``chown`` is ever
  done by a name someone else could replace with a symlink;
- then it is ``link()``-ed to the path if the path was free (nothing is ever
  overwritten), or ``rename()``-d over the very stale socket probed (swapped
  atomically, with no moment when the path is missing): the file never exists
  with wider permissions than asked;
- a directory that others may write to without the sticky bit (anyone, or a
  group that is not one of the server's) gets a warning: they could replace the
  socket there;
- at exit the file is removed only if the path still names the socket we bound.

Trio has no Unix listener of its own (python-trio/trio#279), hence this module.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from trio_sock.config.addresses import Address, TcpAddress, UnixAddress
from trio_sock.config.defaults import MAX_BACKLOG
from trio_sock.errors import ListenError
from trio_sock.listen import unix_diag
from trio_sock.listen.lockfile import LockFile
from trio_sock.listen.private_dir import PrivateDirectory

if TYPE_CHECKING:
    from trio_sock.config.server import ListenFd, ServerConfig

_log = logging.getLogger("trio_sock.listeners")

#: ``sun_path`` is 108 bytes on Linux, and a path needs its terminating NUL
#: (an abstract name has a leading NUL instead): 107 bytes of name either way.
#: The socket is bound by a short path of its own, but clients connect by this one.
SUN_PATH_MAX: Final = 107
#: Trio's own default backlog: the most there is; the kernel caps it at
#: ``net.core.somaxconn``.
DEFAULT_BACKLOG: Final = MAX_BACKLOG


def _identity(found: os.stat_result) -> tuple[int, int, int]:
    """What tells our socket file from any other: device, inode, and being a socket.

    Nothing else: a chmod, chgrp, touch or hard link changes a file's metadata,
    not whose it is.  No other file can get our inode number meanwhile: the
    bound socket holds its inode until the listener closes, and ``close``
    removes the file before that.
    """
    return (found.st_dev, found.st_ino, stat.S_IFMT(found.st_mode))


def _stat_in(directory: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False)
    except OSError:
        return None


@attrs.define(eq=False)
class _SocketFile:
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
            now = _stat_in(self.directory, self.name)
            if now is None:
                return
            if _identity(now) != self.identity:
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
    _socket_file: _SocketFile | None = None
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
            self._lock.release()
            self._lock = None
        self.socket.close()


def _explain(address: Address, exc: OSError) -> ListenError:
    """Translate an OS error into one line that says what to do; the one place that does."""
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


def _check_fits(address: UnixAddress) -> None:
    name = address.path[1:] if address.is_abstract else address.path
    size = len(os.fsencode(name))
    if size > SUN_PATH_MAX:
        raise ListenError(
            f"cannot listen on {address}: the path is {size} bytes, longer than the"
            f" {SUN_PATH_MAX} a Unix socket address can hold; use a shorter path with --unix",
            errno=errno.ENAMETOOLONG,
        )


def _open_directory(address: UnixAddress) -> int:
    """Open the socket's directory, once: ``O_PATH`` needs no read permission on it,
    only search, as ``bind()`` itself."""
    directory = os.path.dirname(address.path) or "."
    shown = os.path.dirname(address.display) or "."
    try:
        return os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ListenError(
            f"cannot listen on {address}: {shown!r} does not exist;"
            " create it first, or pick another path with --unix",
            errno=errno.ENOENT,
        ) from None
    except NotADirectoryError:
        raise ListenError(
            f"cannot listen on {address}: {shown!r} is not a directory;"
            " pick another path with --unix",
            errno=errno.ENOTDIR,
        ) from None
    except OSError as exc:
        raise _explain(address, exc) from exc


def _probe(address: UnixAddress, directory: int, name: str) -> os.stat_result | None:
    """Probe what is at the path: the stale socket's ``lstat``, or None for nothing.

    Raises:
        ListenError: the path is not a socket, a server accepts on it, or the OS
            refuses to tell (explained).
    """
    try:
        found = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _explain(address, exc) from exc
    if not stat.S_ISSOCK(found.st_mode):
        raise ListenError(
            f"cannot listen on {address}: {address.display!r} exists and is not a socket, so"
            " it is left alone; remove it yourself, or pick another path with --unix",
            errno=errno.EEXIST,
        )
    if not _kernel_lists(found) and not _answers_connect(address):
        return found
    raise ListenError(
        f"cannot listen on {address}: a server is already listening there;"
        " stop it first, or pick another path with --unix",
        errno=errno.EADDRINUSE,
    )


def _kernel_lists(found: os.stat_result) -> bool:
    """True if the kernel says a socket listens on this file (see ``unix_diag``)."""
    try:
        return unix_diag.file_key(found) in unix_diag.listening_files()
    except (OSError, unix_diag.UnixDiagError) as exc:
        _log.debug("cannot ask the kernel which Unix sockets listen (%s); connecting", exc)
        return False


def _answers_connect(address: UnixAddress) -> bool:
    """The old probe, for what the kernel's list cannot show: a server in another
    network namespace, or a kernel that would not answer.  The kernel does not list
    this socket, so in all likelihood nothing is listening and the connect is refused."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        # Non-blocking: a live server with a full listen queue answers EAGAIN
        # instead of making us wait; that still means somebody is listening.
        probe.setblocking(False)
        try:
            probe.connect(address.path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False  # a file gone since the lstat: the link() will see what is there
        except BlockingIOError:
            pass
        except PermissionError as exc:
            raise ListenError(
                f"cannot listen on {address}: a socket is there that this user may not"
                " connect to, perhaps another user's live server; stop it, or pick another"
                " path with --unix",
                errno=exc.errno,
            ) from exc
        except OSError as exc:
            raise _explain(address, exc) from exc
    return True


def _warn_if_others_may_replace(address: UnixAddress, directory: int) -> None:
    try:
        found = os.fstat(directory)
    except OSError:
        return
    if found.st_mode & stat.S_ISVTX:  # only a file's owner may then remove or rename it
        return
    if found.st_mode & stat.S_IWOTH:
        who, they = "anyone", "anyone"
    elif found.st_mode & stat.S_IWGRP and found.st_gid not in {os.getegid(), *os.getgroups()}:
        who, they = f"members of group {found.st_gid}", "they"
    else:
        return
    _log.warning(
        "%s may write to %s and it is not sticky (chmod +t): %s could replace the socket"
        " there; prefer a directory only the server's user may write to",
        who,
        os.path.abspath(os.path.dirname(address.display) or "."),
        they,
    )


def open_unix_listener(
    address: UnixAddress,
    *,
    backlog: int | None = None,
    mode: int = 0o600,
    group: int | None = None,
) -> Listener:
    """Bind and listen on a Unix socket, following every rule in this module's docstring.

    Every call here is a local system call that does not block, so the
    function is synchronous.

    Args:
        address: The socket file or ``@abstract`` name.
        backlog: Listen queue length; ``None`` for the most the kernel allows.
        mode: Permission bits for the socket file (ignored for abstract names).
        group: Group id to give the socket file, or ``None`` to keep the process's.

    Returns:
        The listener; its ``close()`` removes the file if it is still ours.

    Raises:
        ListenError: with a message that says what to do.
    """
    _check_fits(address)
    queue = DEFAULT_BACKLOG if backlog is None else backlog
    if address.is_abstract:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.sockaddr)
            sock.listen(queue)
        except OSError as exc:
            sock.close()
            raise _explain(address, exc) from exc
        sock.setblocking(False)
        return Listener(sock, address)

    directory = _open_directory(address)
    try:
        _warn_if_others_may_replace(address, directory)
        try:
            lock = LockFile.acquire(address, directory=directory)
        except ListenError:
            raise
        except OSError as exc:
            raise _explain(address, exc) from exc
        try:
            return _bind_socket_file(address, directory, queue, mode, group, lock)
        except BaseException:
            lock.release()
            raise
    except BaseException:
        os.close(directory)
        raise


def _bind_socket_file(
    address: UnixAddress, directory: int, queue: int, mode: int, group: int | None, lock: LockFile
) -> Listener:
    """The rest of ``open_unix_listener``; the listener returned owns ``directory``."""
    name = os.path.basename(address.path)
    stale = _probe(address, directory, name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        shown = os.path.dirname(address.display) or "."
        with PrivateDirectory.make(address, directory, shown) as private:
            private.bind(sock, mode)
            if group is not None:
                _give_to_group(address, private, group)
            private.chmod(mode)
            sock.listen(queue)
            bound = _identity(private.stat())
            _move_into_place(address, directory, name, private, stale)
        if _stat_in(directory, name) is None:
            raise ListenError(
                f"cannot listen on {address}: {address.display!r} vanished while the server"
                " was starting; retry",
                errno=errno.ENOENT,
            )
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError) and not isinstance(exc, ListenError):
            raise _explain(address, exc) from exc
        raise
    if stale:
        _log.warning(
            "replaced the stale socket file %s (nothing was accepting on it)", address.display
        )
    sock.setblocking(False)
    return Listener(sock, address, _SocketFile(address.display, name, directory, bound), lock)


def _move_into_place(
    address: UnixAddress,
    directory: int,
    name: str,
    private: PrivateDirectory,
    stale: os.stat_result | None,
) -> None:
    """Give the bound socket its name, never over anything but the stale socket probed.

    The lock keeps other trio_sock servers out, but not other programs: between
    the probe and now, something may have appeared at the path.
    """
    now = None if stale is None else _stat_in(directory, name)
    if stale is None or now is None:
        try:
            private.link_to(name)  # fails, atomically, if the path exists
        except FileExistsError:
            raise ListenError(
                f"cannot listen on {address}: something appeared at {address.display!r} while"
                " the server was starting; it is left alone: check what it is, then retry",
                errno=errno.EEXIST,
            ) from None
        return
    # Nothing holds a stale socket's inode, so its number may go to a file made
    # after an unlink: the ctime tells them apart.
    if (_identity(now), now.st_ctime_ns) == (_identity(stale), stale.st_ctime_ns):
        private.rename_to(name)  # swaps the stale socket atomically
    else:
        raise ListenError(
            f"cannot listen on {address}: {address.display!r} changed while the server was"
            " starting; it is left alone: check what it is, then retry",
            errno=errno.EBUSY,
        )


def _give_to_group(address: UnixAddress, private: PrivateDirectory, group: int) -> None:
    try:
        private.chown(group)
    except PermissionError as exc:
        raise ListenError(
            f"cannot listen on {address}: cannot give the socket file to group {group}"
            f" ({exc.strerror}); the server's user must be a member of it",
            errno=exc.errno,
        ) from exc


async def open_tcp_listeners(
    address: TcpAddress, *, backlog: int | None = None, reuse_port: bool = False
) -> list[Listener]:
    """Listen on a TCP address, as ``trio.open_tcp_listeners`` does.

    A host name may resolve to several addresses (``localhost``: ``::1`` and
    ``127.0.0.1``); each gets a listener.  Port 0 is reported as the real port.

    Args:
        address: Where to listen.
        backlog: Listen queue length; ``None`` for the most the kernel allows.
        reuse_port: Set ``SO_REUSEPORT``, so that ``open_reuse_port_copy`` (or another
            process of this user asking for it too) may bind the same address.

    Raises:
        ListenError: with a message that says what to do.
    """
    if reuse_port:
        return await _open_reuse_port_listeners(address, backlog)
    try:
        opened = await trio.open_tcp_listeners(address.port, host=address.host, backlog=backlog)
    except OSError as exc:
        raise _explain(address, exc) from exc
    listeners = []
    for listener in opened:
        # The server accepts on plain non-blocking sockets, so take the fd over.
        sock = socket.socket(fileno=listener.socket.detach())
        sock.setblocking(False)
        host, port = sock.getsockname()[:2]
        listeners.append(Listener(sock, TcpAddress(host, port)))
    return listeners


async def _open_reuse_port_listeners(address: TcpAddress, backlog: int | None) -> list[Listener]:
    """``trio.open_tcp_listeners``, which has no way to set a socket option before
    ``bind()``, again with ``SO_REUSEPORT``."""
    try:
        found = await trio.socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise _explain(address, exc) from exc
    listeners: list[Listener] = []
    unsupported: OSError | None = None
    try:
        for family, _, _, _, sockaddr in found:
            try:
                sock = _bind_reuse_port(family, sockaddr, backlog)
            except OSError as exc:
                if exc.errno != errno.EAFNOSUPPORT:
                    raise _explain(address, exc) from exc
                unsupported = exc  # as Trio: fine while another family works
                continue
            host, port = sock.getsockname()[:2]
            listeners.append(Listener(sock, TcpAddress(host, port), reuse_port=True))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    if not listeners and unsupported is not None:
        raise _explain(address, unsupported)
    return listeners


def _bind_reuse_port(family: int, sockaddr: tuple[Any, ...], backlog: int | None) -> socket.socket:
    """A non-blocking TCP socket with ``SO_REUSEPORT``, bound to ``sockaddr`` and listening."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # The options trio.open_tcp_listeners sets: a restart may bind at once
        # over connections in TIME_WAIT, and [::] does not also take 0.0.0.0.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(DEFAULT_BACKLOG if backlog is None else backlog)
    except BaseException:
        sock.close()
        raise
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
        sock = _bind_reuse_port(listener.socket.family, listener.socket.getsockname(), backlog)
    except OSError as exc:
        raise _explain(listener.address, exc) from exc
    return Listener(sock, listener.address, reuse_port=True)


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


async def open_listeners(config: ServerConfig) -> list[Listener]:
    """Open every listener of ``config``, in order: all of them, or none.

    Raises:
        ListenError: for the first address that fails; those already open are closed
            (and their socket files removed) first.
    """
    listeners: list[Listener] = []
    try:
        for address in config.addresses:
            if isinstance(address, UnixAddress):
                listeners.append(
                    open_unix_listener(
                        address,
                        backlog=config.backlog,
                        mode=config.socket_mode,
                        group=config.socket_group,
                    )
                )
            else:
                listeners += await open_tcp_listeners(
                    address, backlog=config.backlog, reuse_port=config.reuse_port
                )
        for inherited in config.listen_fds:
            listeners.append(adopt_listener(inherited))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners
