"""Counters: what the server has done, by listener, for the stats line and ``--metrics``.

Counting costs an integer add at most, on the hot path: each client's bytes
are counted in its own ``Tally`` and folded into its listener's ``Counters``
when it leaves; a snapshot adds in the tallies of the clients still connected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias, TypeVar

import attrs

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterable, Mapping


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
    failed: int = 0
    """Clients ended by an exception in their handler (a bug), each logged with its traceback."""

    def __str__(self) -> str:
        return " ".join(f"{name}={value}" for name, value in attrs.asdict(self).items())

    @classmethod
    def total(cls, parts: Iterable[ServerStats]) -> ServerStats:
        """Every figure of ``parts`` added up: listeners into a server, workers into a service."""
        names = [field.name for field in attrs.fields(cls)]
        sums = dict.fromkeys(names, 0)
        for part in parts:
            for name in names:
                sums[name] += getattr(part, name)
        return cls(**sums)


#: Figures by listener, each named by its address as the ready line shows it
#: (how ``--metrics`` labels them, and how workers report them to their parent).
ByListener: TypeAlias = "Mapping[str, ServerStats]"

K = TypeVar("K")


def add_up(parts: Iterable[Mapping[K, ServerStats]]) -> dict[K, ServerStats]:
    """Figures by listener added up, listener by listener (in the order first seen)."""
    grouped: dict[K, list[ServerStats]] = {}
    for part in parts:
        for key, stats in part.items():
            grouped.setdefault(key, []).append(stats)
    return {key: ServerStats.total(all_stats) for key, all_stats in grouped.items()}


@attrs.define(eq=False)
class Tally:
    """One client's figures, kept by its task."""

    started: float
    received: int = 0
    sent: int = 0
    alive: float = 0.0
    """When the client last sent or read anything: the end of its task's last wait,
    or its last byte moved; ``math.inf`` while the server works for it (``--delay``)."""
    watched: socket.socket | None = None
    """The socket the idle reaper wakes (``notify_closing``) once ``alive`` is too old."""
    unsent: int | None = None
    """While its task waits for room to send: the bytes the client had not taken yet
    when the wait began (``reaper.unsent_bytes``, -1 if unknown), so that its taking
    some is a sign of life; ``None`` while its task does not wait to send."""
    finished: bool = False
    """The client sent its EOF (as a ``WatchedStream`` read it): closing cannot reset
    away a reply, as nothing more can arrive unread."""
    idle: bool = False
    """The reaper dropped it for idleness: every call on its stream fails from then on."""


@attrs.define(eq=False)
class Counters:
    """One listener's running totals, behind its ``ServerStats``."""

    accepted: int = 0
    refused: int = 0
    dropped_idle: int = 0
    accept_errors: int = 0
    failed: int = 0
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
            failed=self.failed,
        )
