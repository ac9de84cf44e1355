"""Real third-party clients against ``python -m trio_sock server`` run as a subprocess.

The book's own C clients (``tests/c/``, built with gcc), socat and OpenBSD nc
know nothing of trio_sock: when they get their incremented bytes back, the
server speaks plain stream sockets, as the contract promises.  The C clients
have their addresses compiled in, so their server runs with default arguments
(``server_socket`` in its directory, TCP 127.0.0.1:9734); socat and nc get a
socket file in a temporary directory and a free TCP port.  A test that needs
port 9734 skips, saying so, when another program holds it (a server started
from the README's quick start, say).
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import pytest

from tests.helpers import ServerProcess, assert_no_traceback, start_server
from trio_sock.config.addresses import TcpAddress, UnixAddress

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: Where the book's client sources live.
C_SOURCES: Final = Path(__file__).parent / "c"
#: What client1.c connects to, relative to its current directory.
BOOK_SOCKET: Final = "server_socket"
#: What client3.c connects to: ``inet_addr("127.0.0.1")``, ``htons(9734)``.
BOOK_HOST: Final = "127.0.0.1"
BOOK_PORT: Final = 9734
#: Every peer answers in milliseconds; this only bounds a hang on a loaded CI machine.
PEER_TIMEOUT: Final = 20.0
#: socat's ``-t``: how long it waits, after its stdin's EOF, for the server to
#: close.  Longer than PEER_TIMEOUT, so socat can only exit in time because the
#: server closed the connection (socat's own default, 0.5 s, could cut replies off).
SOCAT_CLOSE_WAIT: Final = 3 * PEER_TIMEOUT

PAYLOADS: Final = [
    pytest.param(bytes(range(256)), id="every byte value"),
    pytest.param(random.Random(BOOK_PORT).randbytes(5000), id="a few kilobytes"),
    pytest.param(random.Random(BOOK_PORT).randbytes(1 << 20), id="a megabyte"),
]
TRANSPORTS: Final = ["unix", "tcp"]


def incremented(data: bytes) -> bytes:
    """The contract's reply, computed here independently of ``trio_sock.protocol``."""
    return bytes((byte + 1) % 256 for byte in data)


# --- the server ------------------------------------------------------------------------


def stop_cleanly(server: ServerProcess) -> None:
    """SIGTERM the server (if it still runs); it must exit 0 with no traceback."""
    try:
        code = server.stop()
    except subprocess.TimeoutExpired:
        server.kill()
        raise
    if server.process.stdout is not None:
        server.process.stdout.close()
    stderr = server.stderr()
    assert code == 0, f"the server exited {code} after SIGTERM; its stderr:\n{stderr}"
    assert_no_traceback(stderr)


@contextlib.contextmanager
def running_server(*args: str, cwd: Path) -> Iterator[ServerProcess]:
    """Run ``python -m trio_sock server ARGS`` in ``cwd``; at the end, ``stop_cleanly``."""
    server = start_server(*args, cwd=cwd)
    try:
        yield server
    except BaseException as exc:
        server.kill()
        exc.add_note(f"the server's stderr:\n{server.stderr()}")
        if server.process.stdout is not None:
            server.process.stdout.close()
        raise
    stop_cleanly(server)


@pytest.fixture
def server_process(short_tmp: Path) -> Iterator[ServerProcess]:
    """A server on ``short_tmp/s`` and a free loopback port, stopped cleanly at the end."""
    unix = str(short_tmp / "s")
    with running_server("--unix", unix, "--tcp", "127.0.0.1:0", cwd=short_tmp) as server:
        yield server


# --- running peers -----------------------------------------------------------------------


def run_peer(
    command: Sequence[str | bytes], *, cwd: Path, input: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """Run a peer program to its end with ``input`` on stdin, capturing its output."""
    return subprocess.run(
        command, cwd=cwd, input=input, capture_output=True, timeout=PEER_TIMEOUT, check=False
    )


def assert_replied(result: subprocess.CompletedProcess[bytes], sent: bytes) -> None:
    """The peer exited 0, quietly, having printed exactly the reply to ``sent``."""
    assert (result.returncode, result.stderr) == (0, b""), (result.returncode, result.stderr)
    got, expected = result.stdout, incremented(sent)
    if got != expected:
        at = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
            min(len(got), len(expected)),
        )
        pytest.fail(
            f"{len(sent)} bytes sent, {len(got)} received; first difference at offset {at}:"
            f" got {got[at : at + 8]!r}, expected {expected[at : at + 8]!r}"
        )


def kill_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()


def read_exactly(fd: int, size: int, timeout: float = PEER_TIMEOUT) -> bytes:
    """Read ``size`` bytes from the pipe ``fd``, or fewer if it closes or time runs out."""
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(fd, size - len(data))
            if not chunk:
                break
            data += chunk
    return data


# --- the book's C clients ----------------------------------------------------------------


@attrs.frozen
class BookClients:
    """The book's clients, compiled."""

    client1: Path
    """AF_UNIX, ``server_socket`` in its current directory."""
    client3: Path
    """AF_INET, 127.0.0.1 port 9734."""


