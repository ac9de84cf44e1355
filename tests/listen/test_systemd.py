"""Deployment under systemd, from the outside: socket activation, ``--fd``, readiness, units.

Socket activation is tested with the real ``systemd-socket-activate`` (Debian's
``systemd`` package; the tests skip with a reason without it): it listens,
waits for the first client, then execs the server in its own process with
``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES`` set, as systemd does.
``--fd`` is tested with sockets the test opens and passes (``pass_fds``), and
readiness with a datagram socket of the test's standing in as ``NOTIFY_SOCKET``.

Every process is killed at the end of its test whatever the outcome (the
``procs`` fixture).  Nothing sleeps to synchronise: tests wait for the ready
line, a log line, a datagram (with a socket timeout) or an exit.
"""

from __future__ import annotations

import logging
import math
import os
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import pytest

from tests.helpers import (
    BOOK_PORT,
    EVENT_TIMEOUT,
    FAIL_TIMEOUT,
    Child,
    Processes,
    ServerProcess,
    assert_no_traceback,
    assert_user_error,
    cli,
    connect,
    exchange,
    has_ipv6_loopback,
    lock_of,
    ready,
    run_cli,
    wait_for_log,
)
from trio_sock.config.addresses import TcpAddress, UnixAddress

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

#: The start of every error line of a server that refuses to start.
SERVER_ERROR: Final = "trio_sock server: error: "
#: The server reports a changed client count at most about once a second.
STATUS_INTERVAL: Final = 1.0
#: Clients opened at once to see that the STATUS= lines are throttled, not one per change.
BURST_CLIENTS: Final = 20
#: A descriptor number no test process has open: far above the few a starting
#: server opens, below the usual soft limit of 1024.
UNUSED_FD: Final = 1000
#: The lowest descriptor numbers after stdio: a starting server opens its own
#: (Trio's epoll and wake-up sockets, its lock files and listeners) among them.
LOW_FDS: Final = range(3, 13)
#: ``FileDescriptorName=`` of each socket, as the tests pass them to systemd-socket-activate.
UNIX_NAME: Final = "trio-unix"
TCP_NAME: Final = "trio-tcp"

SOCKET_ACTIVATE: Final = shutil.which("systemd-socket-activate")
SYSTEMD_ANALYZE: Final = shutil.which("systemd-analyze")
DEPLOY: Final = Path(__file__).resolve().parents[2] / "examples" / "deploy"

needs_socket_activate = pytest.mark.skipif(
    SOCKET_ACTIVATE is None,
    reason="systemd-socket-activate is not installed (apt-get install systemd)",
)


def assert_stops_cleanly(server: ServerProcess) -> None:
    """SIGTERM ends the server with exit 0 and no traceback."""
    assert server.stop(timeout=EVENT_TIMEOUT) == 0, server.stderr()
    assert_no_traceback(server.stderr())


# --- sockets -----------------------------------------------------------------------------------


def listening(family: int, address: str | tuple[str, int]) -> socket.socket:
    """A stream socket bound to ``address`` and listening, as a parent process would pass it."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind(address)
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


def free_tcp_port() -> int:
    """A loopback port that was free a moment ago.

    systemd-socket-activate refuses port 0, so it needs a real one; another
    program taking it in the few milliseconds before the tool binds it is
    possible in principle, and would fail the test with "Address already in use".
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def inode(path: Path) -> tuple[int, int]:
    found = path.lstat()
    assert stat.S_ISSOCK(found.st_mode), path
    return (found.st_dev, found.st_ino)


# --- NOTIFY_SOCKET -----------------------------------------------------------------------------


@attrs.define
class NotifySocket:
    """A datagram socket standing in for systemd's ``NOTIFY_SOCKET``."""

    sock: socket.socket
    address: str
    """The value of ``NOTIFY_SOCKET``: a path, or ``@NAME`` for an abstract name."""
    received: list[dict[str, str]] = attrs.field(factory=list)
    """Every message so far, each as its ``KEY=VALUE`` lines."""

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a server that should notify this socket."""
        return {**(os.environ if base is None else base), "NOTIFY_SOCKET": self.address}

    def wait_for(self, key: str, matches: Callable[[str], bool] = lambda _: True) -> dict[str, str]:
        """Receive messages until one has ``key`` with a value that ``matches``; return it."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {key}= message within {EVENT_TIMEOUT}s; got {self.received}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            message = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.received.append(message)
            if key in message and matches(message[key]):
                return message


