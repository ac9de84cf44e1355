"""Helpers for tests that run the real command line in a subprocess."""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import pytest
import trio

from trio_sock import Server, ServerConfig, serve
from trio_sock.config.addresses import Address, TcpAddress, UnixAddress, parse_address
from trio_sock.server.ready import READY_PREFIX as READY_PREFIX
from trio_sock.server.ready import ready_words

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from trio_sock.server.handlers import Handler

#: A client run against a live local server takes a fraction of a second; this
#: only bounds a hang, so that a broken build fails instead of stalling the suite.
CLIENT_TIMEOUT: Final = 20.0
#: Socket operations against a local server complete in milliseconds; this bounds a hang.
IO_TIMEOUT: Final = 5.0
#: Generous: a loaded CI machine may take a while to start Python and import Trio.
START_TIMEOUT: Final = 20.0
#: How long a test waits for a log line, a datagram or an exit that should come promptly.
EVENT_TIMEOUT: Final = 10.0
#: How long a command line that must fail at once (exit 1 or 2) may take.
FAIL_TIMEOUT: Final = 15.0
#: The step of the one polling loop: a subprocess's stderr goes to a regular file,
#: which never signals readiness, so waiting for a log line means re-reading it.
LOG_POLL: Final = 0.01
#: The book's port: the server's default, used only by the tests of the defaults.
BOOK_PORT: Final = 9734
#: What the client prints for the reply to its default byte, ``A``.
SUCCESS: Final = "char from server = B\n"


def cli(*args: str) -> list[str]:
    """The command line of ``python -m trio_sock ARGS``, with this interpreter."""
    return [sys.executable, "-m", "trio_sock", *args]


class HasStderr(Protocol):
    """A subprocess whose stderr a test can read at any time (it goes to a file)."""

    @property
    def process(self) -> subprocess.Popen[bytes]: ...

    def stderr(self) -> str: ...


@attrs.define
class Child:
    """A subprocess started by ``spawn``: stdout piped, stderr into a file."""

    process: subprocess.Popen[bytes]
    stderr_path: Path

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.stderr_path.read_text()


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


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: int = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> Child:
    """Start ``argv`` in ``cwd`` with stdout piped and stderr into a new file in ``cwd``."""
    fd, name = tempfile.mkstemp(prefix="ts-stderr-", dir=cwd)
    os.close(fd)
    stderr_path = Path(name)
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            pass_fds=pass_fds,
            preexec_fn=preexec_fn,
        )
    return Child(process, stderr_path)


def addresses_in(ready_line: str) -> list[Address]:
    """The addresses a ready line (``server waiting on ADDRESS...``) lists."""
    return [parse_address(word) for word in ready_words(ready_line)]


def ready(child: Child, timeout: float = START_TIMEOUT) -> ServerProcess:
    """Wait for the ready line of a started server (never a sleep) and parse its addresses.

    Raises:
        AssertionError: the server exited, or printed no ready line in time;
            the message holds its stderr.  The server is killed first.
    """
    process = child.process
    assert process.stdout is not None
    line = read_line(process.stdout.fileno(), timeout)
    if not line.startswith(READY_PREFIX):
        process.kill()
        process.wait()
        process.stdout.close()
        raise AssertionError(
            f"no ready line; stdout {line!r}, exit {process.returncode}, stderr:\n{child.stderr()}"
        )
    return ServerProcess(process, addresses_in(line), child.stderr_path)


def start_server(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = START_TIMEOUT,
) -> ServerProcess:
    """Start the server with ``args`` in ``cwd`` and wait for its ready line (never a sleep).

    Raises:
        AssertionError: the server exited, or printed no ready line in time;
            the message holds its stderr.
    """
    child = spawn(cli("server", *args), cwd=cwd, env=env, pass_fds=pass_fds, preexec_fn=preexec_fn)
    return ready(child, timeout)


