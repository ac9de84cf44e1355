"""systemd's two small protocols: socket activation and readiness notification.

Both are plain environment variables and one datagram socket, so no library is
needed (sd_listen_fds(3), sd_notify(3)).  Outside systemd neither variable is
set and everything here does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Final

import attrs

from .config import ListenFd

_log = logging.getLogger("trio_sock.systemd")

#: sd_listen_fds(3): passed descriptors start right after stdin, stdout, stderr.
LISTEN_FDS_START: Final = 3


def listen_fds() -> tuple[ListenFd, ...]:
    """The sockets systemd passed to this process, with their names; then forget them.

    As sd_listen_fds(3) asks, the variables are unset once read, so that child
    processes do not take the sockets for theirs.  They count only if
    ``LISTEN_PID`` is this process.
    """
    pid, count, names = (
        os.environ.pop(v, None) for v in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
    )
    if pid is None or count is None:
        return ()
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        _log.debug("ignoring LISTEN_FDS=%s meant for pid %s", count, pid)
        return ()
    labels = (names or "").split(":")
    return tuple(
        ListenFd(LISTEN_FDS_START + i, labels[i] if i < len(labels) and labels[i] else None)
        for i in range(int(count))
    )


@attrs.define(eq=False)
class Notifier:
    """Sends sd_notify(3) messages to ``NOTIFY_SOCKET``, if it is set; else does nothing."""

    address: str | None
    _sock: socket.socket | None = None
    _warned: bool = False

    @classmethod
    def from_environment(cls) -> Notifier:
        path = os.environ.get("NOTIFY_SOCKET") or None
        if path is not None and path.startswith("@"):
            path = "\0" + path[1:]  # abstract, as systemd writes it
        return cls(path)

    def notify(self, *lines: str) -> None:
        """Send ``lines`` as one datagram; a failure is logged once, never raised.

        Non-blocking: a receiver that stops reading must cost us a lost status
        line, never a server frozen in ``sendto``.
        """
        if self.address is None:
            return
        try:
            if self._sock is None:
                kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                self._sock = socket.socket(socket.AF_UNIX, kind)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                _log.warning(
                    "cannot notify systemd at %s: %s (further failures are not logged)",
                    self.address.replace("\0", "@"),
                    exc.strerror,
                )

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