@pytest.fixture(params=["path", "abstract"])
def notify(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[NotifySocket]:
    """A ``NOTIFY_SOCKET``: a file in ``short_tmp``, or an abstract ``@name`` (both are used)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if request.param == "path":
            path = str(short_tmp / "notify")
            sock.bind(path)
            yield NotifySocket(sock, path)
        else:
            name = f"trio-sock-notify-{short_tmp.name}"
            sock.bind("\0" + name)
            yield NotifySocket(sock, "@" + name)


def clients_active(count: int) -> Callable[[str], bool]:
    """Does a ``STATUS=`` value say that ``count`` clients are active?"""
    return lambda status: re.match(rf"{count} active\b", status) is not None


# --- socket activation with systemd-socket-activate --------------------------------------------


def socket_activate(
    *listen: str,
    names: Sequence[str],
    setenv: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
    server_args: Sequence[str] = (),
) -> list[str]:
    """The command line of systemd-socket-activate starting ``python -m trio_sock server``.

    Args:
        listen: The addresses the tool listens on, passed as fds 3, 4...
        names: Their ``FileDescriptorName=`` (``LISTEN_FDNAMES``).
        setenv: Variables for the server.  The tool passes it only ``PATH``,
            ``HOME``, ``TERM``, ``USER`` and these; ``PYTHONPATH`` is added, so
            that a server run from a source tree finds the package.
        options: More options of the tool, such as ``--datagram``.
        server_args: Options of the server.
    """
    assert SOCKET_ACTIVATE is not None
    env = dict(setenv or {})
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return [
        SOCKET_ACTIVATE,
        *options,
        *(f"--listen={address}" for address in listen),
        f"--fdname={':'.join(names)}",
        *(f"--setenv={key}={value}" for key, value in env.items()),
        *cli("server", *server_args),
    ]


@attrs.frozen
class Activated:
    """systemd-socket-activate listening on a Unix path (fd 3) and a loopback port (fd 4)."""

    child: Child
    unix: UnixAddress
    tcp: TcpAddress


def start_activated(procs: Processes, setenv: Mapping[str, str] | None = None) -> Activated:
    """Start the tool; return once it listens (it starts the server on the first client)."""
    path, port = procs.cwd / "s", free_tcp_port()
    argv = socket_activate(
        str(path), f"127.0.0.1:{port}", names=[UNIX_NAME, TCP_NAME], setenv=setenv
    )
    child = procs.spawn(argv)
    wait_for_log(child, f"Listening on 127.0.0.1:{port} as 4.")
    return Activated(child, UnixAddress(str(path)), TcpAddress("127.0.0.1", port))


@needs_socket_activate
@pytest.mark.parametrize("first", ["unix", "tcp"])
def test_the_first_client_starts_the_activated_server_and_gets_its_reply(
    procs: Processes, first: str
) -> None:
    activated = start_activated(procs)
    trigger, other = (
        (activated.unix, activated.tcp) if first == "unix" else (activated.tcp, activated.unix)
    )
    with connect(trigger) as client:
        client.sendall(b"A")
        server = ready(activated.child)  # execed in place: the same pid
        assert client.recv(1) == b"B"
    assert server.addresses == [activated.unix, activated.tcp]
    assert exchange(other, b"HAL") == b"IBM"
    assert exchange(trigger, b"HAL") == b"IBM"


@needs_socket_activate
def test_an_activated_server_logs_each_socket_with_its_fdname(procs: Processes) -> None:
    activated = start_activated(procs)
    assert exchange(activated.unix, b"A") == b"B"
    server = ready(activated.child)
    log = server.stderr()
    assert f"listening on fd 3 ({UNIX_NAME}): {activated.unix}" in log, log
    assert f"listening on fd 4 ({TCP_NAME}): {activated.tcp}" in log, log


@needs_socket_activate
def test_an_activated_server_stops_on_sigterm_and_leaves_the_socket_file_to_systemd(
    procs: Processes,
) -> None:
    activated = start_activated(procs)
    path = Path(activated.unix.path)
    before = inode(path)
    assert exchange(activated.tcp, b"A") == b"B"
    server = ready(activated.child)
    assert not lock_of(path).exists()
    assert_stops_cleanly(server)
    # The server did not bind the file, so it must not remove it: systemd made
    # it and removes it itself (RemoveOnStop=); the tool, execed away, never does.
    assert inode(path) == before
    assert not lock_of(path).exists()


@needs_socket_activate
def test_address_options_win_over_activated_sockets(procs: Processes) -> None:
    path, own = procs.cwd / "activated", procs.cwd / "own"
    argv = socket_activate(
        str(path), names=[UNIX_NAME], server_args=["--unix", str(own), "--tcp", "0"]
    )
    child = procs.spawn(argv)
    wait_for_log(child, f"Listening on {path} as 3.")
    with connect(UnixAddress(str(path))):  # starts the server, which must not serve fd 3
        server = ready(child)
    assert server.addresses == [UnixAddress(str(own)), TcpAddress("127.0.0.1", server.tcp().port)]
    assert exchange(server.unix(), b"A") == b"B"
    assert_stops_cleanly(server)


@needs_socket_activate
def test_an_activated_server_notifies_ready_only_once_started_then_stopping(
    procs: Processes, notify: NotifySocket
) -> None:
    activated = start_activated(procs, setenv={"NOTIFY_SOCKET": notify.address})
    with connect(activated.unix) as client:
        client.sendall(b"A")
        assert client.recv(1) == b"B"
        server = ready(activated.child)
        notify.wait_for("READY", lambda value: value == "1")
        notify.wait_for("STATUS", clients_active(1))
        server.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", lambda value: value == "1")
    assert_stops_cleanly(server)


@needs_socket_activate
def test_an_activated_datagram_socket_is_refused_with_its_fd_and_name(procs: Processes) -> None:
    # A socket unit with ListenDatagram= where ListenStream= was meant.
    path = procs.cwd / "d"
    argv = socket_activate(str(path), names=[UNIX_NAME], options=["--datagram"])
    child = procs.spawn(argv)
    wait_for_log(child, f"Listening on {path} as 3.")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"A", str(path))  # the first datagram starts the server
    assert child.process.wait(timeout=EVENT_TIMEOUT) == 1
    assert child.process.stdout is not None
    assert child.process.stdout.read() == b""
    log = child.stderr()
    assert_no_traceback(log)
    errors = [line for line in log.splitlines() if line.startswith(SERVER_ERROR)]
    assert len(errors) == 1, log
    assert f"fd 3 ({UNIX_NAME})" in errors[0], errors
    assert "datagram" in errors[0], errors


def test_activation_variables_for_another_process_are_ignored(procs: Processes) -> None:
    with socket.socket() as probe:
        # As the server does: connections in TIME_WAIT from earlier runs are no obstacle.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", BOOK_PORT))
        except OSError as exc:
            pytest.skip(f"port {BOOK_PORT} is taken by another program ({exc.strerror})")
    # LISTEN_PID names pid 1, never the server: these sockets are not for it, so
    # it serves the defaults.  Trusting them would fail on fds 3 and 4, never passed.
    env = {**os.environ, "LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    server = procs.server(env=env)
    assert sorted(map(str, server.addresses)) == ["tcp:127.0.0.1:9734", "unix:server_socket"]
    assert exchange(UnixAddress(str(procs.cwd / "server_socket")), b"A") == b"B"
    assert_stops_cleanly(server)


# --- activation variables that are malformed or cannot be right ---------------------------------

#: ``sh`` exports its own pid as ``LISTEN_PID`` (unless the test gives one) and execs the
#: server in its place, which keeps the pid: a child's pid is not known before it runs.
AS_ACTIVATED: Final = 'export LISTEN_PID="${LISTEN_PID-$$}"; exec "$@"'
#: The open-file limit the server gets in the huge-count test: the usual default, so the
#: test means the same on a machine whose limit is a million.
TEST_FD_LIMIT: Final = 1024
#: A count that once cost 1.8 s and 193 MB before failing: far beyond any open-file limit.
HUGE_COUNT: Final = 1_000_000
#: Peak memory of a server that refuses to start: about 27 MB measured; a million
#: ``ListenFd`` objects built first take about 190 MB.
REFUSAL_MAX_RSS_KIB: Final = 100 * 1024
#: A warning about a bad variable is one readable line, however long the variable.
MAX_WARNING_CHARS: Final = 200
#: What refusing a huge count may allocate in-process: a message and an exception;
#: a million ``ListenFd`` objects would be well over 100 MB.
REFUSAL_MAX_TRACED: Final = 64 * 1024
#: How long refusing a huge count may take, start-up included (about 0.1 s measured;
#: building a million ``ListenFd`` objects first took 1.8 s).
REFUSAL_SECONDS: Final = 2.0


def activation_env(variables: Mapping[str, str]) -> dict[str, str]:
    """This environment without any ``LISTEN_*`` of its own, plus ``variables``; UTF-8 stdio."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    return {**base, "PYTHONIOENCODING": "utf-8", **variables}


def activated_argv() -> list[str]:
    """``python -m trio_sock server`` with ``LISTEN_PID`` set to its own pid (see AS_ACTIVATED)."""
    return ["sh", "-c", AS_ACTIVATED, "sh", *cli("server")]


#: Environments that must not activate anything, each with what its warning must say.
IGNORED_ACTIVATIONS: Final = [
    pytest.param({"LISTEN_PID": "²", "LISTEN_FDS": "1"}, ("LISTEN_PID='²'", "not a process id"),
                 id="pid-superscript"),
    pytest.param({"LISTEN_FDS": "³"}, ("LISTEN_FDS='³'", "not a count"), id="count-superscript"),
    pytest.param({"LISTEN_FDS": "-1"}, ("LISTEN_FDS='-1'", "not a count"), id="count-negative"),
    pytest.param({"LISTEN_FDS": ""}, ("LISTEN_FDS=''", "not a count"), id="count-empty"),
    pytest.param({"LISTEN_FDS": "1 "}, ("LISTEN_FDS='1 '", "not a count"), id="count-whitespace"),
    pytest.param({"LISTEN_PID": "1", "LISTEN_FDS": "2"}, ("LISTEN_PID=1", "another process"),
                 id="another-pid"),
    pytest.param({}, ("LISTEN_FDS is not set",), id="pid-without-count"),
]  # fmt: skip


@pytest.mark.parametrize(("variables", "why"), IGNORED_ACTIVATIONS)
def test_activation_variables_that_are_not_ours_or_malformed_are_ignored_with_one_warning(
    short_tmp: Path, variables: dict[str, str], why: tuple[str, ...]
) -> None:
    # A file where the default socket goes stops the server at its first default
    # address, before TCP port 9734: the error line shows that the defaults were
    # used, not descriptors, whatever else holds the book's port.
    (short_tmp / "server_socket").write_text("not a socket\n")
    result = subprocess.run(
        activated_argv(),
        cwd=short_tmp,
        env=activation_env(variables),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        timeout=FAIL_TIMEOUT,
        check=False,
    )
    assert_no_traceback(result.stdout, result.stderr)
    assert (result.returncode, result.stdout) == (1, ""), result
    warnings = [line for line in result.stderr.splitlines() if "LISTEN_" in line]
    assert len(warnings) == 1, result.stderr
    for fragment in ("ignoring socket activation", *why):
        assert fragment in warnings[0], (fragment, warnings)
    last = result.stderr.splitlines()[-1]
    assert last.startswith(SERVER_ERROR), result.stderr
    assert "unix:server_socket" in last, result.stderr


@attrs.frozen
class Measured:
    """A finished command, with what it cost."""

    result: subprocess.CompletedProcess[str]
    seconds: float
    max_rss_kib: int
    """The process's peak resident memory (``wait4``'s ``ru_maxrss``, in KiB on Linux)."""


def run_measured(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], preexec_fn: Callable[[], None]
) -> Measured:
    """Run ``argv`` to its end (within FAIL_TIMEOUT); measure its time and peak memory.

    ``wait4`` gives the memory of this one process, where ``RUSAGE_CHILDREN`` would give
    the largest of every child the test process ever had.  The wait for the exit is a
    pidfd, which becomes readable when the process ends: bounded, and no polling.
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            preexec_fn=preexec_fn,
        )  # fmt: skip
        pidfd = os.pidfd_open(process.pid)
        try:
            ended, _, _ = select.select([pidfd], [], [], FAIL_TIMEOUT)
        finally:
            os.close(pidfd)
        if not ended:
            process.kill()
            process.wait()
            pytest.fail(f"{shlex.join(argv)} did not exit within {FAIL_TIMEOUT}s")
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        # Reaped here, so tell the Popen, or it would wait for (and warn about) it again.
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(
            argv, process.returncode, out.read().decode(), err.read().decode()
        )
    return Measured(result, seconds, usage.ru_maxrss)


def _test_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = TEST_FD_LIMIT if hard == resource.RLIM_INFINITY else min(TEST_FD_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def huge_count(short_tmp: Path) -> Measured:
    """``LISTEN_FDS=1000000`` for the server's own pid, run with an open-file limit of 1024."""
    env = activation_env({"LISTEN_FDS": str(HUGE_COUNT)})
    return run_measured(activated_argv(), cwd=short_tmp, env=env, preexec_fn=_test_fd_limit)


