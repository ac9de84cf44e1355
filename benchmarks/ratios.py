"""Median same-repeat ratios of one server to another, from a ``perf.py`` RESULTS.json.

``perf.py`` interleaves its servers within each repeat, so a ratio of two servers
measured in the same repeat cancels most of what the shared machine did meanwhile.
This prints, for each workload, case and transport, the median over repeats of
``server / baseline`` (for idle memory, lower is smaller).

    python benchmarks/ratios.py benchmarks/layout/RESULTS.json trio_sock trio_sock_base
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def ratios(results: dict[str, object], server: str, baseline: str) -> dict[tuple[str, ...], float]:
    """``(workload, case, transport)`` to the median same-repeat ratio."""
    return {
        key: statistics.median(each) for key, each in per_repeat(results, server, baseline).items()
    }


def per_repeat(
    results: dict[str, object], server: str, baseline: str
) -> dict[tuple[str, ...], list[float]]:
    """``(workload, case, transport)`` to the ratio in each repeat that measured both."""
    by_key: dict[tuple[str, ...], dict[int, dict[str, float]]] = defaultdict(dict)
    samples = results["samples"]
    assert isinstance(samples, list)
    for sample in samples:
        if sample["error"] is None and sample["value"]:
            key: tuple[str, ...] = (sample["workload"], sample["case"], sample["transport"])
            by_key[key].setdefault(sample["repeat"], {})[sample["server"]] = sample["value"]
    found: dict[tuple[str, ...], list[float]] = {}
    for key, repeats in by_key.items():
        each = [r[server] / r[baseline] for r in repeats.values() if server in r and baseline in r]
        if each:
            found[key] = each
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("server")
    parser.add_argument("baseline")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    print(f"| workload | case | transport | {args.server} / {args.baseline} |")
    print("|---|---|---|---:|")
    for (workload, case, transport), ratio in sorted(
        ratios(results, args.server, args.baseline).items()
    ):
        print(f"| {workload} | {case or '—'} | {transport} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
