"""Each client's departure record, and no flood of them when thousands leave a second.

Every client leaves one record on the ``trio_sock.clients`` logger: where it
came in, who it was, bytes in and out, how long, and why it ended.  A person
reading the log wants that for each client at a human rate; at thousands of
clients a second the records would cost more than serving the clients (a log
record is several times the work of a whole connect-reply-close) and no one
could read them.  So at most ``PER_SECOND`` are logged one by one each second,
and the rest are counted by reason and summed up in one record when the
second is over.  With ``--log-level debug``, every client gets its own record.
"""

from __future__ import annotations

import collections
import logging
import math
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio

from trio_sock.server.peers import PeerCredentials
from trio_sock.server.words import counted

if TYPE_CHECKING:
    from trio_sock.config.addresses import Address
    from trio_sock.server.stats import Tally

_clients_log = logging.getLogger("trio_sock.clients")

#: Departures logged one by one per second, at info level: far more than a
#: person follows, far fewer than would make logging the server's main work.
PER_SECOND: Final = 100


class DepartureLog:
    """Decides which departures are logged one by one, and sums up the rest."""

    def __init__(self) -> None:
        self._second_ends = -math.inf
        self._logged = 0
        self._unlogged: collections.Counter[str] = collections.Counter()
        self._overflowed = trio.Event()

    def will_log(self, reason: str) -> bool:
        """Count one departure; True if it gets a record of its own (``log``)."""
        if not _clients_log.isEnabledFor(logging.INFO):
            return False
        if _clients_log.isEnabledFor(logging.DEBUG):
            return True
        now = trio.current_time()
        if now >= self._second_ends:
            self._second_ends = now + 1.0
            self._logged = 0
        if self._logged < PER_SECOND:
            self._logged += 1
            return True
        if not self._unlogged:
            self._overflowed.set()
        self._unlogged[reason] += 1
        return False

    async def summarize(self) -> NoReturn:
        """Log the sum of the departures not logged one by one, once a second at most.

        Runs for as long as the server; logs what is left when cancelled.
        """
        try:
            while True:
                await self._overflowed.wait()
                self._overflowed = trio.Event()
                await trio.sleep_until(self._second_ends)
                self._summarize()
        finally:
            self._summarize()

    def _summarize(self) -> None:
        if not self._unlogged:
            return
        reasons = dict(self._unlogged.most_common())
        self._unlogged.clear()
        count = sum(reasons.values())
        _clients_log.info(
            "%s left, not logged one by one (over %d a second; --log-level debug logs each): %s",
            counted(count, "more client"),
            PER_SECOND,
            ", ".join(f"{reason}={n}" for reason, n in reasons.items()),
            extra={"clients": count, "reasons": reasons},
        )


def log(number: int, address: Address, peer: object, tally: Tally, reason: str) -> None:
    """Log one client's departure record (once ``DepartureLog.will_log`` said so)."""
    if isinstance(peer, tuple):
        host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
        peer_text = f"{host}:{peer[1]}"
    else:
        peer_text = str(peer)
    duration = trio.current_time() - tally.started
    _clients_log.info(
        "client %d left %s peer=%s in=%d out=%d duration=%.3fs reason=%s",
        number,
        address,
        peer_text,
        tally.received,
        tally.sent,
        duration,
        reason,
        extra={
            "client": number,
            "listener": str(address),
            "transport": address.transport,
            "peer": peer_text,
            "bytes_in": tally.received,
            "bytes_out": tally.sent,
            "duration": round(duration, 6),
            "reason": reason,
            **(attrs.asdict(peer) if isinstance(peer, PeerCredentials) else {}),
        },
    )