def test_a_descriptor_count_beyond_the_open_file_limit_fails_at_once_saying_what_to_do(
    huge_count: Measured,
) -> None:
    result = huge_count.result
    assert (result.returncode, result.stdout) == (1, ""), result
    said = [line for line in result.stderr.splitlines() if f"LISTEN_FDS={HUGE_COUNT}" in line]
    assert len(said) == 1, result.stderr
    assert f"3 to {HUGE_COUNT + 2}" in said[0], said
    assert f"limit (ulimit -n) is {TEST_FD_LIMIT}" in said[0], said
    assert "LimitNOFILE=" in said[0], said
    assert huge_count.seconds < REFUSAL_SECONDS, huge_count
    assert huge_count.max_rss_kib < REFUSAL_MAX_RSS_KIB, huge_count


def test_a_descriptor_count_beyond_the_open_file_limit_is_one_error_line_without_traceback(
    huge_count: Measured,
) -> None:
    assert_user_error(huge_count.result, f"LISTEN_FDS={HUGE_COUNT}", starts_with=SERVER_ERROR)


# --- --fd: a listening socket inherited from a parent ------------------------------------------


def test_sockets_passed_with_fd_are_served_and_listed_in_the_ready_line(
    procs: Processes, short_tmp: Path
) -> None:
    path = short_tmp / "s"
    with (
        listening(socket.AF_UNIX, str(path)) as unix,
        listening(socket.AF_INET, ("127.0.0.1", 0)) as tcp,
    ):
        port = tcp.getsockname()[1]
        server = procs.server(
            "--fd", str(unix.fileno()), "--fd", str(tcp.fileno()),
            pass_fds=(unix.fileno(), tcp.fileno()),
        )  # fmt: skip
        assert server.addresses == [UnixAddress(str(path)), TcpAddress("127.0.0.1", port)]
        for address in server.addresses:
            assert exchange(address, b"HAL") == b"IBM", address
        assert_stops_cleanly(server)


