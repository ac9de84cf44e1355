"""What a serving process tells systemd about itself: the ``STATUS=`` line.

``systemctl status`` shows the latest ``STATUS=`` a service sent, so the line
must follow every figure in it, not only some; and it must cost nothing under
load, so it is sent at most once per ``STATUS_INTERVAL``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio

if TYPE_CHECKING:
    from trio_sock.server.serve import Server
    from trio_sock.service.notify import Notifier

#: systemd shows the latest STATUS= line; once a second is fresh enough for
#: ``systemctl status`` and costs nothing under load.
STATUS_INTERVAL: Final = 1.0


def status_line(server: Server) -> str:
    """``STATUS=`` with the figures of ``server`` now: active clients and accepted ones."""
    active = server.active_clients
    clients = "client" if active == 1 else "clients"
    return f"STATUS={active} active {clients}, {server.accepted} accepted"


@attrs.define(eq=False)
class StatusReporter:
    """Keeps systemd's ``STATUS=`` line true to ``server``'s figures.

    Error handling:
        Sending never fails: ``Notifier`` logs a failure once and carries on.
    """

    server: Server
    notifier: Notifier
    _shown: str = ""
    """The status line systemd got last."""

    def notify(self, *lines: str) -> None:
        """Send ``lines`` (``READY=1``, ``STOPPING=1``) with the status line as it is now."""
        self._shown = status_line(self.server)
        self.notifier.notify(*lines, self._shown)

    async def run(self) -> NoReturn:
        """Send the status line whenever it differs from the one systemd got last.

        At most once per ``STATUS_INTERVAL``, and never a change lost: a change
        within an interval is sent at its end, however many came in it.
        """
        while True:
            await trio.sleep(STATUS_INTERVAL)
            if status_line(self.server) != self._shown:
                self.notify()
