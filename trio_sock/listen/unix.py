"""Unix-domain listeners, and every rule about socket files.

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

import errno
import logging
import os
import socket
import stat
from typing import TYPE_CHECKING, Final

import attrs

from trio_sock.errors import ListenError
from trio_sock.listen import unix_diag
from trio_sock.listen.listener import (
    DEFAULT_BACKLOG,
    Listener,
    SocketFile,
    close_on_error,
    explain,
    identity,
    stat_in,
)
from trio_sock.listen.lockfile import LockFile
from trio_sock.listen.private_dir import PrivateDirectory
from trio_sock.trace import new_socket, quoted

if TYPE_CHECKING:
    from trio_sock.config.addresses import UnixAddress
    from trio_sock.trace import Tracer

_log = logging.getLogger("trio_sock.listeners")


@attrs.frozen
class _Descriptor:
    """An open directory descriptor, closeable as the other resources are."""

    fd: int

    def close(self) -> None:
        os.close(self.fd)


#: ``sun_path`` is 108 bytes on Linux, and a path needs its terminating NUL
#: (an abstract name has a leading NUL instead): 107 bytes of name either way.
#: The socket is bound by a short path of its own, but clients connect by this one.
SUN_PATH_MAX: Final = 107


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
        raise explain(address, exc) from exc


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
        raise explain(address, exc) from exc
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
            raise explain(address, exc) from exc
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
    tracer: Tracer | None = None,
) -> Listener:
    """Bind and listen on a Unix socket, following every rule in this module's docstring.

    Every call here is a local system call that does not block, so the
    function is synchronous.

    Args:
        address: The socket file or ``@abstract`` name.
        backlog: Listen queue length; ``None`` for the most the kernel allows.
        mode: Permission bits for the socket file (ignored for abstract names).
        group: Group id to give the socket file, or ``None`` to keep the process's.
        tracer: ``--trace``: the socket, bind, listen and link calls are written.

    Returns:
        The listener; its ``close()`` removes the file if it is still ours.

    Raises:
        ListenError: with a message that says what to do.
    """
    _check_fits(address)
    queue = DEFAULT_BACKLOG if backlog is None else backlog
    if address.is_abstract:
        sock = new_socket(socket.AF_UNIX, tracer)
        with close_on_error(sock):
            try:
                sock.bind(address.sockaddr)
                sock.listen(queue)
            except OSError as exc:
                raise explain(address, exc) from exc
        sock.setblocking(False)
        return Listener(sock, address)

    directory = _open_directory(address)
    with close_on_error(_Descriptor(directory)):
        _warn_if_others_may_replace(address, directory)
        try:
            lock = LockFile.acquire(address, directory=directory)
        except ListenError:
            raise
        except OSError as exc:
            raise explain(address, exc) from exc
        with close_on_error(lock):
            return _bind_socket_file(address, directory, queue, mode, group, lock, tracer)


def _bind_socket_file(
    address: UnixAddress,
    directory: int,
    queue: int,
    mode: int,
    group: int | None,
    lock: LockFile,
    tracer: Tracer | None,
) -> Listener:
    """The rest of ``open_unix_listener``; the listener returned owns ``directory``."""
    name = os.path.basename(address.path)
    stale = _probe(address, directory, name)
    sock = new_socket(socket.AF_UNIX, tracer)
    with close_on_error(sock):
        try:
            shown = os.path.dirname(address.display) or "."
            with PrivateDirectory.make(address, directory, shown) as private:
                private.bind(sock, mode)
                if group is not None:
                    _give_to_group(address, private, group)
                private.chmod(mode)
                sock.listen(queue)
                bound = identity(private.stat())
                _move_into_place(address, directory, name, private, stale, tracer)
            if stat_in(directory, name) is None:
                raise ListenError(
                    f"cannot listen on {address}: {address.display!r} vanished while the"
                    " server was starting; retry",
                    errno=errno.ENOENT,
                )
        except ListenError:
            raise
        except OSError as exc:
            raise explain(address, exc) from exc
    if stale:
        _log.warning(
            "replaced the stale socket file %s (nothing was accepting on it)", address.display
        )
    sock.setblocking(False)
    return Listener(sock, address, SocketFile(address.display, name, directory, bound), lock)


def _move_into_place(
    address: UnixAddress,
    directory: int,
    name: str,
    private: PrivateDirectory,
    stale: os.stat_result | None,
    tracer: Tracer | None,
) -> None:
    """Give the bound socket its name, never over anything but the stale socket probed.

    The lock keeps other trio_sock servers out, but not other programs: between
    the probe and now, something may have appeared at the path.
    """
    now = None if stale is None else stat_in(directory, name)
    if stale is None or now is None:
        try:
            private.link_to(name)  # fails, atomically, if the path exists
            _trace_naming(tracer, "link", private, address)
        except FileExistsError:
            raise ListenError(
                f"cannot listen on {address}: something appeared at {address.display!r} while"
                " the server was starting; it is left alone: check what it is, then retry",
                errno=errno.EEXIST,
            ) from None
        return
    # Nothing holds a stale socket's inode, so its number may go to a file made
    # after an unlink: the ctime tells them apart.
    if (identity(now), now.st_ctime_ns) == (identity(stale), stale.st_ctime_ns):
        private.rename_to(name)  # swaps the stale socket atomically
        _trace_naming(tracer, "rename", private, address)
    else:
        raise ListenError(
            f"cannot listen on {address}: {address.display!r} changed while the server was"
            " starting; it is left alone: check what it is, then retry",
            errno=errno.EBUSY,
        )


def _trace_naming(
    tracer: Tracer | None, call: str, private: PrivateDirectory, address: UnixAddress
) -> None:
    """Under ``--trace``: the socket was bound under a private name (so that no one can
    swap the path meanwhile); this call gives it the address's name."""
    if tracer is not None:
        names = f"{quoted(os.fsencode(private.socket_path))}, {quoted(os.fsencode(address.path))}"
        tracer(f"{call}({names})", 0)


def _give_to_group(address: UnixAddress, private: PrivateDirectory, group: int) -> None:
    try:
        private.chown(group)
    except PermissionError as exc:
        raise ListenError(
            f"cannot listen on {address}: cannot give the socket file to group {group}"
            f" ({exc.strerror}); the server's user must be a member of it",
            errno=exc.errno,
        ) from exc
