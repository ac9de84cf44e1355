"""Counters: what the server has done, for the stats line and for tests.

Counting costs an integer add at most, on the hot path: each client's bytes
are counted in its own ``Tally`` and folded into the totals when it leaves;
a snapshot adds in the tallies of the clients still connected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import socket


@attrs.frozen
class ServerStats:
    """A snapshot of a server's counters since it started."""

    accepted: int
    """Connections accepted, including those refused by the peer policy."""
    active: int
    """Clients being served right now."""
    refused: int
    """Unix peers closed at once by ``--allow-uid``/``--allow-gid`` (or the same-user rule)."""
    dropped_idle: int
    """Clients dropped by the idle timeout."""
    bytes_in: int
    """Bytes received from clients."""
    bytes_out: int
    """Bytes sent back to clients."""
    accept_errors: int
    """Failed ``accept()`` calls (out of descriptors or memory)."""

    def __str__(self) -> str:
        return " ".join(f"{name}={value}" for name, value in attrs.asdict(self).items())


@attrs.define(eq=False)
class Tally:
    """One client's figures, kept by its task."""

    started: float
    received: int = 0
    sent: int = 0
    alive: float = 0.0
    """When the client last sent or read anything (the fast path keeps it)."""
    watched: socket.socket | None = None
    """The socket the idle reaper closes once ``alive`` is too old; ``None`` for
    clients that keep their own idle deadline (TLS, ``--once``, ``--delay``)."""


@attrs.define(eq=False)
class Counters:
    """The running totals behind ``ServerStats``."""

    accepted: int = 0
    refused: int = 0
    dropped_idle: int = 0
    accept_errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    connected: set[Tally] = attrs.field(factory=set)

    def arrived(self, tally: Tally) -> None:
        self.connected.add(tally)

    def left(self, tally: Tally, *, idle: bool) -> None:
        self.connected.discard(tally)
        self.bytes_in += tally.received
        self.bytes_out += tally.sent
        self.dropped_idle += idle

    def snapshot(self) -> ServerStats:
        return ServerStats(
            accepted=self.accepted,
            active=len(self.connected),
            refused=self.refused,
            dropped_idle=self.dropped_idle,
            bytes_in=self.bytes_in + sum(t.received for t in self.connected),
            bytes_out=self.bytes_out + sum(t.sent for t in self.connected),
            accept_errors=self.accept_errors,
        )
