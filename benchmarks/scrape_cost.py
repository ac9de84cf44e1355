"""What ``--metrics`` costs a server under load: ping-pong with and without a scraper.

The same server (``--metrics`` on, in both cases) serves the C load generator's
ping-pong at 64 connections, once with nobody scraping and once with a scraper
asking ``/metrics`` ten times a second (150 times Prometheus' usual 15 s), in
interleaved repeats; each repeat's ratio is requests/s with the scraper over
requests/s without.  One process, and ``--workers 2`` (where every scrape asks
each worker for a report over its pipe).  The server runs on CPU 0, the load
generator and the scraper on CPU 1.

    python benchmarks/scrape_cost.py [--repeats 5] [--duration 3] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Final

from _machine import machine_info
from _server_process import ROOT, ServerProcess
from perf import build

#: How often the scraper asks: ten times a second.
SCRAPE_INTERVAL: Final = 0.1
CONCURRENCY: Final = 64
OUTPUT: Final = ROOT / "benchmarks" / "metrics" / "SCRAPE.md"
SERVER_CPU: Final = "0"
LOAD_CPU: Final = "1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Scraper(threading.Thread):
    """Asks ``url`` every ``SCRAPE_INTERVAL`` until stopped; counts and times the scrapes."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopping = threading.Event()
        self.seconds: list[float] = []

    def run(self) -> None:
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # this thread only
        while not self.stopping.wait(SCRAPE_INTERVAL):
            start = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as response:
                if response.status != 200 or b"trio_sock_accepted_total" not in response.read():
                    raise RuntimeError(f"a bad scrape of {self.url}")
            self.seconds.append(time.perf_counter() - start)


def measure(
    workers: int, scraping: bool, duration: float, loadgen: Path
) -> tuple[float, list[float]]:
    """Requests/s of one ping-pong run, and the scrapes' durations."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="scrape-") as tmp:
        command = [
            "taskset", "-c", SERVER_CPU, sys.executable, "-m", "trio_sock", "server",
            "--tcp", "127.0.0.1:0", "--unix", f"{tmp}/s", "--metrics", str(port),
            "--workers", str(workers), "--log-level", "warning",
        ]  # fmt: skip
        with ServerProcess("trio_sock", command, Path(tmp) / "stderr") as server:
            tcp = server.ready_line.split()[-1].removeprefix("tcp:")
            scraper = Scraper(f"http://127.0.0.1:{port}/metrics")
            if scraping:
                scraper.start()
            result = subprocess_run(
                ["taskset", "-c", LOAD_CPU, str(loadgen), "--mode", "pingpong",
                 "--address", f"tcp:{tcp}", "--concurrency", str(CONCURRENCY),
                 "--warmup", "0.5", "--duration", str(duration)]
            )  # fmt: skip
            scraper.stopping.set()
            if scraping:
                scraper.join()
            server.stop()
    if result["verify_failures"] or result["errors"]:
        raise RuntimeError(f"the load generator saw failures: {result}")
    return result["ops"] / result["seconds"], scraper.seconds


def subprocess_run(argv: list[str]) -> dict[str, float]:
    """The load generator's JSON report."""
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    report: dict[str, float] = json.loads(done.stdout)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    loadgen = build("loadgen")
    lines = [
        "# What `--metrics` costs under load (`benchmarks/scrape_cost.py`)",
        "",
        f"Ping-pong at {CONCURRENCY} connections over TCP, {args.duration:g} s per run,"
        f" {args.repeats} interleaved repeats; a scraper asking `/metrics` every"
        f" {SCRAPE_INTERVAL:g} s against none. Each ratio: the median of the same-repeat"
        " ratios (requests/s with the scraper over without), then every repeat's, sorted.",
        "",
        "- " + ", ".join(f"{key}: {value}" for key, value in machine_info().items()),
        "",
        "| server | requests/s, no scraper | with scraper / without | repeats |"
        " scrapes | scrape p50 | scrape max |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for workers in (1, 2):
        ratios: list[float] = []
        plain: list[float] = []
        scrapes: list[float] = []
        for repeat in range(args.repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            rates = {}
            for scraping in order:
                rates[scraping], seconds = measure(workers, scraping, args.duration, loadgen)
                scrapes += seconds
                rate = f"{rates[scraping]:,.0f}/s"
                print(f"workers={workers} repeat={repeat} scraping={scraping}: {rate}", flush=True)
            ratios.append(rates[True] / rates[False])
            plain.append(rates[False])
        shown = " ".join(f"{r:.2f}" for r in sorted(ratios))
        name = "one process" if workers == 1 else f"--workers {workers}"
        lines.append(
            f"| {name} | {statistics.median(plain):,.0f} | {statistics.median(ratios):.2f}x"
            f" | {shown} | {len(scrapes)} | {1000 * statistics.median(scrapes):.1f} ms"
            f" | {1000 * max(scrapes):.1f} ms |"
        )
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