@pytest.fixture(scope="session")
def book_clients(tmp_path_factory: pytest.TempPathFactory) -> BookClients:
    """client1.c and client3.c, compiled with ``gcc -Wall -Werror`` once per session."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed, so the book's C clients (tests/c/) cannot be built")
    out = tmp_path_factory.mktemp("book-clients")
    for name in ("client1", "client3"):
        # -O0: the book ignores what write() and read() return, which glibc's
        # fortified headers (enabled only when optimising) turn into -Werror errors.
        command = [
            gcc,
            "-Wall",
            "-Werror",
            "-O0",
            "-o",
            str(out / name),
            str(C_SOURCES / f"{name}.c"),
        ]
        built = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert built.returncode == 0, f"gcc could not build {name}.c:\n{built.stderr}"
    return BookClients(out / "client1", out / "client3")


def skip_unless_book_port_free() -> None:
    """Skip, saying why, if something already listens on 127.0.0.1:9734.

    A server started from the README's quick start does: that is no fault of the
    code under test, and these tests cannot move to a free port, since client3 has
    9734 compiled in.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As Trio's listeners do: an earlier test's connection in TIME_WAIT is not "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((BOOK_HOST, BOOK_PORT))
        except OSError as exc:
            reason = exc.strerror
        else:
            return
    pytest.skip(
        f"TCP {BOOK_HOST}:{BOOK_PORT} is in use ({reason}) and the book's client3 has that"
        f" port compiled in; stop what holds it (`ss -ltnp 'sport = :{BOOK_PORT}'`) to run"
        " this test"
    )


@pytest.fixture
def book_dir(short_tmp: Path) -> Path:
    """A directory for a server with the book's addresses, once port 9734 is known free."""
    skip_unless_book_port_free()
    return short_tmp


def run_book_client(
    client: Path, *, cwd: Path, char: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run client1 or client3 in ``cwd``, sending ``char`` (default: the book's ``A``)."""
    return run_peer([str(client)] if char is None else [str(client), char], cwd=cwd)


BOOK_REPLY: Final = b"char from server = B\n"

SERVER_MODES: Final = [
    pytest.param((), id="stream mode"),
    pytest.param(("--once",), id="--once"),
    pytest.param(("--max-clients", "1"), id="--max-clients 1"),
    pytest.param(("--once", "--max-clients", "1"), id="--once --max-clients 1, the book's server"),
]
ONE_CLIENT_AT_A_TIME: Final = [
    pytest.param(("--max-clients", "1"), id="--max-clients 1"),
    pytest.param(("--once", "--max-clients", "1"), id="--once --max-clients 1, the book's server"),
]


@pytest.mark.parametrize("options", SERVER_MODES)
def test_the_books_clients_get_B_from_a_server_on_the_default_addresses(
    book_clients: BookClients, book_dir: Path, options: tuple[str, ...]
) -> None:
    with running_server(*options, cwd=book_dir) as server:
        assert server.addresses == [
            UnixAddress(BOOK_SOCKET),
            TcpAddress(BOOK_HOST, BOOK_PORT),
        ]
        for client in (book_clients.client1, book_clients.client3):
            result = run_book_client(client, cwd=book_dir)
            assert (result.returncode, result.stdout, result.stderr) == (0, BOOK_REPLY, b"")


@pytest.mark.parametrize("client", ["client1", "client3"])
@pytest.mark.parametrize(
    ("char", "reply"),
    [
        pytest.param(b"Z", b"[", id="Z gives ["),
        pytest.param(b"~", b"\x7f", id="tilde gives DEL"),
        pytest.param(b"\x7f", b"\x80", id="0x7f gives 0x80, past signed char"),
        pytest.param(b"\xff", b"\x00", id="0xff wraps to 0x00"),
    ],
)
def test_the_books_clients_get_the_successor_of_any_char_they_send(
    book_clients: BookClients, short_tmp: Path, client: str, char: bytes, reply: bytes
) -> None:
    # Each server listens only where its client connects: client1's keeps off port 9734.
    if client == "client3":
        skip_unless_book_port_free()
        where = ("--tcp", f"{BOOK_HOST}:{BOOK_PORT}")
    else:
        where = ("--unix", BOOK_SOCKET)
    with running_server(*where, "--once", "--max-clients", "1", cwd=short_tmp):
        result = run_book_client(getattr(book_clients, client), cwd=short_tmp, char=char)
    expected = b"char from server = " + reply + b"\n"
    assert (result.returncode, result.stdout, result.stderr) == (0, expected, b"")


@pytest.mark.parametrize("options", ONE_CLIENT_AT_A_TIME)
def test_book_clients_started_together_wait_their_turn_and_all_get_B(
    book_clients: BookClients, book_dir: Path, options: tuple[str, ...]
) -> None:
    with running_server(*options, cwd=book_dir), contextlib.ExitStack() as stack:
        clients = []
        for client in [book_clients.client1, book_clients.client3] * 10:
            process = subprocess.Popen(
                [str(client)], cwd=book_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            stack.enter_context(process)
            # Runs before the Popen's own exit, which waits: no client outlives a failure.
            stack.callback(kill_if_running, process)
            clients.append(process)
        outcomes = [
            (client.communicate(timeout=PEER_TIMEOUT), client.returncode) for client in clients
        ]
    assert outcomes == [((BOOK_REPLY, b""), 0)] * len(clients)


def test_the_books_client1_fails_as_the_chapter_shows_when_no_server_is_running(
    book_clients: BookClients, short_tmp: Path
) -> None:
    result = run_book_client(book_clients.client1, cwd=short_tmp)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        b"",
        b"oops: client1: No such file or directory\n",
    )


def test_the_books_client3_is_refused_when_no_server_is_running(
    book_clients: BookClients, book_dir: Path
) -> None:
    result = run_book_client(book_clients.client3, cwd=book_dir)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        b"",
        b"oops: client3: Connection refused\n",
    )


def test_the_books_clients_fail_again_once_the_server_has_stopped(
    book_clients: BookClients, book_dir: Path
) -> None:
    with running_server(cwd=book_dir) as server:
        assert run_book_client(book_clients.client1, cwd=book_dir).stdout == BOOK_REPLY
        stop_cleanly(server)
        assert not (book_dir / BOOK_SOCKET).exists(), "the server left its socket file behind"
        client1 = run_book_client(book_clients.client1, cwd=book_dir)
        client3 = run_book_client(book_clients.client3, cwd=book_dir)
    assert (client1.returncode, client1.stderr) == (
        1,
        b"oops: client1: No such file or directory\n",
    )
    assert (client3.returncode, client3.stderr) == (1, b"oops: client3: Connection refused\n")


# --- socat and OpenBSD nc ---------------------------------------------------------------


@pytest.fixture(scope="session")
def socat() -> str:
    path = shutil.which("socat")
    if path is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    return path


@pytest.fixture(scope="session")
def openbsd_nc() -> str:
    path = shutil.which("nc")
    if path is None:
        pytest.skip("nc is not installed (apt-get install netcat-openbsd)")
    usage = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=10, check=False)
    if "OpenBSD netcat" not in usage.stdout + usage.stderr:
        pytest.skip(
            f"{path} is not OpenBSD netcat, which -N and -U need (apt-get install netcat-openbsd)"
        )
    return path


