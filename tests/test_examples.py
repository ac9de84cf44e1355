"""Run every program in examples/ for real, as a reader of the chapter would.

Each server runs as a subprocess in a short temporary directory; a test talks to
it only after reading its ready line, never after a sleep.  The fixture that
starts servers also stops them (SIGTERM) and checks that each one exited 0
without a traceback, so every test doubles as a clean-shutdown test.
"""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from tests.helpers import (
    READY_PREFIX,
    START_TIMEOUT,
    ServerProcess,
    assert_no_traceback,
    read_line,
    run_cli,
)
from trio_sock import Address, TcpAddress, UnixAddress, parse_address

if TYPE_CHECKING:
    from collections.abc import Iterator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Far longer than any reply takes, even on a loaded machine; a test that hits it
#: has found a server that does not answer.
REPLY_TIMEOUT = 10.0
#: How long server1 gets to (wrongly) answer a second client while it serves a first:
#: long enough to be sure it does not, short enough to keep the suite quick.
NO_REPLY_WINDOW = 0.5
#: server1's simulated work per reply in the three-client test: three of them are
#: clearly longer than starting three clients, and keep the test under two seconds.
SERIAL_DELAY = 0.3
UNIX_SERVERS = ["server1.py", "server4.py", "server5.py", "trio_server.py"]
CONCURRENT_SERVERS = ["server4.py", "server5.py", "trio_server.py"]
STREAM_SERVERS = ["server5.py", "trio_server.py"]
ALL_SERVERS = ["server1.py", "server2.py", "server4.py", "server5.py", "trio_server.py"]


def example(name: str, *args: str) -> list[str]:
    """The command line of ``python examples/NAME ARGS``, with this interpreter."""
    return [sys.executable, str(EXAMPLES / name), *args]


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a client example to completion, capturing text output."""
    return subprocess.run(
        example(name, *args), cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )


def server_args(name: str, directory: Path) -> list[str]:
    """Arguments that put ``name``'s listeners in ``directory`` and on a free port."""
    if name == "server2.py":
        return ["0"]
    if name == "trio_server.py":
        return [str(directory / "sock"), "0"]
    return [str(directory / "sock")]


def book_client(server: ServerProcess) -> list[str]:
    """The chapter's own client for ``server``'s first address, sending ``A``."""
    address = server.addresses[0]
    if isinstance(address, TcpAddress):
        return ["client2.py", "A", str(address.port)]
    return ["client1.py", "A", address.path]


def assert_replied(result: subprocess.CompletedProcess[str], char: str) -> None:
    """The client printed exactly the book's line, and nothing else."""
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"char from server = {char}\n",
        "",
    )


