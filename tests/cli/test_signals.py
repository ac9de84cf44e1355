"""SIGHUP, from the outside: a hangup is a graceful stop, exactly as SIGTERM.

A terminal hangup or a dropped ssh session signals the server (and, for a
process group, every worker) with SIGHUP.  These tests send real signals to
real processes, and once close a real pseudo-terminal, while a client is in
the middle of a conversation; the client must still finish within the grace.
Nothing sleeps to synchronise: tests wait for the ready line, a log line, a
reply or an exit (the ``procs`` fixture kills whatever is left).
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import termios
from typing import TYPE_CHECKING, Final

import pytest

from tests.helpers import (
    EVENT_TIMEOUT,
    FAIL_TIMEOUT,
    Processes,
    ServerProcess,
    assert_no_traceback,
    cli,
    connect,
    exchange,
    lock_of,
    ready,
    receive_until_eof,
    wait_for_log,
)
from tests.workers.test_workers import is_running, poll_until, wait_for_workers

if TYPE_CHECKING:
    from pathlib import Path

#: Far longer than any test takes: a server that exits promptly did so because its
#: last client left, not because the grace ran out.
LONG_GRACE: Final = "20"


@pytest.fixture
def sock_path(short_tmp: Path) -> Path:
    return short_tmp / "s"


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock``, however the kernel splits them."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def start_conversation(server: ServerProcess) -> socket.socket:
    """A client on the server's Unix socket, known to be accepted and being served."""
    active = connect(server.unix())
    try:
        active.sendall(b"A")
        assert active.recv(1) == b"B"
    except BaseException:
        active.close()
        raise
    return active


def finish_conversation(active: socket.socket) -> None:
    """Go on talking after the signal, then leave as a well-behaved client does."""
    active.sendall(b"HAL")
    assert receive_exactly(active, 3) == b"IBM"
    active.sendall(b"VMS")
    assert receive_exactly(active, 3) == b"WNT"
    active.shutdown(socket.SHUT_WR)
    assert receive_until_eof(active) == b""


def assert_stopped_cleanly(server: ServerProcess, sock_path: Path) -> str:
    """Exit 0, socket file and lock gone, a log that says why it stopped; returns the log."""
    # With its last client gone, the server need not wait out the long grace.
    assert server.wait(timeout=EVENT_TIMEOUT) == 0, server.stderr()
    log = server.stderr()
    assert_no_traceback(log)
    assert "SIGHUP: stopping; clients have 20.0s to finish" in log, log
    assert "stopped accepting" in log, log
    assert "cancelling" not in log, log
    assert not sock_path.exists()
    assert not lock_of(sock_path).exists()
    return log


# --- one process -------------------------------------------------------------------------------


def test_sighup_lets_a_client_in_mid_conversation_finish_then_exits_0(
    procs: Processes, sock_path: Path
) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--grace", LONG_GRACE)
    with start_conversation(server) as active:
        server.send_signal(signal.SIGHUP)
        wait_for_log(server, "stopped accepting")
        assert not sock_path.exists()  # at once, while the client still talks
        with pytest.raises(FileNotFoundError):
            connect(server.unix()).close()
        finish_conversation(active)
    assert_stopped_cleanly(server, sock_path)