def socat_command(socat: str, server: ServerProcess, transport: str) -> list[str | bytes]:
    tcp = server.tcp()
    target = (
        f"UNIX-CONNECT:{server.unix().path}"
        if transport == "unix"
        else f"TCP:{tcp.host}:{tcp.port}"
    )
    return [socat, "-t", str(SOCAT_CLOSE_WAIT), "-", target]


def nc_command(nc: str, server: ServerProcess, transport: str) -> list[str | bytes]:
    # -N: shut the socket down for writing at the EOF of stdin, then read until the server closes.
    if transport == "unix":
        return [nc, "-N", "-U", server.unix().path]
    return [nc, "-N", server.tcp().host, str(server.tcp().port)]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_socat_gets_its_bytes_back_incremented_and_the_server_closes_at_its_eof(
    socat: str, server_process: ServerProcess, transport: str, payload: bytes, short_tmp: Path
) -> None:
    command = socat_command(socat, server_process, transport)
    assert_replied(run_peer(command, cwd=short_tmp, input=payload), payload)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_openbsd_nc_gets_its_bytes_back_incremented_and_the_server_closes_at_its_eof(
    openbsd_nc: str, server_process: ServerProcess, transport: str, payload: bytes, short_tmp: Path
) -> None:
    command = nc_command(openbsd_nc, server_process, transport)
    assert_replied(run_peer(command, cwd=short_tmp, input=payload), payload)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("tool", ["socat", "nc"])
def test_an_interactive_peer_gets_each_reply_before_it_sends_its_eof(
    request: pytest.FixtureRequest,
    server_process: ServerProcess,
    short_tmp: Path,
    tool: str,
    transport: str,
) -> None:
    if tool == "socat":
        command = socat_command(request.getfixturevalue("socat"), server_process, transport)
    else:
        command = nc_command(request.getfixturevalue("openbsd_nc"), server_process, transport)
    with subprocess.Popen(
        command,
        cwd=short_tmp,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as peer:
        try:
            assert peer.stdin is not None
            assert peer.stdout is not None
            replies = []
            for line in (b"hello\n", b"Zz\xff\n"):
                peer.stdin.write(line)
                peer.stdin.flush()
                replies.append(read_exactly(peer.stdout.fileno(), len(line)))
            rest, stderr = peer.communicate(timeout=PEER_TIMEOUT)  # closes stdin: EOF
        finally:
            kill_if_running(peer)
    assert replies == [b"ifmmp\x0b", b"[{\x00\x0b"]
    assert (peer.returncode, rest, stderr) == (0, b"", b"")
