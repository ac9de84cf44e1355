"""One worker process as its parent sees it: its pipes, its ready line, how it ended."""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

import attrs

from trio_sock.server.ready import is_ready_line

if TYPE_CHECKING:
    import trio

    from trio_sock.workers.worker import Order

_log = logging.getLogger("trio_sock.workers")


@attrs.define(eq=False)
class WorkerProcess:
    """One worker process, from the parent's side."""

    number: int
    process: trio.Process
    lifeline: int
    """The parent's end: write-only, non-blocking."""

    def order(self, order: Order) -> None:
        """Send ``order``; a worker that is gone, or not reading, misses it."""
        try:
            os.write(self.lifeline, order.value)
        except OSError as exc:  # EPIPE: it is gone; EAGAIN: 64 KiB of orders unread
            _log.debug("worker %d missed %s: %s", self.number, order.name, exc.strerror)


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
