"""docs/walkthrough.md, run: every command in it, in order, in one shell, as a reader would.

Each ``console`` block holds commands (``$ ...``) and what they print.  They run
in one bash process (so ``&``, ``$!`` and ``wait`` work as in a terminal), in an
empty directory that links the project's ``tests`` and ``examples``, with this
virtual environment's ``python`` first on the PATH.  Each command's output is
compared with the page: digits may differ (descriptors, times, pids, inodes),
runs of spaces may differ (``ss`` sizes its columns), and a ``...`` line stands
for any lines, or none.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
PAGE: Final = ROOT / "docs" / "walkthrough.md"
MARK: Final = "@@@ step "
#: The whole walk: three servers, a few one-second waits.
TIMEOUT: Final = 120


def steps(text: str) -> list[tuple[str, list[str]]]:
    """Each command of the page's console blocks, with the lines it should print."""
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```console\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            else:
                found[-1][1].append(line)
    return found


def _loose(line: str) -> str:
    return " ".join(line.split())


def pattern(expected: list[str]) -> re.Pattern[str]:
    """A regex for a command's output: digits and spacing free, ``...`` any lines."""
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(re.sub(r"\\?\d+", r"\\d+", re.escape(_loose(line))) + r"\n")
    return re.compile("".join(parts))


def missing() -> str | None:
    """Why the walk cannot run here, or None."""
    for tool, package in (("ss", "iproute2"), ("gcc", "gcc"), ("nc", "netcat-openbsd")):
        if shutil.which(tool) is None:
            return f"needs {tool} ({package}; CI installs it)"
    usage = subprocess.run(["nc", "-h"], capture_output=True, text=True, check=False)
    if "OpenBSD" not in usage.stdout + usage.stderr:
        return "needs OpenBSD netcat (netcat-openbsd) for nc -N"
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 9734))
        except OSError:
            return "port 9734, the book's, is in use here"
    return None


def test_the_pattern_lets_digits_spacing_and_elisions_vary() -> None:
    assert pattern(["fd 8 = 0", "..."]).fullmatch("fd 12 = 0\nmore\nlines\n")
    assert pattern(["a  b   c"]).fullmatch("a b c\n")
    assert not pattern(["fd 8 = 0"]).fullmatch("fd 8 = -1\n")
    assert not pattern(["x", "y"]).fullmatch("x\n")


def test_the_page_has_steps() -> None:
    found = steps(PAGE.read_text())
    assert len(found) >= 20
    assert found[0] == (
        "python -m trio_sock client",
        [
            "oops: client: unix:server_socket: No such file or directory; is the server"
            " running? start one with: python -m trio_sock server"
        ],
    )


@pytest.mark.skipif(missing() is not None, reason=missing() or "")
def test_every_command_of_the_walkthrough_prints_what_the_page_says(short_tmp: Path) -> None:
    found = steps(PAGE.read_text())
    for name in ("tests", "examples"):
        (short_tmp / name).symlink_to(ROOT / name)
    script = [f"cd {short_tmp}"]
    for number, (command, _) in enumerate(found):
        # A newline, not "; }": a command may end in "&".
        script += [f"printf '\\n{MARK}%s\\n' {number}", f"{{ {command}\n}} 2>&1"]
    script += ["kill $(jobs -p) 2>/dev/null", "wait"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    process = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # the servers it starts are stopped with it
    )
    try:
        out, _ = process.communicate(timeout=TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    outputs = re.split(rf"\n{MARK}\d+\n", "\n" + out)[1:]
    assert len(outputs) == len(found), out
    for (command, expected), output in zip(found, outputs, strict=True):
        actual = "".join(_loose(line) + "\n" for line in output.splitlines())
        assert pattern(expected).fullmatch(actual), f"$ {command}\n{output}"
