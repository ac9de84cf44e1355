"""How long ``python -m trio_sock client`` takes, against a bare Trio one-shot client.

A one-shot client is mostly Python starting and importing: the target is the
wall time of ``python -m trio_sock client --unix PATH`` within 1.1x that of the
obvious Trio client (``bare_client.py`` below: ``trio.open_unix_socket``, one
byte there and back, print it), both run against the same server, interleaved,
many times, medians compared.  Both print the same line, and every run's output
is checked.

It runs in a fresh virtual environment with trio_sock installed the way a user
installs it (``pip install .``, byte code compiled by pip), not this checkout's
editable install: an editable install loads its finder at every start, which
would add the same constant to both clients and flatter the ratio.
``--python`` uses an existing environment instead (one where trio_sock is
installed).

Run from the project root (about a minute, most of it creating the venv)::

    python benchmarks/client_startup.py
    python benchmarks/client_startup.py --runs 100 --python .venv/bin/python

It prints the figures and ``-X importtime``'s list of the modules the
trio_sock client imports beyond the bare one, and writes
``benchmarks/client_startup.json`` (into ``--output-dir`` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Final

from _machine import machine_info
from _server_process import ROOT, BenchmarkError

from trio_sock.server.ready import is_ready_line

#: Enough runs that the median holds still on a noisy machine (about 0.1 s each).
DEFAULT_RUNS: Final = 60
#: The issue's target: the trio_sock client within this factor of the bare one.
TARGET: Final = 1.1
EXPECTED: Final = "char from server = B"

BARE_CLIENT: Final = '''\
"""The obvious one-shot Trio client: connect, send one byte, print the reply."""
import sys

import trio


async def main() -> None:
    stream = await trio.open_unix_socket(sys.argv[1])
    async with stream:
        await stream.send_all(b"A")
        print("char from server =", (await stream.receive_some(1)).decode())


trio.run(main)
'''


def make_venv(where: Path) -> Path:
    """A fresh venv at ``where`` with trio_sock installed from this tree; its python."""
    print(f"creating a venv in {where} and installing trio_sock (pip install .)", file=sys.stderr)
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True,
    )
    return python


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or done.stdout.strip() != EXPECTED:
        raise BenchmarkError(f"{command} printed {done.stdout!r} {done.stderr!r}")
    return elapsed


def extra_imports(
    python: Path, ours: list[str], bare: list[str], env: dict[str, str]
) -> list[tuple[str, int]]:
    """The modules ``ours`` imports that ``bare`` does not, by self time (µs), largest first."""

    def imports(command: list[str]) -> dict[str, int]:
        done = subprocess.run(
            [command[0], "-X", "importtime", *command[1:]],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        found = {}
        for line in done.stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                self_us, _, name = line.split(":", 1)[1].split("|")
                found[name.strip()] = int(self_us)
        return found

    theirs = imports(bare)
    return sorted(
        ((name, us) for name, us in imports(ours).items() if name not in theirs),
        key=lambda item: -item[1],
    )


def measure(python: Path, runs: int) -> dict[str, object]:
    """Start a server, time both clients ``runs`` times each, interleaved; the figures."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="ts-client-") as tmp:
        path = Path(tmp) / "sock"
        bare_script = Path(tmp) / "bare_client.py"
        bare_script.write_text(BARE_CLIENT)
        server = subprocess.Popen(
            [str(python), "-m", "trio_sock", "server", "--unix", str(path), "--log-level", "error"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp,
            env=env,
        )
        try:
            assert server.stdout is not None
            ready = server.stdout.readline()
            if not is_ready_line(ready.encode()):
                raise BenchmarkError(f"the server did not start: {ready!r}")
            ours = [str(python), "-m", "trio_sock", "client", "--unix", str(path)]
            bare = [str(python), str(bare_script), str(path)]
            for command in (ours, bare):  # warm the page cache and write byte code
                _timed(command, env)
            times: dict[str, list[float]] = {"trio_sock": [], "bare": []}
            for run in range(runs):
                pair = [("trio_sock", ours), ("bare", bare)]
                for name, command in pair if run % 2 else reversed(pair):
                    times[name].append(_timed(command, env))
                if (run + 1) % 10 == 0:
                    print(f"  {run + 1}/{runs} runs each", file=sys.stderr)
            extra = extra_imports(python, ours, bare, env)
        finally:
            server.terminate()
            server.wait()
    ours_ms = statistics.median(times["trio_sock"]) * 1e3
    bare_ms = statistics.median(times["bare"]) * 1e3
    ratios = [a / b for a, b in zip(times["trio_sock"], times["bare"], strict=True)]
    return {
        "runs": runs,
        "trio_sock_ms": round(ours_ms, 2),
        "bare_ms": round(bare_ms, 2),
        "ratio": round(ours_ms / bare_ms, 3),
        "median_pair_ratio": round(statistics.median(ratios), 3),
        "target": TARGET,
        "met": ours_ms / bare_ms <= TARGET,
        "extra_imports_us": extra,
        "samples_s": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs of each client")
    parser.add_argument("--python", type=Path, help="a python with trio_sock installed (no venv)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ts-venv-") as tmp:
        python = args.python or make_venv(Path(tmp) / "venv")
        result = measure(python, args.runs)
    result = {"machine": machine_info(), **result}
    out = args.output_dir / "client_startup.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"trio_sock client {result['trio_sock_ms']} ms, bare Trio client {result['bare_ms']} ms"
        f" (medians of {args.runs}): ratio {result['ratio']} (target <= {TARGET})"
    )
    print("imported beyond the bare client (self µs):")
    extra: list[tuple[str, int]] = result["extra_imports_us"]  # type: ignore[assignment]
    for name, us in extra[:12]:
        print(f"  {us:6d} {name}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
