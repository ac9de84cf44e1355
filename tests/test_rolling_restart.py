"""examples/deploy/haproxy.cfg: three trio_sock backends behind HAProxy, restarted one
at a time while a client keeps asking through HAProxy; not one request may fail.

Real processes on loopback: HAProxy as configured in the example (ports filled in),
three ``python -m trio_sock server --proxy-protocol`` backends.  Each backend in turn
is taken out of HAProxy (its runtime API), gets SIGTERM, exits, is started again on its
port and put back; the next one is stopped only once HAProxy's health checks have
reached the new one.
"""

from __future__ import annotations

import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import pytest

from tests.helpers import ready, run_cli, wait_for_log
from tests.listen.test_systemd import activation_env, free_tcp_port

if TYPE_CHECKING:
    from tests.helpers import Processes, ServerProcess

CONFIG: Final = Path(__file__).resolve().parent.parent / "examples" / "deploy" / "haproxy.cfg"
BACKENDS: Final = 3
#: The backends' names in the example's configuration.
NAMES: Final = ("one", "two", "three")


def haproxy(admin: Path, command: str) -> str:
    """One command to HAProxy's runtime API; its answer, blank lines stripped."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(admin))
        sock.sendall(command.encode() + b"\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer.decode().strip()


@attrs.define
class Load:
    """A client asking through HAProxy, one connection per request, until told to stop."""

    port: int
    requests: int = 0
    failures: list[str] = attrs.Factory(list)
    longest: float = 0.0
    stop: threading.Event = attrs.Factory(threading.Event)
    progress: threading.Condition = attrs.Factory(threading.Condition)

    def wait_for_more(self, count: int, timeout: float = 15.0) -> None:
        """Return once ``count`` more requests were made (whatever their outcome)."""
        target = self.requests + count
        with self.progress:
            assert self.progress.wait_for(lambda: self.requests >= target, timeout)

    def run(self) -> None:
        byte = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    sock.sendall(bytes([byte]))
                    reply = sock.recv(1)
                if reply != bytes([(byte + 1) % 256]):
                    self.failures.append(f"sent {byte}, got {reply!r}")
            except OSError as exc:
                self.failures.append(repr(exc))
            with self.progress:
                self.requests += 1
                self.progress.notify_all()
            self.longest = max(self.longest, time.monotonic() - started)
            byte = (byte + 1) % 256


def backend(procs: Processes, number: int, port: int) -> ServerProcess:
    path = str(procs.cwd / f"s{number}")
    return procs.server("--proxy-protocol", "--unix", path, "--tcp", f"127.0.0.1:{port}")


def checked(server: ServerProcess, times: int) -> None:
    """Wait until HAProxy's health checks have been served ``times`` times."""
    wait_for_log(server, "left tcp:", timeout=15, until=lambda log: log.count("left tcp:") >= times)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (CI installs it)")
def test_a_rolling_restart_behind_haproxy_fails_no_request(procs: Processes) -> None:
    front = free_tcp_port()
    ports = [free_tcp_port() for _ in range(BACKENDS)]
    servers = [backend(procs, n, port) for n, port in enumerate(ports)]
    config = procs.cwd / "haproxy.cfg"
    admin = procs.cwd / "admin.sock"
    config.write_text(
        CONFIG.read_text().format(
            admin=admin, front=front, back1=ports[0], back2=ports[1], back3=ports[2]
        )
    )
    procs.spawn(["haproxy", "-db", "-f", str(config)])
    for server in servers:
        checked(server, 2)  # up in HAProxy's eyes (rise 2)
    # HAProxy prints no ready line: the client's --wait retries until it listens.
    waited = run_cli("client", "--tcp", f"127.0.0.1:{front}", "--wait", "10", cwd=procs.cwd)
    assert waited.stdout == "char from server = B\n", waited.stderr
    load = Load(front)
    thread = threading.Thread(target=load.run)
    thread.start()
    try:
        for number, (name, port) in enumerate(zip(NAMES, ports, strict=True)):
            served_before = load.requests
            assert haproxy(admin, f"disable server trio_sock/{name}") == ""
            assert servers[number].stop() == 0
            servers[number] = backend(procs, number, port)
            assert haproxy(admin, f"enable server trio_sock/{name}") == ""
            checked(servers[number], 3)
            assert load.requests > served_before  # the load ran through this restart
    finally:
        load.stop.set()
        thread.join(timeout=30)
    print(f"requests {load.requests}, failures {len(load.failures)}, longest {load.longest:.3f}s")
    assert load.failures == [], load.failures
    assert load.requests > 100


def test_a_restart_under_socket_activation_fails_no_request(procs: Processes) -> None:
    """As systemd holds a ``.socket`` unit's socket across a service's restarts: here the
    test holds it and starts the server on it (``LISTEN_FDS``) twice, under load.  The
    socket never closes, so what arrives while no server runs waits in its queue."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(4096)
        port = held.getsockname()[1]
        fd = held.fileno()

        def activated() -> ServerProcess:
            # systemd's first socket is fd 3, and LISTEN_PID the server's pid: a small
            # launcher puts the socket there and becomes the server (exec keeps the pid).
            launch = (
                f"import os, sys; os.dup2({fd}, 3); os.environ['LISTEN_PID'] = str(os.getpid());"
                " os.execv(sys.executable, [sys.executable, '-m', 'trio_sock', 'server'])"
            )
            argv = [sys.executable, "-c", launch]
            env = activation_env({"LISTEN_FDS": "1"})
            return ready(procs.spawn(argv, env=env, pass_fds=(fd,)))

        server = activated()
        load = Load(port)
        thread = threading.Thread(target=load.run)
        thread.start()
        try:
            for _ in range(2):
                load.wait_for_more(100)  # the load reaches this server
                assert server.stop() == 0
                server = activated()
            load.wait_for_more(100)  # and the last one
        finally:
            load.stop.set()
            thread.join(timeout=30)
        assert server.stop() == 0
    print(f"requests {load.requests}, failures {len(load.failures)}, longest {load.longest:.3f}s")
    assert load.failures == [], load.failures
