"""``server --metrics``: scraped while load runs, and compared with the stats line."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import TYPE_CHECKING

import attrs
import pytest

from tests.helpers import (
    EVENT_TIMEOUT,
    FAIL_TIMEOUT,
    assert_no_traceback,
    assert_user_error,
    connect,
    exchange,
    run_cli,
    wait_for_log,
)
from tests.service.test_metrics import NAMES, Series, samples
from tests.workers.test_workers import poll_until, workers_of
from trio_sock.workers.supervisor import REPORT_TIMEOUT

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers import Processes, ServerProcess
    from trio_sock.config.addresses import Address

#: Clients per load thread, and threads: enough that scrapes land while it runs.
CLIENTS = 150
THREADS = 4


def metrics_url(server: ServerProcess) -> str:
    log = wait_for_log(server, "metrics at http://")
    found = re.search(r"metrics at (http://\S+/metrics)", log)
    assert found is not None, log
    return found[1]


def scrape(url: str) -> Series:
    with urllib.request.urlopen(url, timeout=EVENT_TIMEOUT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return samples(response.read().decode())


def figure(series: Series, name: str, listener: str, worker: int | None = None) -> int:
    kind = "trio_sock" if worker is None else "trio_sock_worker"
    suffix = "" if name == "active" else "_total"
    labels = [("listener", listener)] + ([] if worker is None else [("worker", str(worker))])
    return int(series[(f"{kind}_{name}{suffix}", tuple(labels))])


def stats_lines(server: ServerProcess) -> dict[int | None, dict[str, int]]:
    """The newest stats line of each worker (``None``: no workers), from JSON logs."""
    found: dict[int | None, dict[str, int]] = {}
    for line in server.stderr().splitlines():
        if line.startswith("{") and (record := json.loads(line))["logger"] == "trio_sock.stats":
            found[record.get("worker")] = {name: record[name] for name in NAMES}
    return found


@attrs.define
class Load:
    """Clients that each send a few bytes on one listener and read the reply, in threads."""

    addresses: dict[str, Address]
    sent: dict[str, list[int]] = attrs.Factory(dict)
    """By listener: connections made, bytes sent."""
    errors: list[BaseException] = attrs.Factory(list)
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    def run(self, seed: int) -> None:
        try:
            for i in range(CLIENTS):
                label = list(self.addresses)[(i + seed) % len(self.addresses)]
                data = bytes([65 + (i + seed) % 26]) * (1 + (i * 7 + seed) % 40)
                assert exchange(self.addresses[label], data) == bytes([data[0] + 1]) * len(data)
                with self._lock:
                    made = self.sent.setdefault(label, [0, 0])
                    made[0] += 1
                    made[1] += len(data)
        except BaseException as exc:  # the test's thread reports it
            self.errors.append(exc)


def start_load(server: ServerProcess) -> tuple[Load, list[threading.Thread]]:
    load = Load({str(address): address for address in server.addresses})
    threads = [threading.Thread(target=load.run, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    return load, threads


@pytest.mark.parametrize("workers", [1, 3])
def test_scrapes_while_load_runs_agree_with_the_load_and_the_stats_line(
    procs: Processes, short_tmp: Path, workers: int
) -> None:
    server = procs.server(
        "--unix", str(short_tmp / "s"), "--tcp", "0", "--metrics", "0",
        "--workers", str(workers), "--log-format", "json",
    )  # fmt: skip
    url = metrics_url(server)
    listeners = [str(address) for address in server.addresses]
    load, threads = start_load(server)
    scrapes = [scrape(url)]
    while any(thread.is_alive() for thread in threads):
        scrapes.append(scrape(url))
    for thread in threads:
        thread.join()
    assert not load.errors, load.errors
    # Counters never go down, scrape after scrape.
    for before, after in itertools.pairwise(scrapes):
        for key, value in before.items():
            if not key[0].endswith("_active"):
                assert after[key] >= value, (key, before, after)

    def settled() -> bool:  # every client's departure counted
        final = scrape(url)
        return all(figure(final, "active", listener) == 0 for listener in listeners)

    poll_until(settled, "no active client")
    final = scrape(url)
    for listener in listeners:
        made, size = load.sent[listener]
        assert figure(final, "accepted", listener) == made
        assert figure(final, "bytes_in", listener) == figure(final, "bytes_out", listener) == size
        for name in ("refused", "dropped_idle", "accept_errors", "failed"):
            assert figure(final, name, listener) == 0
    # The stats line: the same figures, added over the listeners.
    server.send_signal(signal.SIGUSR1)
    numbers = [None] if workers == 1 else list(range(1, workers + 1))
    poll_until(lambda: set(stats_lines(server)) == set(numbers), "every stats line")
    lines = stats_lines(server)
    for name in NAMES:
        assert sum(line[name] for line in lines.values()) == sum(
            figure(final, name, listener) for listener in listeners
        ), name
        if workers > 1:  # and each worker's series are that worker's stats line
            for number in range(1, workers + 1):
                mine = sum(figure(final, name, listener, number) for listener in listeners)
                assert mine == lines[number][name], (name, number)
    assert server.stop() == 0
    assert_no_traceback(server.stderr())


def two_workers(procs: Processes, short_tmp: Path, *options: str) -> tuple[ServerProcess, str]:
    """Two workers on one Unix socket, with ``--metrics``; the server and its metrics' URL."""
    server = procs.server(
        "--unix", str(short_tmp / "s"), "--metrics", "0", "--workers", "2",
        "--log-format", "json", *options,
    )  # fmt: skip
    return server, metrics_url(server)


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """Each worker's pid, by number, as the parent logged them ready."""
    ready = re.findall(r"worker (\d) ready \(pid (\d+)\)", server.stderr())
    return {int(number): int(pid) for number, pid in ready}


