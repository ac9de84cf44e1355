"""Run a server (or a ``--workers`` parent) until signalled: ``run``'s one loop.

A signal receiver is opened first, so that a signal at any moment after that is
handled here; then the server starts, its ready line is printed, and signals
are obeyed: SIGUSR1 logs the stats line, the first SIGINT, SIGTERM or SIGHUP
stops gracefully (``--grace``), a second cancels every client at once.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Protocol, TypeVar

import trio

from trio_sock.server.ready import ready_line
from trio_sock.service import early_signals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from trio_sock.config.addresses import Address

_log = logging.getLogger("trio_sock.service")


class Running(Protocol):
    """What runs until signalled: a ``Server``, or a ``Supervisor`` of workers."""

    @property
    def addresses(self) -> Sequence[Address]: ...

    def stop(self) -> None: ...


R = TypeVar("R", bound=Running)


async def run_until_signalled(
    start: Callable[[trio.TaskStatus[R]], Awaitable[None]],
    *,
    grace: float,
    when_ready: Callable[[R, trio.Nursery], Callable[[], None]],
    stats: Callable[[R], None],
) -> R | None:
    """Start ``start`` (as ``nursery.start`` would), print the ready line, obey signals.

    Args:
        start: Runs the server; calls ``task_status.started(running)`` once it accepts,
            and returns once it has stopped.
        grace: What active clients get after the first signal, for the log line.
        when_ready: Called once the ready line is out, with the nursery for tasks
            that live as long as the server; returns what to do on the first signal
            besides ``running.stop()``.
        stats: What SIGUSR1 does.

    Returns:
        What ``start`` started, once it has stopped; ``None`` if a signal came
        while starting, and nothing was served.
    """
    with trio.open_signal_receiver(*early_signals.stop_signals(), signal.SIGUSR1) as signals:
        async with trio.open_nursery() as nursery:

            async def watched(task_status: trio.TaskStatus[R]) -> None:
                await start(task_status)
                nursery.cancel_scope.cancel()  # stopped gracefully: stop watching signals

            if held := early_signals.received():
                _log.info("%s while starting: not serving", signal.Signals(held[0]).name)
                return None
            running: R = await nursery.start(watched)
            print(ready_line(running.addresses), flush=True)
            also = when_ready(running, nursery)

            def stop() -> None:
                also()
                running.stop()

            await _obey_signals(signals, nursery, grace, stop, lambda: stats(running))
    return running


async def _obey_signals(
    signals: AsyncIterator[int],
    nursery: trio.Nursery,
    grace: float,
    stop: Callable[[], None],
    stats: Callable[[], None],
) -> None:
    """SIGUSR1 asks for ``stats``; the first SIGINT, SIGTERM or SIGHUP calls ``stop``, the
    second (of any of them) cancels ``nursery`` and returns."""
    signalled = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGUSR1:
            stats()
        elif signalled:
            _log.warning("second signal (%s): cancelling every client now", name)
            nursery.cancel_scope.cancel()
            return
        else:
            signalled = True
            _log.info(
                "%s: stopping; clients have %ss to finish (a second signal stops now)", name, grace
            )
            stop()