def connect(address: Address) -> socket.socket:
    """A plain blocking client socket, connected, with a timeout on every call."""
    if isinstance(address, UnixAddress):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = address.path
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (address.host, address.port)
    sock.settimeout(REPLY_TIMEOUT)
    try:
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def exchange(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` and read until as many bytes came back, or the server closed."""
    sock.sendall(data)
    reply = b""
    while len(reply) < len(data):
        chunk = sock.recv(len(data) - len(reply))
        if not chunk:
            break
        reply += chunk
    return reply


def _default_sigint() -> None:
    # A shell that runs a job in the background makes it ignore SIGINT, and
    # exec keeps that; undo it so the Ctrl-C tests test the server, not the shell.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class StartExample(Protocol):
    def __call__(self, name: str, *args: str) -> ServerProcess: ...


@pytest.fixture
def start_example(short_tmp: Path) -> Iterator[StartExample]:
    """Start server examples in ``short_tmp``; stop them at the end and check how they exited."""
    started: list[ServerProcess] = []

    def start(name: str, *args: str) -> ServerProcess:
        stderr_path = short_tmp / f"{len(started)}-{name}.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                example(name, *args),
                cwd=short_tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                preexec_fn=_default_sigint,
            )
        server = ServerProcess(process, [], stderr_path)
        started.append(server)
        assert process.stdout is not None
        # Only the first line: a server may print more once clients come.
        line = read_line(process.stdout.fileno(), START_TIMEOUT)
        assert line.startswith(READY_PREFIX), f"{name}: no ready line:\n{server.stderr()}"
        # shlex, as tests/helpers.py reads the library's ready line, which quotes odd paths.
        words = shlex.split(line.removeprefix(READY_PREFIX))
        server.addresses = [parse_address(word) for word in words]
        return server

    yield start

    outcomes = []
    for server in started:
        try:
            outcomes.append((server.stop(signal.SIGTERM), server.stderr()))
        finally:
            server.kill()
            assert server.process.stdout is not None
            server.process.stdout.close()
    for code, stderr in outcomes:
        assert code == 0, stderr
        assert_no_traceback(stderr)


def test_server1_and_client1_meet_at_server_socket_in_the_current_directory(
    start_example: StartExample, short_tmp: Path
) -> None:
    server = start_example("server1.py")
    assert server.addresses == [UnixAddress("server_socket")]
    assert (short_tmp / "server_socket").is_socket()
    assert_replied(run_example("client1.py", cwd=short_tmp), "B")
    assert_replied(run_cli("client", "--char", "A", cwd=short_tmp), "B")


@pytest.mark.parametrize("name", UNIX_SERVERS)
def test_each_unix_server_replies_with_the_next_character(
    start_example: StartExample, short_tmp: Path, name: str
) -> None:
    path = start_example(name, *server_args(name, short_tmp)).unix().path
    assert_replied(run_example("client1.py", "A", path, cwd=short_tmp), "B")
    assert_replied(run_example("client1.py", "Z", path, cwd=short_tmp), "[")
    assert_replied(run_cli("client", "--unix", path, "--char", "A", cwd=short_tmp), "B")
    assert_replied(run_example("trio_client.py", "A", f"unix:{path}", cwd=short_tmp), "B")


def test_server1_replaces_the_socket_file_a_crashed_run_left_behind(
    start_example: StartExample, short_tmp: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as crashed:
        crashed.bind(str(short_tmp / "server_socket"))
    start_example("server1.py")
    assert_replied(run_example("client1.py", cwd=short_tmp), "B")


def test_server1_makes_a_second_client_wait_until_the_first_is_served(
    start_example: StartExample, short_tmp: Path
) -> None:
    address = start_example("server1.py", str(short_tmp / "sock")).unix()
    with connect(address) as first, connect(address) as second:
        second.sendall(b"x")
        second.settimeout(NO_REPLY_WINDOW)
        with pytest.raises(TimeoutError):
            second.recv(1)  # server1 is still blocked reading from `first`
        second.settimeout(REPLY_TIMEOUT)
        assert exchange(first, b"A") == b"B"
        assert second.recv(1) == b"y"


def test_server1_with_a_delay_serves_three_clients_one_after_another(
    start_example: StartExample, short_tmp: Path
) -> None:
    # examples/README.md: server1 answers three clients in three times the delay.
    start_example("server1.py", "--delay", str(SERIAL_DELAY))
    started = time.monotonic()
    clients = [
        subprocess.Popen(
            example("client1.py", char), cwd=short_tmp, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for char in "ABC"
    ]  # fmt: skip
    try:
        outcomes = [
            (*client.communicate(timeout=REPLY_TIMEOUT), client.returncode) for client in clients
        ]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.communicate()
    elapsed = time.monotonic() - started
    assert outcomes == [(f"char from server = {c}\n", "", 0) for c in "BCD"]
    assert elapsed >= 3 * SERIAL_DELAY, elapsed


@pytest.mark.parametrize("delay", ["-1", "nan", "x"])
def test_server1_refuses_a_delay_that_is_not_a_number_of_seconds(
    short_tmp: Path, delay: str
) -> None:
    result = run_example("server1.py", "--delay", delay, cwd=short_tmp)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("usage: server1.py"), result.stderr
    assert "argument --delay:" in result.stderr.splitlines()[-1], result.stderr
    assert_no_traceback(result.stderr)
    assert not (short_tmp / "server_socket").exists()


def test_client1_without_a_server_says_oops_and_exits_1(short_tmp: Path) -> None:
    result = run_example("client1.py", cwd=short_tmp)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "oops: client1: No such file or directory\n"


def test_server2_replies_over_tcp_on_the_port_it_prints(
    start_example: StartExample, short_tmp: Path
) -> None:
    address = start_example("server2.py", "0").tcp()
    assert address.host == "127.0.0.1"
    assert address.port != 0
    port = str(address.port)
    assert_replied(run_example("client2.py", "A", port, cwd=short_tmp), "B")
    assert_replied(run_example("client2.py", "\xff", port, cwd=short_tmp), "\x00")
    assert_replied(run_cli("client", "--tcp", f"127.0.0.1:{port}", cwd=short_tmp), "B")
    assert_replied(run_example("trio_client.py", "A", f"tcp:{port}", cwd=short_tmp), "B")


def test_client2_explains_why_the_books_first_port_was_1574(short_tmp: Path) -> None:
    result = run_example("client2.py", "--explain-htons", cwd=short_tmp)
    assert (result.returncode, result.stderr) == (0, "")
    # 1574 on a little-endian machine; a big-endian one never had the bug.
    seen_by_kernel = int.from_bytes((9734).to_bytes(2, sys.byteorder), "big")
    assert f"as port {seen_by_kernel}." in result.stdout
    assert f"htons(9734), gives {socket.htons(9734)}" in result.stdout
    assert "convert it for you" in result.stdout


def test_client2_without_a_server_says_oops_and_exits_1(short_tmp: Path) -> None:
    # A bound socket that does not listen: its port is ours, and refuses connections.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        result = run_example("client2.py", "A", str(port), cwd=short_tmp)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "oops: client2: Connection refused\n"


@pytest.mark.parametrize("name", CONCURRENT_SERVERS)
def test_a_concurrent_server_answers_a_second_client_while_the_first_is_still_connected(
    start_example: StartExample, short_tmp: Path, name: str
) -> None:
    address = start_example(name, *server_args(name, short_tmp)).unix()
    with connect(address) as first, connect(address) as second:
        assert exchange(second, b"x") == b"y"
        assert exchange(first, b"A") == b"B"


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_server4_leaves_no_zombie_children(start_example: StartExample, short_tmp: Path) -> None:
    server = start_example("server4.py", str(short_tmp / "sock"))
    for char in "ABC":
        assert_replied(
            run_example("client1.py", char, server.unix().path, cwd=short_tmp), chr(ord(char) + 1)
        )
    # Each child exits just after its reply; with SIGCHLD ignored the kernel reaps
    # it at once, so the list empties.  A zombie would stay in it for good.
    deadline = time.monotonic() + REPLY_TIMEOUT
    while (children := _children(server.process.pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert children == []


@pytest.mark.parametrize("name", STREAM_SERVERS)
def test_a_stream_server_replies_to_every_byte_until_the_client_closes(
    start_example: StartExample, short_tmp: Path, name: str
) -> None:
    address = start_example(name, *server_args(name, short_tmp)).unix()
    with connect(address) as sock:
        assert exchange(sock, b"HAL") == b"IBM"
        assert exchange(sock, b"\xff") == b"\x00"
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # the server closes after our EOF


def test_trio_server_serves_unix_and_tcp_clients_alike(
    start_example: StartExample, short_tmp: Path
) -> None:
    server = start_example("trio_server.py", str(short_tmp / "sock"), "0")
    unix, tcp = server.unix(), server.tcp()
    assert [type(address) for address in server.addresses] == [UnixAddress, TcpAddress]
    assert_replied(run_example("trio_client.py", "A", str(unix), cwd=short_tmp), "B")
    assert_replied(run_example("trio_client.py", "Z", str(tcp), cwd=short_tmp), "[")
    # The book's clients work unchanged against it.
    assert_replied(run_example("client1.py", "A", unix.path, cwd=short_tmp), "B")
    assert_replied(run_example("client2.py", "A", str(tcp.port), cwd=short_tmp), "B")
    assert_replied(run_cli("client", "--tcp", f"127.0.0.1:{tcp.port}", cwd=short_tmp), "B")


def test_trio_client_without_a_server_says_oops_and_exits_1(short_tmp: Path) -> None:
    result = run_example("trio_client.py", cwd=short_tmp)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("oops: client: unix:server_socket: No such file or directory")
    assert result.stderr.count("\n") == 1


def test_trio_server_says_oops_when_its_address_is_taken(
    start_example: StartExample, short_tmp: Path
) -> None:
    first = start_example("trio_server.py", str(short_tmp / "sock"), "0")
    taken = str(first.tcp().port)
    result = subprocess.run(
        example("trio_server.py", str(short_tmp / "other"), taken),
        cwd=short_tmp,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("oops: trio_server: cannot listen on tcp:127.0.0.1:")
    assert_no_traceback(result.stderr)
    assert not (short_tmp / "other").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("name", ALL_SERVERS)
def test_every_server_stops_cleanly_on_a_signal_and_removes_its_socket_file(
    start_example: StartExample, short_tmp: Path, name: str, signum: signal.Signals
) -> None:
    server = start_example(name, *server_args(name, short_tmp))
    # A client served first: the signal finds the server in its loop, not starting up.
    client, *args = book_client(server)
    assert_replied(run_example(client, *args, cwd=short_tmp), "B")

    assert server.stop(signum) == 0
    assert_no_traceback(server.stderr())
    assert not (short_tmp / "sock").exists()
