"""benchmarks/perf.py, run tiny: every workload on both transports, every reply right.

The figures themselves are never checked: CI machines are shared and noisy, and a
speed assertion would fail for reasons that have nothing to do with the code.  What
is checked is that the C load generator and C server build, that every server
starts and serves every workload, that the load generator found no wrong reply, and
that the report holds its tables.  The real figures live in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
PERF: Final = ROOT / "benchmarks" / "perf.py"
#: --smoke takes about 15 s (30 measurements of 0.4 s, 15 server starts, two C
#: builds); this only bounds a hang, and pytest's own timeout stays above it.
RUN_TIMEOUT: Final = 100
SERVERS: Final = ("c", "trio_sock", "bare_trio")
TRANSPORTS: Final = ("unix", "tcp")
#: (workload, case) of every measurement --smoke makes; idle uses N = 100 and 300.
CASES: Final = (
    ("connect", ""),
    ("pingpong", "c=1"),
    ("pingpong", "c=64"),
    ("stream", ""),
    ("idle", "N=100"),
    ("idle", "N=300"),
)

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None,
    reason="gcc is needed to build benchmarks/loadgen.c and benchmarks/c_server.c",
)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One ``perf.py --smoke`` run for every test here: its RESULTS.json and RESULTS.md."""
    output = tmp_path_factory.mktemp("perf")
    result = subprocess.run(
        [sys.executable, str(PERF), "--smoke", "--output-dir", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "Traceback" not in log, log
    report: dict[str, Any] = json.loads((output / "RESULTS.json").read_text())
    return report, (output / "RESULTS.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_smoke_run_measures_every_workload_of_every_server_on_both_transports(
    smoke_run: tuple[dict[str, Any], str],
) -> None:
    report, _ = smoke_run
    samples = {
        (s["workload"], s["case"], s["transport"], s["server"]): s for s in report["samples"]
    }
    for workload, case in CASES:
        for transport in TRANSPORTS:
            for server in SERVERS:
                key = (workload, case, transport, server)
                sample = samples.get(key)
                assert sample is not None, f"no sample for {key}"
                assert sample["error"] is None, (key, sample["error"])
                assert sample["verify_failures"] == 0, (key, sample["messages"])
                assert sample["errors"] == 0, (key, sample["messages"])
                assert sample["value"] is not None, key
                if workload == "idle":
                    # Every idle client still answered at the end.
                    assert sample["detail"]["echoed"] == sample["detail"]["echo_total"] == 300
                    # The C server's memory per idle connection rounds to nothing.
                    if server != "c":
                        assert sample["value"] > 0, key
                else:
                    assert sample["value"] > 0, key
                    assert sample["seconds"] > 0, key


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_smoke_run_writes_every_table_and_a_target_row_per_transport(
    smoke_run: tuple[dict[str, Any], str],
) -> None:
    report, markdown = smoke_run
    for heading in (
        "## Targets",
        "## Connect per request (connections/s)",
        "## Ping-pong on persistent connections (requests/s)",
        "## Streaming (MB/s)",
        "## Idle connections (KiB/conn)",
        "## Load generator headroom",
        "### unix, c=64",
        "### tcp, c=1",
    ):
        assert heading in markdown, heading
    assert "| server | connections/s | x C | x bare Trio |" in markdown
    assert "| p50 µs | p99 µs | max µs |" in markdown
    assert "| server | KiB/conn at N=100 | KiB/conn at N=300 |" in markdown
    assert "None: every reply of every run was right" in markdown
    for server in SERVERS:
        assert f"| {server} |" in markdown, server
    # Four targets, each on both transports, with a verdict whatever the figures.
    assert len(report["targets"]) == 8
    assert all(target["met"] is not None for target in report["targets"])