def test_a_killed_workers_figures_stay_in_the_sums(procs: Processes, short_tmp: Path) -> None:
    server, url = two_workers(procs, short_tmp)
    listener = str(server.unix())
    for i in range(40):
        assert exchange(server.unix(), b"AB" * (1 + i % 5)) == b"BC" * (1 + i % 5)
    before = scrape(url)
    number, pid = max(worker_pids(server).items())
    victim_accepted = figure(before, "accepted", listener, number)
    os.kill(pid, signal.SIGKILL)
    wait_for_log(server, f"worker {number} restarted")
    after = scrape(url)
    for name in NAMES:
        if name != "active":
            assert figure(after, name, listener) == figure(before, name, listener), name
    # The new worker starts from nothing; the sums still hold what the old one did.
    assert figure(after, "accepted", listener, number) == 0
    assert figure(after, "accepted", listener) == 40
    assert 0 <= victim_accepted <= 40
    assert server.stop() == 0


def test_while_stopping_a_worker_that_exits_leaves_its_final_figures_in_the_sums(
    procs: Processes, short_tmp: Path
) -> None:
    server, url = two_workers(procs, short_tmp, "--grace", "30")
    listener = str(server.unix())
    with connect(server.unix()) as held:
        held.sendall(b"A")
        assert held.recv(1) == b"B"
        scrape(url)  # every worker's figures as of now...
        for _ in range(30):  # ...and then some that only their final reports can tell
            assert exchange(server.unix(), b"AB") == b"BC"
        server.send_signal(signal.SIGTERM)
        poll_until(lambda: len(workers_of(server)) == 1, "the idle worker gone")
        during = scrape(url)  # the held client's worker serves it out meanwhile
        assert figure(during, "accepted", listener) == 31
        assert figure(during, "bytes_in", listener) == 61
        assert figure(during, "active", listener) == 1
    assert server.wait() == 0