def test_the_file_of_a_socket_passed_with_fd_is_never_locked_changed_or_removed(
    procs: Processes, short_tmp: Path
) -> None:
    path = short_tmp / "s"
    with listening(socket.AF_UNIX, str(path)) as unix:
        path.chmod(0o660)  # as systemd's SocketMode=0660: not the server's --socket-mode 600
        before = inode(path)
        server = procs.server("--fd", str(unix.fileno()), pass_fds=(unix.fileno(),))
        assert exchange(server.unix(), b"A") == b"B"
        assert not lock_of(path).exists()
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        assert_stops_cleanly(server)
        assert inode(path) == before
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        assert sorted(p.name for p in short_tmp.iterdir() if p.is_socket()) == ["s"]
        assert not lock_of(path).exists()


def test_a_parents_socket_keeps_listening_after_the_server_exits_for_the_next_one(
    procs: Processes, short_tmp: Path
) -> None:
    # What systemd relies on to restart a service: its copy of the socket stays
    # open, clients queue meanwhile, and the next server serves them.
    path = short_tmp / "s"
    with listening(socket.AF_UNIX, str(path)) as unix:
        fd = str(unix.fileno())
        first = procs.server("--fd", fd, pass_fds=(unix.fileno(),))
        assert exchange(first.unix(), b"A") == b"B"
        assert_stops_cleanly(first)
        with connect(UnixAddress(str(path))) as queued:
            queued.sendall(b"A")
            second = procs.server("--fd", fd, pass_fds=(unix.fileno(),))
            assert queued.recv(1) == b"B"
        assert_stops_cleanly(second)


