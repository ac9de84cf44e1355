"""A minute of benchmarks/soak.py: mixed load on both transports, fds and RSS flat.

The 10-minute figures live in benchmarks/soak.md; this is the CI-sized run of the
same script, its results kept out of the committed files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOAK = ROOT / "benchmarks" / "soak.py"
#: 60 s of load, a 2 s warm-up, a few seconds to start and stop the server;
#: pytest's timeout (180 s) stays the one that a hung run meets.
RUN_TIMEOUT = 170


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_minute_of_mixed_load_gets_only_right_replies_and_leaves_fds_and_rss_flat(
    tmp_path: Path,
) -> None:
    # --sample 1: each 10-second window then holds 10 samples, not 2.
    command = [
        sys.executable,
        str(SOAK),
        "--duration",
        "60",
        "--sample",
        "1",
        "--check",
        "--output-dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output

    report = json.loads((tmp_path / "soak.json").read_text())
    checks = {check["name"]: check for check in report["checks"]}
    assert report["passed"], checks
    assert report["wrong"] == 0, report["problems"]
    assert report["failed"] == 0, report["problems"]
    assert checks["fds"]["ok"], checks["fds"]["detail"]
    assert checks["rss"]["ok"], checks["rss"]["detail"]
    assert checks["drain"]["ok"], checks["drain"]["detail"]
    assert report["server_exit_code"] == 0, report["server_stderr"]
    # The load really ran: every kind of client, on both transports.
    for kind, transports in report["kinds"].items():
        for transport, tally in transports.items():
            assert tally["ok"] > 0, (kind, transport)

    markdown = (tmp_path / "soak.md").read_text()
    assert "**Verdict: flat, no failures.**" in markdown, markdown
    assert "0 wrong replies" in markdown, markdown
