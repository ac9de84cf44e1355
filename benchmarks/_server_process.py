"""A server under measurement, run as a subprocess: started, its ready line read, read in /proc.

Shared by the scripts in this directory, which import it as a top-level module:
run as ``python benchmarks/NAME.py``, a script's own directory is first on sys.path.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

from _machine import raise_fd_limit

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Starting Python and importing Trio takes well under a second; this is "broken".
START_TIMEOUT: Final = 30.0
#: trio_sock's --grace is 5 s; a server still running well after that is stuck.
STOP_TIMEOUT: Final = 30.0

#: The project root: the servers run there, so that ``-m trio_sock`` finds this
#: tree's package, installed or not.
ROOT: Final = Path(__file__).resolve().parent.parent


class BenchmarkError(Exception):
    """A run went wrong: the server did not start, died, hung, or did not serve every client."""


class ServerProcess:
    """A server subprocess whose ready line has been read; a context manager that kills it.

    Its stdout is a pipe that only the ready line is read from; its stderr goes to
    ``stderr_path``.  A subclass checks the ready line in ``check_ready_line``.
    """

    def __init__(self, name: str, command: Sequence[str], stderr_path: Path) -> None:
        self.name = name
        """What error messages call the server."""
        self._stderr_path = stderr_path
        with stderr_path.open("wb") as stderr:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                preexec_fn=raise_fd_limit,
            )
        try:
            self.ready_line = self._read_ready_line()
            self.check_ready_line(self.ready_line)
        except BaseException:
            self.kill()
            raise
        self._ticks = os.sysconf("SC_CLK_TCK")

    def check_ready_line(self, line: str) -> None:
        """Raise BenchmarkError unless ``line`` is the ready line this server must print."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_ready_line(self) -> str:
        """Wait for the first line on stdout: readiness is announced, never guessed."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        data = b""
        deadline = time.monotonic() + START_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchmarkError(f"{self.name}: no ready line within {START_TIMEOUT}s")
                if not selector.select(remaining):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.process.wait(STOP_TIMEOUT)
                    raise BenchmarkError(
                        f"{self.name} exited {self.process.returncode} before its ready line;"
                        f" stderr: {self.stderr()!r}"
                    )
                data += chunk
        return data.decode(errors="replace").strip()

    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self._stderr_path.read_text(errors="replace")

    def exited(self) -> int | None:
        """The exit code, or None while the server runs."""
        return self.process.poll()

    def alive(self) -> None:
        """Raise BenchmarkError if the server has exited."""
        if self.process.poll() is not None:
            raise BenchmarkError(
                f"{self.name} exited {self.process.returncode} mid-run; stderr: {self.stderr()!r}"
            )

    def fd_count(self) -> int:
        """How many descriptors the server holds right now, from /proc/PID/fd."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        """VmRSS from /proc/PID/status, in KiB (the kernel's "kB")."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchmarkError(f"no VmRSS in /proc/{self.pid}/status")

    def cpu_seconds(self) -> float:
        """User plus system CPU time, from /proc/PID/stat (fields 14 and 15)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
        return (int(fields[11]) + int(fields[12])) / self._ticks

    def stop(self) -> int:
        """SIGTERM, then wait for the exit; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchmarkError(
                f"{self.name} still running {STOP_TIMEOUT}s after SIGTERM"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