def test_an_abstract_socket_passed_with_fd_is_listed_with_its_at_sign(
    procs: Processes, short_tmp: Path
) -> None:
    name = f"trio-sock-test-{short_tmp.name}"
    with listening(socket.AF_UNIX, "\0" + name) as unix:
        server = procs.server("--fd", str(unix.fileno()), pass_fds=(unix.fileno(),))
        assert server.addresses == [UnixAddress("@" + name)]
        assert exchange(server.unix(), b"A") == b"B"
        assert_stops_cleanly(server)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_an_ipv6_socket_passed_with_fd_is_listed_in_brackets(procs: Processes) -> None:
    with listening(socket.AF_INET6, ("::1", 0)) as tcp:
        port = tcp.getsockname()[1]
        server = procs.server("--fd", str(tcp.fileno()), pass_fds=(tcp.fileno(),))
        assert [str(a) for a in server.addresses] == [f"tcp:[::1]:{port}"]
        assert exchange(server.tcp(), b"A") == b"B"
        assert_stops_cleanly(server)


def _datagram(short_tmp: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(short_tmp / "d"))
    return sock


def _seqpacket(short_tmp: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(str(short_tmp / "q"))
    sock.listen()
    return sock


def _bound_not_listening(short_tmp: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(short_tmp / "n"))
    return sock


def _connected(short_tmp: Path) -> socket.socket:
    one, other = socket.socketpair()
    other.close()
    return one


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(_datagram, "datagram", id="datagram"),
        pytest.param(_seqpacket, "not a stream socket", id="seqpacket"),
        pytest.param(_bound_not_listening, "not listening", id="bound-not-listening"),
        pytest.param(_connected, "not listening", id="connected"),
    ],
)
def test_a_socket_that_is_not_a_listening_stream_socket_is_refused_clearly(
    short_tmp: Path, make: Callable[[Path], socket.socket], reason: str
) -> None:
    with make(short_tmp) as sock:
        files = sorted(short_tmp.iterdir())
        result = run_server_with_fd(sock.fileno(), cwd=short_tmp, pass_fds=(sock.fileno(),))
        assert_user_error(result, f"fd {sock.fileno()}", reason, starts_with=SERVER_ERROR)
        assert sorted(short_tmp.iterdir()) == files, "nothing created, nothing removed"


def test_a_descriptor_that_is_not_a_socket_is_refused_clearly(short_tmp: Path) -> None:
    read, write = os.pipe()
    try:
        result = run_server_with_fd(read, cwd=short_tmp, pass_fds=(read,))
    finally:
        os.close(read)
        os.close(write)
    assert_user_error(result, f"fd {read}", "not a socket", starts_with=SERVER_ERROR)


def test_a_descriptor_that_is_not_open_is_refused_clearly(short_tmp: Path) -> None:
    result = run_server_with_fd(UNUSED_FD, cwd=short_tmp)
    line = assert_user_error(result, f"fd {UNUSED_FD}", starts_with=SERVER_ERROR)
    assert re.search("not open|bad file descriptor", line, re.IGNORECASE), line


