"""Helpers for tests that run the real command line in a subprocess."""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from trio_sock.config import Address, TcpAddress, UnixAddress, parse_address

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

READY_PREFIX = "server waiting on "
#: A client run against a live local server takes a fraction of a second; this
#: only bounds a hang, so that a broken build fails instead of stalling the suite.
CLIENT_TIMEOUT = 20.0
#: Socket operations against a local server complete in milliseconds; this bounds a hang.
IO_TIMEOUT = 5.0
#: Generous: a loaded CI machine may take a while to start Python and import Trio.
START_TIMEOUT = 20.0


def cli(*args: str) -> list[str]:
    """The command line of ``python -m trio_sock ARGS``, with this interpreter."""
    return [sys.executable, "-m", "trio_sock", *args]


@attrs.define
class ServerProcess:
    """A ``python -m trio_sock server`` subprocess whose ready line has been read."""

    process: subprocess.Popen[bytes]
    addresses: list[Address]
    _stderr: Path

    def unix(self) -> UnixAddress:
        """The first Unix address in the ready line."""
        return next(a for a in self.addresses if isinstance(a, UnixAddress))

    def tcp(self) -> TcpAddress:
        """The first TCP address in the ready line."""
        return next(a for a in self.addresses if isinstance(a, TcpAddress))

    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self._stderr.read_text()

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the exit; returns the exit code."""
        code = self.process.wait(timeout=timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the server and wait for its exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


def start_server(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = START_TIMEOUT,
) -> ServerProcess:
    """Start the server with ``args`` in ``cwd`` and wait for its ready line (never a sleep).

    Raises:
        AssertionError: the server exited, or printed no ready line in time;
            the message holds its stderr.
    """
    fd, name = tempfile.mkstemp(prefix="ts-stderr-", dir=cwd)
    os.close(fd)
    stderr_file = Path(name)
    with stderr_file.open("wb") as stderr:
        process = subprocess.Popen(
            cli("server", *args),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            preexec_fn=preexec_fn,
        )
    assert process.stdout is not None
    line = read_line(process.stdout.fileno(), timeout)
    if not line.startswith(READY_PREFIX):
        process.kill()
        process.wait()
        process.stdout.close()
        raise AssertionError(
            f"no ready line; stdout {line!r}, exit {process.returncode},"
            f" stderr:\n{stderr_file.read_text()}"
        )
    words = shlex.split(line.removeprefix(READY_PREFIX))
    return ServerProcess(process, [parse_address(word) for word in words], stderr_file)


def read_line(fd: int, timeout: float) -> str:
    """The first line written to ``fd`` within ``timeout`` seconds ("" if none)."""
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return data.decode().partition("\n")[0]


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = 30.0,
    input: bytes | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trio_sock ARGS`` to completion, capturing text output."""
    return subprocess.run(
        cli(*args),
        cwd=cwd,
        preexec_fn=preexec_fn,
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_PR_CAPBSET_DROP = 24  # from <linux/prctl.h>
_LAST_CAPABILITY = 63  # more than any kernel defines; unknown ones fail harmlessly


def drop_capabilities() -> None:
    """In a child process run as root: empty the capability bounding set.

    The ``exec`` that follows then gives root no capabilities at all, so file
    permissions and privileged ports apply to it as to anyone, while the
    interpreter (often under /root) stays reachable, which becoming ``nobody``
    would not allow.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in range(_LAST_CAPABILITY + 1):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)


def unprivileged() -> Callable[[], None] | None:
    """A ``preexec_fn`` that takes a root test's privileges away from its subprocess."""
    return drop_capabilities if os.geteuid() == 0 else None


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


def one_line(text: str) -> str:
    """The single non-empty line of ``text``; fails if there are more or none."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def command_words(args: Sequence[str]) -> str:
    return " ".join(args)


def run_client(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("client", *args, cwd=cwd, timeout=CLIENT_TIMEOUT)


def connect(address: Address, timeout: float = IO_TIMEOUT) -> socket.socket:
    """A plain blocking socket connected to ``address``, with ``timeout`` on every call."""
    if isinstance(address, TcpAddress):
        return socket.create_connection((address.host, address.port), timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address.sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def receive_until_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def exchange(address: Address, data: bytes) -> bytes:
    """Send ``data``, shut down the sending side, return everything until the server's EOF."""
    with connect(address) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return receive_until_eof(sock)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def accept_failures(log: str) -> list[int]:
    """How many failed accepts each warning line of ``log`` reports (1 if it gives no count)."""
    return [
        int(count[1]) if (count := re.search(r"failed (\d+) times", line)) else 1
        for line in log.splitlines()
        if "accept on" in line
    ]
