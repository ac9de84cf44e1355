"""examples/deploy/prometheus.yml: a real Prometheus scrapes ``--metrics`` of two servers,
one with workers, and its queries agree with the clients the test made.

Real processes on loopback: Debian's ``prometheus`` with the example's configuration
(interval and targets filled in), and ``python -m trio_sock server --metrics``; skipped
with the reason where Prometheus is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from tests.helpers import EVENT_TIMEOUT, LOG_POLL, exchange, wait_for_log
from tests.listen.test_systemd import free_tcp_port

if TYPE_CHECKING:
    from tests.helpers import Processes, ServerProcess

CONFIG: Final = Path(__file__).resolve().parent.parent / "examples" / "deploy" / "prometheus.yml"
#: Prometheus starts in a second or two here, and scrapes every second in this test.
PROMETHEUS_TIMEOUT: Final = 30.0

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="needs prometheus (CI installs it)"
)


def metrics_target(server: ServerProcess) -> str:
    found = re.search(r"metrics at http://(\S+)/metrics", wait_for_log(server, "metrics at"))
    assert found is not None
    return found[1]


def api(port: int, path: str, **params: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=EVENT_TIMEOUT) as response:
        answer: dict[str, Any] = json.load(response)
    assert answer["status"] == "success", answer
    data: dict[str, Any] = answer["data"]
    return data


def value(port: int, query: str) -> float | None:
    """The one value of an instant query; ``None`` while it has none."""
    found = api(port, "query", query=query)["result"]
    return float(found[0]["value"][1]) if found else None


def wait_for(port: int, query: str, expected: float) -> None:
    """Poll ``query`` until it gives ``expected``: Prometheus scrapes on its own clock."""
    deadline = time.monotonic() + PROMETHEUS_TIMEOUT
    while (got := value(port, query)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{query} was {got}, not {expected}, after {PROMETHEUS_TIMEOUT}s")
        time.sleep(LOG_POLL * 10)


def test_prometheus_scrapes_every_server_and_its_sums_match_the_clients(
    procs: Processes, short_tmp: Path
) -> None:
    one = procs.server("--unix", str(short_tmp / "one"), "--metrics", "0")
    many = procs.server(
        "--unix", str(short_tmp / "many"), "--tcp", "0", "--workers", "2", "--metrics", "0"
    )  # fmt: skip
    targets = [metrics_target(one), metrics_target(many)]
    web = free_tcp_port()
    config = short_tmp / "prometheus.yml"
    config.write_text(
        CONFIG.read_text().format(interval="1s", targets=", ".join(map(json.dumps, targets)))
    )
    prometheus = procs.spawn(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={short_tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ]
    )
    wait_for_log(prometheus, "Server is ready to receive web requests", PROMETHEUS_TIMEOUT)
    for i in range(12):
        assert exchange(one.unix(), b"ping") == b"qjoh"
        if i % 3 == 0:
            assert exchange(many.tcp(), b"A" * i) == b"B" * i
        assert exchange(many.unix(), b"xy") == b"yz"
    wait_for(web, 'sum(trio_sock_accepted_total{job="trio_sock"})', 12 + 4 + 12)
    wait_for(web, f'trio_sock_bytes_in_total{{listener="{many.tcp()}"}}', 0 + 3 + 6 + 9)
    wait_for(web, f'trio_sock_accepted_total{{listener="{one.unix()}"}}', 12)
    # Each worker's series add up to the sums; both targets are healthy.
    wait_for(web, f'sum(trio_sock_worker_accepted_total{{instance="{targets[1]}"}})', 16)
    health = api(web, "targets")["activeTargets"]
    assert sorted(t["scrapeUrl"] for t in health) == sorted(f"http://{t}/metrics" for t in targets)
    assert [(t["health"], t["lastError"]) for t in health] == [("up", "")] * 2
    wait_for(web, "sum(trio_sock_active)", 0)
    for process in (one, many):
        assert process.stop() == 0