@pytest.mark.parametrize("fd", LOW_FDS)
def test_a_low_descriptor_the_parent_did_not_pass_is_refused_as_not_open(
    short_tmp: Path, fd: int
) -> None:
    # The server opens descriptors of its own as it starts (Trio's, its lock
    # file and listeners), and they take the lowest free numbers: it must judge
    # only what it inherited, never one of these.
    result = run_server_with_fd(fd, "--unix", str(short_tmp / "own"), "--tcp", "0", cwd=short_tmp)
    line = assert_user_error(result, f"fd {fd}", starts_with=SERVER_ERROR)
    assert re.search("not open|bad file descriptor", line, re.IGNORECASE), line
    assert sorted(p.name for p in short_tmp.iterdir() if not p.name.startswith("ts-")) == []


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--fd", "x"), id="not-a-number"),
        pytest.param(("--fd", "-1"), id="negative"),
        pytest.param(("--fd", "2"), id="stderr"),
        pytest.param(("--fd", "5", "--fd", "5"), id="twice"),
    ],
)
def test_an_fd_that_cannot_be_a_passed_socket_is_a_usage_error(
    short_tmp: Path, args: tuple[str, ...]
) -> None:
    result = run_cli("server", *args, cwd=short_tmp, timeout=FAIL_TIMEOUT)
    assert_no_traceback(result.stdout, result.stderr)
    assert result.returncode == 2, result
    # The usage and the error line, in either order: where each goes is test_cli's concern.
    lines = result.stderr.splitlines()
    assert any(line.startswith("usage: python -m trio_sock") for line in lines), lines
    errors = [line for line in lines if line.startswith("python -m trio_sock server: error: ")]
    assert len(errors) == 1, lines
    assert "fd" in errors[0], errors