def test_a_frozen_worker_delays_a_scrape_by_a_second_at_most(
    procs: Processes, short_tmp: Path
) -> None:
    server, url = two_workers(procs, short_tmp)
    listener = str(server.unix())
    for _ in range(10):
        assert exchange(server.unix(), b"A") == b"B"
    before = scrape(url)
    pid = worker_pids(server)[1]
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        during = scrape(url)  # the other worker answers; this one is shown as it was
        took = time.monotonic() - start
    finally:
        os.kill(pid, signal.SIGCONT)
    assert REPORT_TIMEOUT <= took < REPORT_TIMEOUT + 2, took
    assert during == before
    assert figure(during, "accepted", listener) == 10
    assert scrape(url) == before
    assert server.stop() == 0


def test_a_metrics_port_in_use_is_one_line_and_exit_1(short_tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "server", "--unix", str(short_tmp / "s"), "--metrics", str(port),
            cwd=short_tmp, timeout=FAIL_TIMEOUT,
        )  # fmt: skip
    assert_user_error(
        result,
        f"127.0.0.1:{port}: address already in use",
        "with --metrics",
        starts_with="trio_sock server: error: cannot listen on",
    )
    assert not (short_tmp / "s").exists()  # nothing else was opened


def test_without_prometheus_client_metrics_say_what_to_install(short_tmp: Path) -> None:
    blocked = "import sys; sys.modules['prometheus_client'] = None; import runpy;"
    runs = "runpy.run_module('trio_sock', run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", blocked + runs, "server", "--unix", str(short_tmp / "s"),
         "--metrics", "0"],
        cwd=short_tmp, capture_output=True, text=True, timeout=FAIL_TIMEOUT, check=False,
    )  # fmt: skip
    assert_user_error(
        result, "prometheus_client", "pip install 'trio_sock[metrics]'",
        starts_with="trio_sock server: error: --metrics needs",
    )  # fmt: skip
    assert not (short_tmp / "s").exists()


@pytest.mark.parametrize(
    ("options", "clash"),
    [
        (["--metrics", "9734"], "tcp:127.0.0.1:9734"),  # the default TCP listener
        (["--tcp", "0.0.0.0:9100", "--metrics", "9100"], "tcp:0.0.0.0:9100"),
        (["--tcp", "[::1]:9100", "--metrics", "[::]:9100"], "tcp:[::1]:9100"),
        (["--tcp", "127.0.0.1:9100", "--metrics", "0.0.0.0:9100"], "tcp:127.0.0.1:9100"),
    ],
)
def test_metrics_on_a_port_the_server_listens_on_is_a_usage_error(
    short_tmp: Path, options: list[str], clash: str
) -> None:
    result = run_cli("server", *options, cwd=short_tmp, timeout=FAIL_TIMEOUT)
    assert result.returncode == 2, result
    assert f"argument --metrics: the server listens on {clash} already" in result.stderr
    assert_no_traceback(result.stderr)
    assert not (short_tmp / "server_socket").exists()


def test_metrics_on_the_same_port_of_another_family_is_no_clash(short_tmp: Path) -> None:
    from trio_sock.cli.options import parse

    for options in (
        ["--tcp", "127.0.0.1:9100", "--metrics", "[::]:9100"],
        ["--tcp", "[::1]:9100", "--metrics", "0.0.0.0:9100"],
        ["--tcp", "127.0.0.2:9100", "--metrics", "127.0.0.1:9100"],
        ["--tcp", "0", "--metrics", "0"],
    ):
        command = parse(["server", *options])
        assert command.metrics is not None, options


@pytest.mark.parametrize("value", ["abc", "1:2:3", "70000", "localhost:"])
def test_a_malformed_metrics_address_is_a_usage_error(short_tmp: Path, value: str) -> None:
    result = run_cli("server", "--metrics", value, cwd=short_tmp, timeout=FAIL_TIMEOUT)
    assert result.returncode == 2, result
    assert "argument --metrics" in result.stderr
    assert_no_traceback(result.stderr)
