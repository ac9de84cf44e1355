"""``PATH.lock``: one server per socket path, even when two start at the same instant.

Probing a socket with ``connect()`` cannot settle a race: two servers started
together both find no live socket, and the second to ``rename()`` would take
the path from the first.  So, as PostgreSQL does for its socket, each server
first takes an exclusive ``flock`` on a lock file beside the socket and holds
it for its whole life.  The kernel drops the lock when the process dies, even
by ``kill -9``, so a lock file left behind is never mistaken for a live server.

The lock file is named relative to the socket's directory, opened once by
``listen.unix``: it guards the directory the socket is bound in, even if a path
component is swapped meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from typing import TYPE_CHECKING, Final

import attrs

from trio_sock.errors import ListenError

if TYPE_CHECKING:
    from trio_sock.config.addresses import UnixAddress

#: Attempts to lock a file that its holder keeps unlinking at exit; each lost
#: race needs a server to start and stop in between, so a few are plenty.
_ATTEMPTS: Final = 10


@attrs.define(eq=False)
class LockFile:
    """An exclusive ``flock`` on ``PATH.lock``, with this process's pid inside.

    Error handling:
        ``release`` never raises and may be called any number of times.
    """

    path: str
    """The lock file's path as messages show it."""
    _fd: int
    _identity: tuple[int, int]
    _name: str
    _directory: int
    """A duplicate of the directory descriptor ``acquire`` was given, ours to close."""

    @classmethod
    def acquire(cls, address: UnixAddress, *, directory: int) -> LockFile:
        """Lock ``PATH.lock`` beside the socket file, creating it if needed.

        Args:
            address: The socket file the lock guards; error messages name it.
            directory: The socket's directory, opened; the lock file is named
                relative to it.  The lock keeps a duplicate: the caller's stays its own.

        Raises:
            ListenError: another live server holds the lock (its pid is named), or the
                lock file is not a regular file.
            OSError: the lock file cannot be created (the caller explains it).
        """
        path = f"{address.display}.lock"
        name = f"{os.path.basename(address.path)}.lock"
        for _ in range(_ATTEMPTS):
            # O_NOFOLLOW: a symlink planted at PATH.lock must not make us truncate
            # the file it points to; O_NONBLOCK: a FIFO there must not hang us.
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
            fd = os.open(name, flags, 0o600, dir_fd=directory)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ListenError(
                        f"cannot listen on {address}: {path} is not a regular file, so it"
                        " is left alone; remove it yourself, or pick another path with --unix",
                        errno=errno.EEXIST,
                    )
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"another server (pid {holder})" if holder else "another server"
                raise ListenError(
                    f"cannot listen on {address}: {who} already holds {path};"
                    " stop it first, or pick another path with --unix",
                    errno=errno.EADDRINUSE,
                ) from None
            except BaseException:
                os.close(fd)
                raise
            held = os.fstat(fd)
            identity = (held.st_dev, held.st_ino)
            if _identity_of(name, directory) == identity:
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    return cls(path, fd, identity, name, os.dup(directory))
                except BaseException:
                    os.close(fd)
                    raise
            # The holder unlinked the file between our open() and flock(): the
            # lock we got guards nothing.  Start again with the path as it is now.
            os.close(fd)
        raise ListenError(
            f"cannot listen on {address}: {path} keeps changing; is a server restarting"
            " in a loop? stop it, or pick another path with --unix",
            errno=errno.EBUSY,
        )

    def close(self) -> None:
        """Release the lock: unlink the lock file if it is still ours (while still
        holding it, so no one locks a dead file), then let go."""
        if self._fd < 0:
            return
        if _identity_of(self._name, self._directory) == self._identity:
            with contextlib.suppress(OSError):
                os.unlink(self._name, dir_fd=self._directory)
        os.close(self._fd)
        os.close(self._directory)
        self._fd = -1


def _identity_of(name: str, directory: int) -> tuple[int, int] | None:
    try:
        now = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except OSError:
        return None
    return (now.st_dev, now.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