@attrs.define
class Processes:
    """Every subprocess a test starts; ``cleanup`` kills what still runs and closes the pipes."""

    cwd: Path
    _popens: list[subprocess.Popen[bytes]] = attrs.field(factory=list)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int = subprocess.DEVNULL,
        pass_fds: Sequence[int] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> Child:
        """``spawn(argv)`` in ``cwd``: stdout piped, stderr into a file."""
        child = spawn(
            argv, cwd=self.cwd, env=env, stdin=stdin, pass_fds=pass_fds, preexec_fn=preexec_fn
        )
        self._popens.append(child.process)
        return child

    def server(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> ServerProcess:
        """Start ``python -m trio_sock server ARGS`` in ``cwd``; return once it is ready."""
        return ready(
            self.spawn(cli("server", *args), env=env, pass_fds=pass_fds, preexec_fn=preexec_fn)
        )

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(python -m trio_sock ARGS)`` in ``cwd``, stdout and stderr piped."""
        process = subprocess.Popen(
            cli(*args),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._popens.append(process)
        return process

    def cleanup(self) -> None:
        for process in self._popens:
            if process.poll() is None:
                process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()


def wait_for_log(
    process: HasStderr,
    text: str,
    timeout: float = EVENT_TIMEOUT,
    *,
    until: Callable[[str], bool] | None = None,
) -> str:
    """Wait until the process's stderr contains ``text`` (and ``until(stderr)`` holds).

    Returns the whole stderr; fails at once if the process exits first.
    """
    wanted = repr(text) if until is None else f"{text!r} (and until(stderr) true)"
    deadline = time.monotonic() + timeout
    while True:
        exited = process.process.poll() is not None
        log = process.stderr()
        if text in log and (until is None or until(log)):
            return log
        if exited:
            pytest.fail(
                f"the process exited ({process.process.returncode}) before its stderr held"
                f" {wanted}:\n{log}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"its stderr did not hold {wanted} within {timeout}s:\n{log}")
        time.sleep(LOG_POLL)


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


def assert_user_error(
    result: subprocess.CompletedProcess[str], *fragments: str, starts_with: str = ""
) -> str:
    """Exit 1, nothing on stdout, one stderr line holding every fragment; returns the line.

    Args:
        result: The finished command.
        fragments: Text the error line must contain.
        starts_with: What the error line must begin with, such as ``trio_sock server: error: ``.
    """
    assert_no_traceback(result.stdout, result.stderr)
    assert result.returncode == 1, result
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith(starts_with), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def lock_of(path: Path) -> Path:
    """The lock file a server takes beside a socket file it binds itself."""
    return path.with_name(path.name + ".lock")


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


async def start_in(
    nursery: trio.Nursery, config: ServerConfig, handler: Handler | None = None
) -> Server:
    """``serve`` started in ``nursery``, as the library's users start it."""
    server: Server = await nursery.start(serve, config, handler)
    return server


async def receive_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything ``stream`` receives until the server's EOF (``receive_until_eof``, on Trio)."""
    received = b""
    while chunk := await stream.receive_some():
        received += chunk
    return received


def address_of(server: Server, transport: str) -> Address:
    """The server's first address of ``transport``, ``"unix"`` or ``"tcp"``."""
    kind = UnixAddress if transport == "unix" else TcpAddress
    return next(a for a in server.addresses if isinstance(a, kind))


async def open_stream(address: Address) -> trio.SocketStream:
    """A plain Trio stream to ``address``."""
    if isinstance(address, UnixAddress):
        return await trio.open_unix_socket(address.sockaddr)
    return await trio.open_tcp_stream(address.host, address.port)


def strace_missing() -> str | None:
    """Why strace cannot trace a process here (to skip with), or None if it can."""
    strace = shutil.which("strace")
    if strace is None:
        return "needs strace (CI installs it)"
    done = subprocess.run(
        [strace, "-q", "-o", "/dev/null", "true"], capture_output=True, timeout=30, check=False
    )
    if done.returncode != 0:
        return f"strace cannot trace here: {done.stderr.decode(errors='replace').strip()}"
    return None
