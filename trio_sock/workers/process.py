"""One worker process as its parent sees it: its pipes, its ready line, its reports,
how it ended."""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

import attrs
import trio

from trio_sock.server.ready import is_ready_line
from trio_sock.workers.worker import Order, read_report_line

if TYPE_CHECKING:
    from trio_sock.server.stats import ByListener

_log = logging.getLogger("trio_sock.workers")


@attrs.define(eq=False)
class WorkerProcess:
    """One worker process, from the parent's side."""

    number: int
    process: trio.Process
    lifeline: int
    """The parent's end: write-only, non-blocking."""
    reports: trio.lowlevel.FdStream
    """The parent's end of the report pipe."""
    latest: ByListener = attrs.field(factory=dict)
    """The figures of its last report; none until it reported."""
    received: int = 0
    """How many reports came."""
    _arrived: trio.Event = attrs.field(factory=trio.Event)
    """Set by the next report."""
    ended: trio.Event = attrs.field(factory=trio.Event)
    """Set once the report pipe is closed: its last report, if any, is in."""

    def order(self, order: Order) -> None:
        """Send ``order``; a worker that is gone, or not reading, misses it."""
        try:
            os.write(self.lifeline, order.value)
        except OSError as exc:  # EPIPE: it is gone; EAGAIN: 64 KiB of orders unread
            _log.debug("worker %d missed %s: %s", self.number, order.name, exc.strerror)

    def ask_report(self) -> int:
        """Ask for a report; the number ``received`` reaches with the answer."""
        self.order(Order.REPORT)
        return self.received + 1

    async def wait_for_report(self, number: int) -> None:
        """Wait until ``received`` is ``number``, the answer ``ask_report`` said."""
        while self.received < number and not self.ended.is_set():
            await self._arrived.wait()

    async def read_reports(self) -> None:
        """Keep ``latest`` up to date from the report pipe until the worker closes it."""
        pending = b""
        try:
            while chunk := await self.reports.receive_some():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    try:
                        self.latest = read_report_line(line)
                    except (ValueError, TypeError) as exc:  # a torn write: the next will do
                        _log.debug("worker %d sent a bad report: %s", self.number, exc)
                        continue
                    self.received += 1
                    self._arrived.set()
                    self._arrived = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.ended.set()
            self._arrived.set()


async def read_ready_line(process: trio.Process) -> bool:
    """Read the worker's stdout up to its ready line; False if it closed it first.

    The pipe is closed once the line is read, and only then: a worker that is
    still starting must not find it closed, or printing its ready line fails.
    """
    assert process.stdout is not None
    data = b""
    while b"\n" not in data:
        chunk = await process.stdout.receive_some()
        if not chunk:
            return False
        data += chunk
    await process.stdout.aclose()
    return is_ready_line(data)


def ending(status: int) -> str:
    """How a process ended, from its return code, as a log line says it."""
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def fill_closed_stdio() -> None:
    """Open /dev/null on a closed stdin, stdout or stderr.

    Otherwise a listening socket could get descriptor 0, 1 or 2, and a worker's
    stdin and stdout (its two pipes) would land on top of it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free number: this one
