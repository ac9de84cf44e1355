"""Signals that arrive while the program starts, before Trio watches them.

Importing Trio and the server takes a moment.  Without this, SIGINT in that
moment prints a ``KeyboardInterrupt`` traceback and SIGTERM ends the process
with status 143, where the contract promises a quiet exit 0.  ``hold`` is the
first thing ``python -m trio_sock`` does; nothing here imports anything heavy.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)


def hold() -> None:
    """From now on, SIGINT and SIGTERM are only remembered, and SIGUSR1 ignored.

    SIGUSR1 asks a running server for its stats; its default action would
    instead kill a server that is starting, or (once Trio restores the action it
    found) one that is shutting down.
    """
    _received.clear()
    for signum in _SIGNALS:
        signal.signal(signum, _remember)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def received() -> list[int]:
    """The signals remembered so far, in order."""
    return list(_received)


def release() -> list[int]:
    """Give SIGINT and SIGTERM their usual handlers back; return what was remembered."""
    if signal.getsignal(signal.SIGINT) is _remember:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is _remember:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    held = received()
    _received.clear()
    return held