def run_server_with_fd(
    fd: int, *args: str, cwd: Path, pass_fds: Sequence[int] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``server --fd FD ARGS``, which must refuse to start (a server that starts times out)."""
    return subprocess.run(
        cli("server", "--fd", str(fd), *args),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=FAIL_TIMEOUT,
        pass_fds=pass_fds,
        check=False,
    )


# --- readiness: NOTIFY_SOCKET ------------------------------------------------------------------


def test_the_server_notifies_ready_with_a_status_once_it_serves(
    procs: Processes, short_tmp: Path, notify: NotifySocket
) -> None:
    server = procs.server("--unix", str(short_tmp / "s"), "--tcp", "0", env=notify.env())
    message = notify.wait_for("READY")
    assert message["READY"] == "1", message
    assert clients_active(0)(message.get("STATUS", "")), message
    assert exchange(server.unix(), b"A") == b"B"  # it does serve, as READY=1 said
    assert_stops_cleanly(server)


def test_the_status_follows_the_active_client_count(
    procs: Processes, short_tmp: Path, notify: NotifySocket
) -> None:
    server = procs.server("--unix", str(short_tmp / "s"), "--tcp", "0", env=notify.env())
    notify.wait_for("READY")
    with connect(server.unix()) as client:
        client.sendall(b"A")
        assert client.recv(1) == b"B"
        notify.wait_for("STATUS", clients_active(1))
    notify.wait_for("STATUS", clients_active(0))
    assert_stops_cleanly(server)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_server_notifies_stopping_when_shutdown_starts(
    procs: Processes, short_tmp: Path, notify: NotifySocket, signum: int
) -> None:
    server = procs.server(
        "--unix", str(short_tmp / "s"), "--tcp", "0", "--grace", "30", env=notify.env()
    )
    notify.wait_for("READY")
    with connect(server.unix()) as client:
        client.sendall(b"A")
        assert client.recv(1) == b"B"
        server.send_signal(signum)
        # At the first signal, while a client still holds the server in its grace period.
        notify.wait_for("STOPPING", lambda value: value == "1")
        assert server.process.poll() is None
    assert server.wait(timeout=EVENT_TIMEOUT) == 0
    assert_no_traceback(server.stderr())
    assert not any("READY" in message for message in notify.received[1:]), notify.received


def test_a_burst_of_clients_is_reported_about_once_a_second_not_once_each(
    procs: Processes, short_tmp: Path, notify: NotifySocket
) -> None:
    server = procs.server("--unix", str(short_tmp / "s"), "--tcp", "0", env=notify.env())
    notify.wait_for("READY")
    before = len(notify.received)
    started = time.monotonic()
    clients = []
    try:
        for _ in range(BURST_CLIENTS):
            clients.append(client := connect(server.unix()))
            client.sendall(b"A")
            assert client.recv(1) == b"B"
        notify.wait_for("STATUS", clients_active(BURST_CLIENTS))
        elapsed = time.monotonic() - started
    finally:
        for client in clients:
            client.close()
    statuses = [m for m in notify.received[before:] if "STATUS" in m]
    # One per interval, plus one at each end of the burst.
    assert len(statuses) <= math.ceil(elapsed / STATUS_INTERVAL) + 2, (elapsed, statuses)
    assert_stops_cleanly(server)


def test_a_notify_socket_that_is_not_there_does_not_stop_the_server(
    procs: Processes, short_tmp: Path
) -> None:
    env = {**os.environ, "NOTIFY_SOCKET": str(short_tmp / "missing")}
    server = procs.server("--unix", str(short_tmp / "s"), "--tcp", "0", env=env)
    with connect(server.unix()) as client:
        client.sendall(b"A")
        assert client.recv(1) == b"B"
        assert exchange(server.tcp(), b"A") == b"B"
    assert_stops_cleanly(server)


# --- the example units -------------------------------------------------------------------------

UNITS: Final = ("trio-sock.socket", "trio-sock.service")
#: The interpreter the example service runs: a venv made as the README says.
#: ``systemd-analyze verify`` checks that it exists, so the test puts this run's in its place.
EXAMPLE_PYTHON: Final = "/opt/trio-sock/bin/python"
#: The highest exposure ``systemd-analyze security`` may give the example service,
#: in its tenths: the units as written score 1.0 ("OK"), having no PrivateUsers= (which
#: would hide every peer's uid and gid).
MAX_EXPOSURE: Final = 10


def test_the_example_service_runs_the_server_on_activated_sockets() -> None:
    service = (DEPLOY / "trio-sock.service").read_text()
    exec_start = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1, exec_start
    argv = shlex.split(exec_start[0].removeprefix("ExecStart="))
    assert argv[:4] == [EXAMPLE_PYTHON, "-m", "trio_sock", "server"], argv
    assert not {"--unix", "--tcp", "--fd"} & set(argv), "the sockets must come from systemd"
    grace = float(argv[argv.index("--grace") + 1]) if "--grace" in argv else 5.0
    stop = re.search(r"^TimeoutStopSec=(\d+)s?$", service, re.MULTILINE)
    assert stop is not None, "TimeoutStopSec= must be set"
    assert float(stop[1]) > grace, "systemd must not kill the server during its grace"
    for setting in ("Type=notify", "NotifyAccess=main", "KillSignal=SIGTERM", "DynamicUser=yes"):
        assert re.search(rf"^{setting}$", service, re.MULTILINE), setting


needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


@pytest.fixture
def units(short_tmp: Path) -> list[Path]:
    """The example units, copied with this run's interpreter in the venv's place."""
    copies = []
    for unit in UNITS:
        text = (DEPLOY / unit).read_text().replace(EXAMPLE_PYTHON, sys.executable)
        (copy := short_tmp / unit).write_text(text)
        copies.append(copy)
    return copies


def systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=FAIL_TIMEOUT,
        check=False,
    )


@needs_systemd_analyze
def test_the_example_units_pass_systemd_analyze_verify_without_a_warning(
    units: list[Path], short_tmp: Path
) -> None:
    result = systemd_analyze("verify", "--man=no", *map(str, units), cwd=short_tmp)
    assert (result.returncode, result.stderr) == (0, ""), result


@needs_systemd_analyze
def test_the_example_service_is_rated_safe_by_systemd_analyze_security(
    units: list[Path], short_tmp: Path
) -> None:
    service = str(units[UNITS.index("trio-sock.service")])
    # --threshold is the exposure times ten; systemd calls up to 1.9 "OK", below 1.0 "SAFE".
    result = systemd_analyze(
        "security", "--offline=true", f"--threshold={MAX_EXPOSURE}", service, cwd=short_tmp
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the activation variables, in-process ------------------------------------------------


def test_listen_fds_reads_the_sockets_and_names_then_forgets_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_sock.config.server import ListenFd
    from trio_sock.listen.systemd import listen_fds

    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "3")
    monkeypatch.setenv("LISTEN_FDNAMES", "web::admin")
    assert listen_fds() == (ListenFd(3, "web"), ListenFd(4, None), ListenFd(5, "admin"))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        assert name not in os.environ
    assert listen_fds() == ()


class Records(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def systemd_log() -> Iterator[list[logging.LogRecord]]:
    """The records ``trio_sock.systemd`` logs during the test.

    A handler on that logger itself, not ``caplog``: once the CLI has configured
    logging in this process, ``trio_sock`` records stop at its own handler.
    """
    handler = Records()
    logger = logging.getLogger("trio_sock.systemd")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("3", 3), ("007", 7), ("4194304", 4194304), ("2147483647", 2147483647)],
)
def test_ascii_int_reads_plain_ascii_digits(text: str, value: int) -> None:
    from trio_sock.listen.systemd import _ascii_int

    assert _ascii_int(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "", " ", "1 ", " 1", "1\n", "-1", "+1", "0x10", "1_000", "1.0", "²", "³", "\u0663",
        "\uff11", "12345678901", "9" * 5000,
    ],
)  # fmt: skip
def test_ascii_int_refuses_everything_but_one_to_ten_ascii_digits(text: str) -> None:
    # "²".isdigit() is true and int("٣") is 3: neither is a number systemd writes.
    from trio_sock.listen.systemd import _ascii_int

    assert _ascii_int(text) is None


@pytest.mark.parametrize(
    ("variables", "why"),
    [
        pytest.param({"LISTEN_PID": "1", "LISTEN_FDS": "2"}, ("LISTEN_PID=1", "another process"),
                     id="another-pid"),
        pytest.param({"LISTEN_PID": "x", "LISTEN_FDS": "2"}, ("LISTEN_PID='x'", "not a process id"),
                     id="pid-not-a-number"),
        pytest.param({"LISTEN_PID": "²", "LISTEN_FDS": "1"}, ("LISTEN_PID='²'", "not a process id"),
                     id="pid-superscript"),
        pytest.param({"LISTEN_FDS": "2"}, ("LISTEN_PID is not set",), id="count-without-pid"),
        pytest.param({"LISTEN_PID": "self"}, ("LISTEN_FDS is not set",), id="pid-without-count"),
        pytest.param({"LISTEN_PID": "self", "LISTEN_FDS": ""}, ("LISTEN_FDS=''", "not a count"),
                     id="count-empty"),
        pytest.param({"LISTEN_PID": "self", "LISTEN_FDS": "³"}, ("LISTEN_FDS='³'", "not a count"),
                     id="count-superscript"),
        pytest.param({"LISTEN_PID": "self", "LISTEN_FDS": "-1"}, ("LISTEN_FDS='-1'", "not a count"),
                     id="count-negative"),
        pytest.param({"LISTEN_PID": "self", "LISTEN_FDS": "1 "}, ("LISTEN_FDS='1 '", "not a count"),
                     id="count-whitespace"),
        pytest.param({"LISTEN_PID": "self", "LISTEN_FDS": "2\nSTATUS=x"},
                     ("LISTEN_FDS='2\\nSTATUS=x'", "not a count"), id="count-two-lines"),
    ],
)  # fmt: skip
def test_listen_fds_not_ours_or_malformed_are_ignored_with_one_warning_and_forgotten(
    monkeypatch: pytest.MonkeyPatch,
    systemd_log: list[logging.LogRecord],
    variables: dict[str, str],
    why: tuple[str, ...],
) -> None:
    from trio_sock.listen.systemd import listen_fds

    for name, value in {**variables, "LISTEN_FDNAMES": "a:b"}.items():
        monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert listen_fds() == ()
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        assert name not in os.environ
    assert [r.levelno for r in systemd_log] == [logging.WARNING], systemd_log
    message = systemd_log[0].getMessage()
    assert "\n" not in message, message
    for fragment in ("ignoring socket activation", *why):
        assert fragment in message, (fragment, message)


def test_a_megabyte_long_malformed_value_is_cut_short_in_its_warning(
    monkeypatch: pytest.MonkeyPatch, systemd_log: list[logging.LogRecord]
) -> None:
    from trio_sock.listen.systemd import listen_fds

    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "7" * 1_000_000)
    assert listen_fds() == ()
    [record] = systemd_log
    message = record.getMessage()
    assert len(message) < MAX_WARNING_CHARS, len(message)
    assert "LISTEN_FDS='7777" in message, message
    assert "(1000000 characters)" in message, message


def test_no_activation_variables_is_no_activation_and_no_warning(
    monkeypatch: pytest.MonkeyPatch, systemd_log: list[logging.LogRecord]
) -> None:
    from trio_sock.listen.systemd import listen_fds

    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert listen_fds() == ()
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "0")
    assert listen_fds() == ()
    assert [r for r in systemd_log if r.levelno >= logging.WARNING] == []


def test_listen_fds_takes_descriptors_up_to_the_open_file_limit_and_not_one_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_sock.config.server import ListenFd
    from trio_sock.errors import ListenError
    from trio_sock.listen.systemd import listen_fds

    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "5")
    assert listen_fds(fd_limit=8) == tuple(ListenFd(fd) for fd in range(3, 8))
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "6")
    with pytest.raises(ListenError, match=r"LISTEN_FDS=6 .* 3 to 8,.* is 8;") as caught:
        listen_fds(fd_limit=8)
    assert "\n" not in str(caught.value)
    assert "LISTEN_FDS" not in os.environ


def test_the_default_limit_is_this_processs_open_file_soft_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_sock.errors import ListenError
    from trio_sock.listen.systemd import listen_fds

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", str(soft - 2))  # fds 3 to soft: the last one is too high
    with pytest.raises(ListenError, match=f"limit \\(ulimit -n\\) is {soft};"):
        listen_fds()


def test_a_huge_count_is_refused_before_anything_is_built_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_sock.errors import ListenError
    from trio_sock.listen.systemd import listen_fds

    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", str(HUGE_COUNT))
    tracemalloc.start()
    try:
        with pytest.raises(ListenError, match=f"LISTEN_FDS={HUGE_COUNT} "):
            listen_fds(fd_limit=TEST_FD_LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < REFUSAL_MAX_TRACED, peak


def test_a_notify_socket_nobody_reads_never_blocks_the_sender(short_tmp: Path) -> None:
    from trio_sock.service.notify import Notifier

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as deaf:
        deaf.bind(str(short_tmp / "notify"))
        notifier = Notifier(str(short_tmp / "notify"))
        try:
            started = time.monotonic()
            for count in range(5000):  # far beyond any datagram queue
                notifier.notify(f"STATUS={count} active clients")
            assert time.monotonic() - started < 5
        finally:
            notifier.close()
