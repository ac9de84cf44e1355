"""``--workers N``: a parent that opens the listeners, workers that serve them.

Most tests run the real command line (the ``procs`` fixture kills whatever is
left at the end) and find the workers as the parent's children in /proc.
Nothing sleeps to synchronise: tests wait for the ready line, a log line, a
reply or an exit, or poll /proc in a bounded loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import pytest
import trio
import trustme

from tests.cli.test_cli import assert_usage_error
from tests.helpers import (
    EVENT_TIMEOUT,
    FAIL_TIMEOUT,
    LOG_POLL,
    Processes,
    ServerProcess,
    assert_no_traceback,
    cli,
    connect,
    exchange,
    lock_of,
    ready,
    receive_until_eof,
    run_cli,
    wait_for_log,
)
from tests.listen.test_systemd import free_tcp_port, needs_socket_activate, socket_activate
from trio_sock.cli.options import parse
from trio_sock.config.addresses import TcpAddress, UnixAddress
from trio_sock.config.server import ListenFd, ServerConfig
from trio_sock.errors import ListenError
from trio_sock.listen.inherited import adopt_listener
from trio_sock.listen.tcp import open_reuse_port_copy, open_tcp_listeners
from trio_sock.workers.worker import Lifeline, Order, WorkerRole

if TYPE_CHECKING:
    from collections.abc import Callable

#: Enough connections that the kernel's SO_REUSEPORT hash sending every one of
#: them to the same one of two sockets (odds 2 in 2**40) means it is not spreading.
SPREAD_CONNECTIONS: Final = 40


# --- helpers -----------------------------------------------------------------------------------


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    state, parent = text.rpartition(")")[2].split()[:2]
    return state, int(parent)


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (whoever adopted it may not reap it)."""
    found = _state_and_parent(pid)
    return found is not None and found[0] not in ("Z", "X")


def workers_of(server: ServerProcess) -> set[int]:
    """The pids of the server's running child processes: its workers."""
    parent = server.process.pid
    found = {int(e): _state_and_parent(int(e)) for e in os.listdir("/proc") if e.isdigit()}
    return {pid for pid, of in found.items() if of and of[1] == parent and of[0] not in "ZX"}


