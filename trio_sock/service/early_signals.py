"""Signals that arrive while the program starts, before Trio watches them.

Importing Trio and the server takes a moment.  Without this, SIGINT in that
moment prints a ``KeyboardInterrupt`` traceback, and SIGTERM or SIGHUP ends the
process with status 143 or 129, where the contract promises a quiet exit 0.
``hold`` is the first thing ``python -m trio_sock`` does; nothing here imports
anything heavy.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

_received: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a server: SIGINT, SIGTERM, and SIGHUP unless it is ignored.

    A hangup (a terminal closed, an ssh session dropped) stops the server as
    SIGTERM does, except when whoever started it ignores hangups (``nohup``):
    that was asked for, and the workers, which inherit it, ignore them too.
    """
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def hold() -> None:
    """From now on, the stop signals are only remembered, and SIGUSR1 ignored.

    SIGUSR1 asks a running server for its stats; its default action would
    instead kill a server that is starting, or (once Trio restores the action it
    found) one that is shutting down.
    """
    _received.clear()
    for signum in stop_signals():
        signal.signal(signum, _remember)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def received() -> list[int]:
    """The signals remembered so far, in order."""
    return list(_received)


def release() -> list[int]:
    """Give the stop signals their usual handlers back; return what was remembered."""
    if signal.getsignal(signal.SIGINT) is _remember:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is _remember:
            signal.signal(signum, signal.SIG_DFL)
    held = received()
    _received.clear()
    return held