def _on_a_terminal_of_its_own() -> None:
    """In the child: a new session whose controlling terminal is stdin (a pty's slave)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_the_terminal_hanging_up_is_a_graceful_stop(procs: Processes, sock_path: Path) -> None:
    # A real hangup, as when an ssh session drops: the kernel sends SIGHUP to the
    # session leader once the terminal's master side is closed.
    master, slave = os.openpty()
    try:
        child = procs.spawn(
            cli("server", "--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--grace", LONG_GRACE),
            stdin=slave,
            preexec_fn=_on_a_terminal_of_its_own,
        )
    finally:
        os.close(slave)
    server = ready(child)
    with start_conversation(server) as active:
        os.close(master)
        wait_for_log(server, "stopped accepting")
        finish_conversation(active)
    assert_stopped_cleanly(server, sock_path)


def test_a_second_signal_after_sighup_cancels_at_once(procs: Processes, sock_path: Path) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--grace", "30")
    with start_conversation(server) as active:
        server.send_signal(signal.SIGHUP)
        wait_for_log(server, "stopped accepting")
        server.send_signal(signal.SIGHUP)
        assert server.wait(timeout=EVENT_TIMEOUT) == 0  # long before the 30 s grace
        assert receive_until_eof(active) == b""
    assert "second signal (SIGHUP): cancelling every client now" in server.stderr()
    assert_no_traceback(server.stderr())


def _ignore_hangups() -> None:
    """In the child: what ``nohup`` does before it runs a program."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def test_a_server_started_with_hangups_ignored_keeps_ignoring_them(
    procs: Processes, sock_path: Path
) -> None:
    server = procs.server(
        "--unix", str(sock_path), "--tcp", "127.0.0.1:0", preexec_fn=_ignore_hangups
    )
    server.send_signal(signal.SIGHUP)
    # Linux delivers pending signals lowest number first (SIGHUP is 1, SIGUSR1 10):
    # once SIGUSR1's stats line is there, SIGHUP has come and gone.
    server.send_signal(signal.SIGUSR1)
    wait_for_log(server, "trio_sock.stats: stats")
    assert exchange(server.unix(), b"A") == b"B"
    assert "stopping" not in server.stderr()
    assert server.stop(timeout=EVENT_TIMEOUT) == 0


# --- workers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("whom", ["parent", "process-group"])
def test_sighup_stops_a_parent_and_its_workers_gracefully(
    procs: Processes, sock_path: Path, whom: str
) -> None:
    # "process-group": a hangup reaches every process of the terminal's foreground
    # group, workers included; the parent's order to stop is then no second signal.
    server = procs.server(
        "--workers", "2", "--unix", str(sock_path), "--grace", LONG_GRACE, preexec_fn=os.setpgrp
    )
    workers = wait_for_workers(server, 2)
    with start_conversation(server) as active:
        if whom == "parent":
            server.send_signal(signal.SIGHUP)
        else:
            os.killpg(server.process.pid, signal.SIGHUP)
        poll_until(lambda: not sock_path.exists(), "the socket file removed at the signal")
        # Each worker logs it once it has stopped accepting.
        wait_for_log(server, "stopped accepting", until=lambda log: log.count("stopped acc") >= 2)
        finish_conversation(active)
    log = assert_stopped_cleanly(server, sock_path)
    assert not any(map(is_running, workers))
    if whom == "parent":  # the workers stop on its order alone: none dies before
        assert "restarting" not in log, log


def test_a_worker_hung_up_on_its_own_stops_gracefully_and_is_replaced(
    procs: Processes, sock_path: Path
) -> None:
    server = procs.server("--workers", "2", "--unix", str(sock_path))
    victim = min(wait_for_workers(server, 2))
    os.kill(victim, signal.SIGHUP)
    log = wait_for_log(server, "restarted (pid")
    assert f"(pid {victim}) exited with status 0; restarting it" in log, log
    assert exchange(server.unix(), b"A") == b"B"
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert_no_traceback(server.stderr())


# --- while starting ----------------------------------------------------------------------------

#: What ``python -m trio_sock`` does, with the signal sent in between: it surely
#: lands while the program starts, before Trio watches signals.
SIGNALLED_WHILE_STARTING: Final = """
import os, sys
from trio_sock.service import early_signals
early_signals.hold()
os.kill(os.getpid(), int(sys.argv[1]))
from trio_sock.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_signal_while_starting_exits_0_quietly_without_binding(
    short_tmp: Path, signum: int, workers: str
) -> None:
    argv = ["server", "--workers", workers, "--unix", str(short_tmp / "s"), "--tcp", "0"]
    result = subprocess.run(
        [sys.executable, "-c", SIGNALLED_WHILE_STARTING, str(int(signum)), *argv],
        cwd=short_tmp, capture_output=True, text=True, timeout=FAIL_TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result
    assert result.stdout == "", result
    assert_no_traceback(result.stderr)
    [line] = result.stderr.splitlines()  # one line, and no error
    name = signal.Signals(signum).name
    assert f"INFO trio_sock.service: {name} while starting: not serving" in line
    assert list(short_tmp.iterdir()) == []
