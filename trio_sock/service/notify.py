"""Readiness for systemd ``Type=notify``: sd_notify(3) datagrams to ``NOTIFY_SOCKET``.

One datagram socket and an environment variable, so no library is needed.
Outside systemd the variable is not set and nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket

import attrs

_log = logging.getLogger("trio_sock.systemd")


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