def poll_until(condition: Callable[[], bool], what: str, timeout: float = EVENT_TIMEOUT) -> None:
    """Wait, re-checking every few milliseconds, until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(LOG_POLL)


def wait_for_workers(server: ServerProcess, count: int) -> set[int]:
    """The workers, once there are exactly ``count`` of them."""
    poll_until(lambda: len(workers_of(server)) == count, f"{count} workers")
    return workers_of(server)


def json_records(server: ServerProcess, logger: str) -> list[dict[str, object]]:
    return [
        record
        for line in server.stderr().splitlines()
        if line.startswith("{") and (record := json.loads(line))["logger"] == logger
    ]


def accepted_by_worker(server: ServerProcess) -> dict[int, int]:
    """The newest stats line of each worker (JSON logs): how many clients it accepted."""
    return {
        int(str(r["worker"])): int(str(r["accepted"]))
        for r in json_records(server, "trio_sock.stats")
    }


@pytest.fixture
def sock_path(short_tmp: Path) -> Path:
    return short_tmp / "s"


@pytest.fixture
def two_workers(procs: Processes, sock_path: Path) -> ServerProcess:
    """Two workers on a Unix socket in ``short_tmp`` and a free loopback TCP port."""
    return procs.server("--workers", "2", "--unix", str(sock_path), "--tcp", "127.0.0.1:0")


# --- serving -----------------------------------------------------------------------------------


def test_two_workers_serve_both_listeners_behind_one_ready_line_with_the_real_port(
    two_workers: ServerProcess, sock_path: Path
) -> None:
    server = two_workers
    assert server.addresses == [UnixAddress(str(sock_path)), server.tcp()]
    assert server.tcp().port != 0
    assert len(wait_for_workers(server, 2)) == 2
    for _ in range(10):
        for address in server.addresses:
            assert exchange(address, b"HAL") == b"IBM", address
    log = server.stderr()
    assert "worker=1 " in log
    assert "worker=2 " in log
    # Each worker is told the socket file's real name, not the temporary one it was bound as.
    assert "worker=2 trio_sock.listeners: listening on fd" in log
    assert f": unix:{sock_path}\n" in log
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert_no_traceback(server.stderr())


def test_the_ready_line_is_printed_once_for_all_the_workers(
    procs: Processes, sock_path: Path
) -> None:
    child = procs.spawn(cli("server", "--workers", "3", "--unix", str(sock_path)))
    assert child.process.stdout is not None
    first = child.process.stdout.readline()
    assert first == f"server waiting on unix:{sock_path}\n".encode(), first
    assert "worker=3 " in child.stderr()  # printed only once the last worker was ready
    child.process.send_signal(signal.SIGTERM)
    assert child.process.stdout.read() == b""  # nothing more, up to the exit
    assert child.process.wait(timeout=EVENT_TIMEOUT) == 0
    assert not sock_path.exists()


def test_once_and_max_clients_apply_in_every_worker(procs: Processes, sock_path: Path) -> None:
    server = procs.server(
        "--workers", "2", "--unix", str(sock_path), "--once", "--max-clients", "1"
    )
    for _ in range(6):
        assert exchange(server.unix(), b"AB") == b"B"  # one byte per connection, as the book's
    assert server.stop(timeout=EVENT_TIMEOUT) == 0


def test_with_reuse_port_the_kernel_spreads_tcp_connections_over_every_worker(
    procs: Processes,
) -> None:
    server = procs.server(
        "--workers", "2", "--reuse-port", "--tcp", "127.0.0.1:0", "--log-format", "json"
    )
    for _ in range(SPREAD_CONNECTIONS):
        assert exchange(server.tcp(), b"A") == b"B"
    # SIGUSR1 to the parent: every worker logs its stats line.
    server.send_signal(signal.SIGUSR1)
    poll_until(lambda: len(accepted_by_worker(server)) == 2, "a stats line from each worker")
    counts = accepted_by_worker(server)
    assert sorted(counts) == [1, 2]
    assert sum(counts.values()) == SPREAD_CONNECTIONS, counts
    assert min(counts.values()) >= 1, counts
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert_no_traceback(server.stderr())


def test_reuse_port_with_one_process_lets_another_socket_share_the_port(
    procs: Processes,
) -> None:
    server = procs.server("--reuse-port", "--tcp", "127.0.0.1:0")
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", server.tcp().port))  # EADDRINUSE without SO_REUSEPORT
    assert workers_of(server) == set()  # --workers 1: no parent, no child
    assert server.stop(timeout=EVENT_TIMEOUT) == 0


def test_workers_serve_a_socket_passed_with_fd_and_leave_its_file_alone(
    procs: Processes, sock_path: Path
) -> None:
    with socket.socket(socket.AF_UNIX) as passed:
        passed.bind(str(sock_path))
        passed.listen()
        fd = passed.fileno()
        server = procs.server("--workers", "2", "--fd", str(fd), pass_fds=(fd,))
        assert server.addresses == [UnixAddress(str(sock_path))]
        assert exchange(server.unix(), b"A") == b"B"
        assert server.stop(timeout=EVENT_TIMEOUT) == 0
        assert sock_path.exists()
        assert not lock_of(sock_path).exists()


@needs_socket_activate
def test_an_activated_parent_hands_systemds_sockets_to_its_workers(procs: Processes) -> None:
    path, port = procs.cwd / "s", free_tcp_port()
    argv = socket_activate(
        str(path), f"127.0.0.1:{port}", names=["u", "t"], server_args=["--workers", "2"]
    )
    child = procs.spawn(argv)
    wait_for_log(child, f"Listening on 127.0.0.1:{port} as 4.")
    with connect(UnixAddress(str(path))) as first:  # starts the server
        server = ready(child)
        first.sendall(b"A")
        assert first.recv(1) == b"B"
    assert server.addresses == [UnixAddress(str(path)), TcpAddress("127.0.0.1", port)]
    for address in server.addresses:
        assert exchange(address, b"HAL") == b"IBM"
    assert "worker=2 " in server.stderr()
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert path.exists()  # systemd's socket: never removed by the server
    assert_no_traceback(server.stderr())


def test_workers_speak_tls_on_tcp(procs: Processes, short_tmp: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = short_tmp / "cert.pem", short_tmp / "key.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    server = procs.server(
        "--workers", "2", "--tcp", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with (
        socket.create_connection(("127.0.0.1", server.tcp().port), timeout=EVENT_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"HAL")
        assert tls.recv(3) == b"IBM"
    assert server.stop(timeout=EVENT_TIMEOUT) == 0


# --- restarts ----------------------------------------------------------------------------------


def test_a_worker_killed_with_sigkill_is_restarted_and_service_goes_on(
    two_workers: ServerProcess,
) -> None:
    server = two_workers
    before = wait_for_workers(server, 2)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    log = wait_for_log(server, "restarted (pid")
    assert f"(pid {victim}) was killed by SIGKILL; restarting it in" in log
    after = wait_for_workers(server, 2)
    assert victim not in after
    assert len(after & before) == 1
    for _ in range(10):
        for address in server.addresses:
            assert exchange(address, b"A") == b"B"
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert_no_traceback(server.stderr())


def test_connections_queued_on_a_dead_workers_own_socket_wait_for_its_successor(
    procs: Processes,
) -> None:
    server = procs.server("--workers", "2", "--reuse-port", "--tcp", "127.0.0.1:0")
    frozen = min(wait_for_workers(server, 2))
    os.kill(frozen, signal.SIGSTOP)  # accepts nothing more: its queue fills
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(server.tcp())) for _ in range(SPREAD_CONNECTIONS)]
        for client in clients:
            client.sendall(b"A")
        os.kill(frozen, signal.SIGKILL)
        # About half of them are in the dead worker's own queue; the parent's copy
        # of its socket keeps them there for the worker that replaces it.
        for client in clients:
            assert client.recv(1) == b"B"
    assert f"(pid {frozen}) was killed by SIGKILL" in server.stderr()
    assert server.stop(timeout=EVENT_TIMEOUT) == 0


def crashing_workers(directory: Path, marker: Path) -> dict[str, str]:
    """The environment of a server whose workers die at start while ``marker`` exists.

    Python imports ``sitecustomize`` from PYTHONPATH before anything else; this
    one ends a worker (never the parent: it is told apart by its environment)
    with status 3.
    """
    (directory / "sitecustomize.py").write_text(
        "import os\n"
        f"if 'TRIO_SOCK_WORKER' in os.environ and os.path.exists({str(marker)!r}):\n"
        "    os._exit(3)\n"
    )
    path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_a_worker_that_dies_before_it_is_first_ready_fails_the_start(short_tmp: Path) -> None:
    marker = short_tmp / "crash"
    marker.touch()
    env = crashing_workers(short_tmp, marker)
    result = subprocess.run(
        cli("server", "--workers", "2", "--unix", str(short_tmp / "s")),
        cwd=short_tmp, env=env, capture_output=True, text=True, timeout=FAIL_TIMEOUT, check=False,
    )  # fmt: skip
    assert_no_traceback(result.stderr)
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert "exited with status 3 before it was ready" in result.stderr, result.stderr
    assert not (short_tmp / "s").exists()
    assert not lock_of(short_tmp / "s").exists()


def test_a_worker_that_keeps_dying_is_restarted_ever_more_slowly(
    procs: Processes, sock_path: Path, short_tmp: Path
) -> None:
    marker = short_tmp / "crash"
    env = crashing_workers(short_tmp, marker)
    server = procs.server("--workers", "2", "--unix", str(sock_path), env=env)
    marker.touch()
    os.kill(min(wait_for_workers(server, 2)), signal.SIGKILL)
    wait_for_log(server, "exited with status 3; restarting it in 0.4s")
    log = server.stderr()
    assert "was killed by SIGKILL; restarting it in 0.1s" in log
    assert "exited with status 3; restarting it in 0.1s" not in log  # the delay doubled
    assert "exited with status 3; restarting it in 0.2s" in log
    assert exchange(server.unix(), b"A") == b"B"  # the other worker serves meanwhile
    marker.unlink()
    wait_for_log(server, "restarted (pid")
    assert server.stop(timeout=EVENT_TIMEOUT) == 0


def test_only_the_parent_tells_systemd_it_is_ready_once_every_worker_is(
    procs: Processes, sock_path: Path, short_tmp: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(short_tmp / "notify"))
        env = {**os.environ, "NOTIFY_SOCKET": str(short_tmp / "notify")}
        server = procs.server("--workers", "2", "--unix", str(sock_path), env=env)
        assert server.stop(timeout=EVENT_TIMEOUT) == 0
        notify.setblocking(False)
        messages = []
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(notify.recv(4096).decode())
    assert [m.splitlines()[0] for m in messages] == ["READY=1", "STOPPING=1"], messages
    assert "STATUS=2 workers serving" in messages[0]


# --- shutdown ----------------------------------------------------------------------------------


def test_sigterm_lets_an_active_client_finish_then_everything_is_removed(
    procs: Processes, sock_path: Path
) -> None:
    server = procs.server("--workers", "2", "--unix", str(sock_path), "--grace", "20")
    workers = wait_for_workers(server, 2)
    with connect(server.unix()) as active:
        active.sendall(b"A")
        assert active.recv(1) == b"B"  # accepted and being served by one of the workers
        server.send_signal(signal.SIGTERM)
        poll_until(lambda: not sock_path.exists(), "the socket file removed at the signal")
        assert not lock_of(sock_path).exists()
        wait_for_log(server, "stopped accepting")
        active.sendall(b"HAL")  # mid-conversation: still served, within the grace
        assert active.recv(3) == b"IBM"
        active.shutdown(socket.SHUT_WR)
        assert receive_until_eof(active) == b""
    # With the last client gone, nobody waits out the 20 s grace.
    assert server.wait(timeout=EVENT_TIMEOUT) == 0
    assert not any(map(is_running, workers))
    assert_no_traceback(server.stderr())


def test_ctrl_c_reaching_every_process_at_once_is_still_one_graceful_stop(
    procs: Processes, sock_path: Path
) -> None:
    # A terminal's Ctrl-C signals the whole foreground process group: the parent
    # and every worker.  The parent's order to stop must not count as a second signal.
    server = procs.server(
        "--workers", "2", "--unix", str(sock_path), "--grace", "20", preexec_fn=os.setpgrp
    )
    with connect(server.unix()) as active:
        active.sendall(b"A")
        assert active.recv(1) == b"B"
        os.killpg(server.process.pid, signal.SIGINT)
        wait_for_log(server, "stopped accepting", until=lambda log: log.count("stopped") >= 2)
        active.sendall(b"HAL")
        assert active.recv(3) == b"IBM"
        active.shutdown(socket.SHUT_WR)
        assert receive_until_eof(active) == b""
    assert server.wait(timeout=EVENT_TIMEOUT) == 0
    assert "cancelling" not in server.stderr()
    assert_no_traceback(server.stderr())


def test_a_second_signal_cancels_every_worker_at_once(procs: Processes, sock_path: Path) -> None:
    server = procs.server("--workers", "2", "--unix", str(sock_path), "--grace", "30")
    workers = wait_for_workers(server, 2)
    with connect(server.unix()) as idle:
        # FIFO accept queue: once a later connection is answered, this one was accepted.
        assert exchange(server.unix(), b"A") == b"B"
        server.send_signal(signal.SIGTERM)
        wait_for_log(server, "stopping; clients have 30.0s")
        signalled = time.monotonic()
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=EVENT_TIMEOUT) == 0
        elapsed = time.monotonic() - signalled
        assert receive_until_eof(idle) == b""
    assert elapsed < 5, elapsed
    assert not any(map(is_running, workers))
    assert_no_traceback(server.stderr())


def test_a_parent_killed_with_sigkill_leaves_no_worker_behind(
    procs: Processes, sock_path: Path, short_tmp: Path
) -> None:
    server = procs.server("--workers", "2", "--unix", str(sock_path), "--grace", "1")
    workers = wait_for_workers(server, 2)
    server.kill()
    poll_until(lambda: not any(map(is_running, workers)), "every worker gone")
    log = server.stderr()
    assert log.count("the parent is gone") == 2, log
    # The socket file stays (nobody was left to remove it); the next server takes it over.
    after = procs.server("--unix", str(sock_path))
    assert exchange(after.unix(), b"A") == b"B"
    assert after.stop(timeout=EVENT_TIMEOUT) == 0


# --- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "abc", "-1", "257", ""])
def test_a_bad_worker_count_exits_2_with_usage(short_tmp: Path, value: str) -> None:
    result = run_cli(
        "server", "--workers", value, "--unix", str(short_tmp / "s"), cwd=short_tmp,
        timeout=FAIL_TIMEOUT,
    )  # fmt: skip
    error = assert_usage_error(result, "python -m trio_sock server")
    assert "argument --workers: " in error, error


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("workers", 0, ValueError),
        ("workers", 257, ValueError),
        ("workers", True, TypeError),
        ("workers", 2.0, TypeError),
        ("reuse_port", 1, TypeError),
    ],
)
def test_a_bad_workers_setting_is_refused_showing_the_value(
    field: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=f"{field}|{value!r}"):
        ServerConfig(**{field: value})  # type: ignore[arg-type]


def test_one_worker_and_no_reuse_port_are_the_defaults() -> None:
    assert (ServerConfig().workers, ServerConfig().reuse_port) == (1, False)
    assert parse(["server"]).config == ServerConfig()


#: A value other than the default for every field of ``ServerConfig``: a field added
#: to the class without one here fails the test below, so it cannot go untested.
NOT_DEFAULT: Final[dict[str, Any]] = {
    "addresses": (UnixAddress("dir/s p\udcff"), UnixAddress("@a"), TcpAddress("::1", 0)),
    "listen_fds": (ListenFd(3, "web", UnixAddress("s")), ListenFd(4)),
    "once": True,
    "max_clients": 7,
    "delay": 0.1,
    "idle_timeout": float("inf"),
    "grace": 1 / 3,
    "backlog": 12,
    "socket_mode": 0o660,
    "socket_group": 5,
    "allow_uids": frozenset({0, 1000}),
    "allow_gids": frozenset({5}),
    "tls_cert": "-cert.pem",
    "tls_key": "key.pem",
    "tls_handshake_timeout": 2.5,
    "workers": 4,
    "reuse_port": True,
    "proxy_protocol": True,
    "trace": True,
}


def test_every_field_of_the_config_reaches_a_worker_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [field.name for field in attrs.fields(ServerConfig)]
    assert sorted(NOT_DEFAULT) == sorted(names), "give a new field a value in NOT_DEFAULT"
    for name in names:
        # TLS takes a certificate and its key together.
        together = ("tls_cert", "tls_key") if name.startswith("tls_") else ()
        changes = {n: NOT_DEFAULT[n] for n in (name, *together)}
        config = attrs.evolve(ServerConfig(), **changes)
        assert getattr(config, name) != getattr(ServerConfig(), name)
        role = WorkerRole(2, config, "debug", "json")
        text = role.to_environment()
        assert text.isascii(), "the environment value must survive any locale"
        monkeypatch.setenv("TRIO_SOCK_WORKER", text)
        assert WorkerRole.from_environment() == role, name
        assert "TRIO_SOCK_WORKER" not in os.environ
    everything = ServerConfig(**NOT_DEFAULT)
    assert ServerConfig.from_json(everything.to_json()) == everything


async def test_a_reuse_port_copy_listens_on_the_very_port_of_the_first() -> None:
    [first] = await open_tcp_listeners(TcpAddress("127.0.0.1", 0), reuse_port=True)
    copy = open_reuse_port_copy(first)
    try:
        assert isinstance(first.address, TcpAddress)
        assert first.address.port != 0
        assert copy.address == first.address
        assert copy.socket.getsockname() == first.socket.getsockname()
        assert copy.socket.fileno() != first.socket.fileno()
    finally:
        copy.close()
        first.close()


async def test_only_a_listener_opened_with_reuse_port_can_be_copied() -> None:
    [plain] = await open_tcp_listeners(TcpAddress("127.0.0.1", 0))
    try:
        with pytest.raises(ValueError, match="reuse_port"):
            open_reuse_port_copy(plain)
    finally:
        plain.close()


def test_an_adopted_socket_takes_the_address_its_parent_names(short_tmp: Path) -> None:
    with socket.socket(socket.AF_UNIX) as parent:
        parent.bind(str(short_tmp / ".tmp-name"))  # as listeners binds, before its rename
        parent.listen()
        named = ListenFd(parent.fileno(), address=UnixAddress(str(short_tmp / "s")))
        adopted = adopt_listener(named, quiet=True)
        assert adopted.address == UnixAddress(str(short_tmp / "s"))
        adopted.socket.detach()
        wrong = attrs.evolve(named, address=TcpAddress("127.0.0.1", 1))
        with pytest.raises(ListenError, match="it is a unix socket, not tcp:"):
            adopt_listener(wrong, quiet=True)
        os.fstat(parent.fileno())  # refused, and left open for its owner


async def test_a_worker_reads_its_orders_then_the_parents_death_from_the_lifeline() -> None:
    theirs, ours = os.pipe()
    lifeline = Lifeline.open(theirs)
    os.close(theirs)
    try:
        os.write(ours, b"s?u")
        assert await lifeline.next_order() is Order.STOP
        assert await lifeline.next_order() is Order.STATS  # an unknown byte is skipped
        os.write(ours, b"c")
        assert await lifeline.next_order() is Order.CANCEL
        os.close(ours)  # as the kernel does when the parent dies, even by kill -9
        with trio.fail_after(EVENT_TIMEOUT):
            assert await lifeline.next_order() is Order.ORPHANED
            assert await lifeline.next_order() is Order.ORPHANED
    finally:
        await lifeline.aclose()
