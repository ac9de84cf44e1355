"""``--metrics``: the figures of the stats line, by listener, in Prometheus' text format.

Each field of ``ServerStats`` is one metric family, named after it
(``accepted=`` is ``trio_sock_accepted_total``, ``active=`` the gauge
``trio_sock_active``), with a ``listener`` label (the address as the ready line
shows it).  With ``--workers`` the families are the sums over the workers, and
``trio_sock_worker_*`` repeat them for each worker, labelled ``worker``: a
query can then add them up itself, or see one worker stall.

The figures come from ``figures_of`` (one server) or ``figures_of_workers``
(the parent asks every worker); ``metrics_endpoint`` serves them.
``prometheus_client`` writes the format; it is imported here only, and this
module only when ``--metrics`` is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs
from prometheus_client import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from trio_sock.server.stats import ByListener, ServerStats

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from trio_sock.server.serve import Server
    from trio_sock.workers.supervisor import Supervisor

#: What each figure means, as ``# HELP`` says it.
_HELP: Final = {
    "accepted": "Connections accepted, including those refused by the peer policy.",
    "active": "Clients being served right now.",
    "refused": "Unix peers closed at once by the peer policy (--allow-uid, --allow-gid).",
    "dropped_idle": "Clients dropped by the idle timeout.",
    "bytes_in": "Bytes received from clients.",
    "bytes_out": "Bytes sent to clients.",
    "accept_errors": "Failed accept() calls (out of descriptors or memory).",
    "failed": "Clients ended by an exception in their handler.",
}
#: The one figure that goes down as well as up.
_GAUGES: Final = frozenset({"active"})


@attrs.frozen
class Figures:
    """What one scrape shows."""

    totals: ByListener
    """By listener, everything the server (with ``--workers``, every worker) has done."""
    workers: Mapping[int, ByListener] = attrs.field(factory=dict)
    """With ``--workers``, each worker's own figures, by worker number."""


async def figures_of(server: Server) -> Figures:
    """One server's figures, for a scrape."""
    by_listener = server.stats_by_listener()
    return Figures({str(address): stats for address, stats in by_listener.items()})


async def figures_of_workers(supervisor: Supervisor) -> Figures:
    """The workers' figures, asked of each at this scrape (``Supervisor.gather_stats``)."""
    totals, workers = await supervisor.gather_stats()
    return Figures(totals, workers)


def exposition(figures: Figures) -> bytes:
    """``figures`` in Prometheus' text format (version 0.0.4)."""
    return generate_latest(_Collected(list(_families(figures))))


def _families(figures: Figures) -> Iterator[Metric]:
    for field in attrs.fields(ServerStats):
        name = field.name
        kind = GaugeMetricFamily if name in _GAUGES else CounterMetricFamily
        total = kind(f"trio_sock_{name}", _HELP[name], labels=["listener"])
        for listener, stats in figures.totals.items():
            total.add_metric([listener], getattr(stats, name))
        yield total
        if figures.workers:
            each = kind(
                f"trio_sock_worker_{name}",
                f"{_HELP[name]} One worker's.",
                labels=["listener", "worker"],
            )
            for number, by_listener in sorted(figures.workers.items()):
                for listener, stats in by_listener.items():
                    each.add_metric([listener, str(number)], getattr(stats, name))
            yield each


@attrs.frozen
class _Collected:
    """Metric families already made, as ``generate_latest`` wants them: a collector."""

    metrics: Iterable[Metric]

    def collect(self) -> Iterable[Metric]:
        return self.metrics
