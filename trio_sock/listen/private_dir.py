"""Bind a Unix socket file where no one can swap its name: in a private directory.

``bind()`` creates the socket file by name, and ``chmod()``/``chown()`` by name
follow symlinks.  In a directory that others may write to, a name just bound can
be replaced by a symlink before its mode is set, and a root server would then
change the mode and group of whatever file the symlink names.  So nothing here
is done by a name that anyone else can replace:

- the socket's directory is opened once (``listen.unix``); every call after that
  is relative to its descriptor;
- inside it, a private directory is made with mode 0700, opened with
  ``O_NOFOLLOW`` and checked through the descriptor (``fstat``) to be a directory
  of this user with that mode: only this user can create entries in it;
- the socket is bound as ``/proc/self/fd/N/s``, N the private directory's
  descriptor.  The kernel resolves that magic link to the very directory
  opened, wherever it has been renamed to since, and the path is always
  short, whatever the length of the final name;
- the group and mode are set on ``s`` relative to that descriptor, then the
  caller listens and links or renames ``s`` into place, descriptor to
  descriptor;
- on every path, success or failure, ``s`` is unlinked and the private
  directory removed (if its name still names it: someone may have moved it).

Without ``/proc`` there is no such path to bind to, and every other way binds by
a name (or changes the whole process's working directory), so the server
refuses, saying so, rather than bind unsafely.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from typing import TYPE_CHECKING, Final

import attrs

from trio_sock.errors import ListenError

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator

    from trio_sock.config.addresses import UnixAddress

#: Where this process's descriptors appear as magic links to what they opened.
PROC_FDS: Final = "/proc/self/fd"
#: The socket's name in the private directory: short, and no one else's to choose.
SOCKET_NAME: Final = "s"
#: Only this user may list, enter or create entries in the private directory.
PRIVATE_MODE: Final = 0o700


@contextlib.contextmanager
def _umask_for(mode: int) -> Iterator[None]:
    # bind() and mkdir() create with 0o777 & ~umask: with this umask the file is
    # born with exactly ``mode``.  The umask is process-wide, but nothing else
    # creates files while the synchronous block that opens listeners runs.
    old = os.umask(0o777 & ~mode)
    try:
        yield
    finally:
        os.umask(old)


def _replaced(address: UnixAddress, directory: str) -> ListenError:
    return ListenError(
        f"cannot listen on {address}: the private directory the server made in {directory}"
        " was replaced while the server was starting (someone else writes there); retry,"
        " or pick a directory only the server's user may write to with --unix",
        errno=errno.EBUSY,
    )


@attrs.define(eq=False)
class PrivateDirectory:
    """A directory of this user's, mode 0700, inside the socket's directory, held open.

    Error handling:
        Use it as a context manager (``make``): however the block ends, the
        socket name in it is unlinked and the directory removed, and those
        steps never raise.
    """

    fd: int
    """The private directory, opened ``O_PATH | O_DIRECTORY | O_NOFOLLOW``."""
    _parent: int
    _name: str

    @classmethod
    @contextlib.contextmanager
    def make(cls, address: UnixAddress, parent: int, shown: str) -> Iterator[PrivateDirectory]:
        """Make and check a private directory inside ``parent``; remove it at exit.

        Args:
            address: How error messages name the address.
            parent: The socket's directory, opened by the caller.
            shown: The directory's name in messages.

        Raises:
            ListenError: ``/proc`` is not mounted, or the new directory was replaced.
            OSError: ``mkdir`` or ``open`` failed (the caller explains it).
        """
        if not os.path.isdir(PROC_FDS):
            raise ListenError(
                f"cannot listen on {address}: /proc is not mounted, and the server binds"
                " socket files through it so that no one can swap their names; mount"
                " /proc, or use an abstract name (--unix @NAME)",
                errno=errno.ENOENT,
            )
        name = f".trio_sock-{secrets.token_hex(8)}"
        with _umask_for(PRIVATE_MODE):
            os.mkdir(name, PRIVATE_MODE, dir_fd=parent)
        try:
            flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=parent)
        except OSError as exc:
            # ELOOP: a symlink; ENOTDIR: a file; ENOENT: gone.  Whatever is there is
            # not ours: left alone.
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                raise _replaced(address, shown) from exc
            raise
        try:
            found = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        # Not S_IMODE, which counts a set-gid bit inherited from the parent: only
        # the permission bits matter here.
        if not (
            stat.S_ISDIR(found.st_mode)
            and found.st_uid == os.geteuid()
            and found.st_mode & 0o777 == PRIVATE_MODE
        ):
            os.close(fd)  # someone else's directory: never removed
            raise _replaced(address, shown)
        private = cls(fd, parent, name)
        try:
            yield private
        finally:
            private._remove()

    @property
    def socket_path(self) -> str:
        """What to ``bind()`` to: the socket name inside the directory held open."""
        return f"{PROC_FDS}/{self.fd}/{SOCKET_NAME}"

    def bind(self, sock: socket.socket, mode: int) -> None:
        """Bind ``sock`` here, the file born with ``mode`` (the umask does it)."""
        with _umask_for(mode):
            sock.bind(self.socket_path)

    def chown(self, group: int) -> None:
        """Give the socket file to ``group``; a symlink in its place would not be followed."""
        os.chown(SOCKET_NAME, -1, group, dir_fd=self.fd, follow_symlinks=False)

    def chmod(self, mode: int) -> None:
        """Set the socket file's mode, in case the file system ignored the umask (a
        default ACL makes it do so)."""
        # Not follow_symlinks=False: Python does not offer it for chmod on Linux, and
        # it is not needed, since only this user can create entries in this directory:
        # the name is the socket bind() just made.
        os.chmod(SOCKET_NAME, mode, dir_fd=self.fd)

    def stat(self) -> os.stat_result:
        """The socket file's ``lstat``."""
        return os.stat(SOCKET_NAME, dir_fd=self.fd, follow_symlinks=False)

    def link_to(self, name: str) -> None:
        """Give the socket ``name`` in the parent directory; fails if ``name`` exists."""
        os.link(
            SOCKET_NAME,
            name,
            src_dir_fd=self.fd,
            dst_dir_fd=self._parent,
            follow_symlinks=False,
        )

    def rename_to(self, name: str) -> None:
        """Move the socket to ``name`` in the parent directory, over what is there."""
        os.rename(SOCKET_NAME, name, src_dir_fd=self.fd, dst_dir_fd=self._parent)

    def _remove(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(SOCKET_NAME, dir_fd=self.fd)
        with contextlib.suppress(OSError):
            ours, now = (
                os.fstat(self.fd),
                os.stat(self._name, dir_fd=self._parent, follow_symlinks=False),
            )
            # Someone who may write to the parent may have moved ours away and
            # put something else at its name: that is left alone.
            if (ours.st_dev, ours.st_ino) == (now.st_dev, now.st_ino):
                os.rmdir(self._name, dir_fd=self._parent)
        os.close(self.fd)
        self.fd = -1
