"""``python -m trio_sock`` from the outside: every CLI rule of the contract, in real subprocesses.

Each server runs in its own process and is always killed at the end of its test,
pass or fail (the ``procs`` fixture).  Nothing here sleeps to synchronise: tests
wait for the ready line, for a log line, for a reply or for a process to exit.
The only short socket timeouts are negative checks ("no reply yet").
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from tests.helpers import (
    BOOK_PORT,
    CLIENT_TIMEOUT,
    EVENT_TIMEOUT,
    FAIL_TIMEOUT,
    IO_TIMEOUT,
    SUCCESS,
    Processes,
    ServerProcess,
    accept_failures,
    assert_no_traceback,
    assert_user_error,
    cli,
    connect,
    exchange,
    has_ipv6_loopback,
    lock_of,
    read_line,
    receive_until_eof,
    run_cli,
    run_client,
    unprivileged,
    wait_for_log,
)
from trio_sock.config.addresses import Address, TcpAddress, UnixAddress
from trio_sock.server import ready

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

#: A negative check ("no reply while the first client is served"): long enough
#: that a reply that was going to come would have, short enough to keep the suite fast.
NO_REPLY_WITHIN: Final = 0.3
#: ``sun_path`` holds 108 bytes including the terminating NUL.
SUN_PATH_MAX: Final = 107
#: A soft descriptor limit small enough for a test to exhaust with a few dozen
#: connections, large enough for Python, Trio and the listeners to start.
LOW_NOFILE: Final = 40
#: More connections than ``LOW_NOFILE`` descriptors, so accept() must fail with EMFILE.
FLOOD_CONNECTIONS: Final = 60
#: Failed accepts the EMFILE test waits for; they must take fewer log lines than this.
ACCEPT_FAILURES: Final = 10


# --- processes and sockets ---------------------------------------------------------------------


@pytest.fixture
def sock_path(short_tmp: Path) -> Path:
    """Where the usual test server puts its socket file."""
    return short_tmp / "s"


@pytest.fixture
def server(procs: Processes, sock_path: Path) -> ServerProcess:
    """A server on a Unix socket in ``short_tmp`` and a free loopback TCP port."""
    return procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0")


def where(address: Address) -> list[str]:
    """The client options that reach ``address``: ``--unix PATH`` or ``--tcp HOST:PORT``."""
    return [f"--{address.transport}", str(address).removeprefix(f"{address.transport}:")]


def connect_idle(server: ServerProcess) -> socket.socket:
    """A client on the server's Unix socket that sends nothing, known to be accepted.

    The kernel's accept queue is first in, first out, and the server accepts on
    a listener in one loop: once a second connection made after this one has
    its reply, this one has been accepted too.
    """
    idle = connect(server.unix())
    try:
        assert exchange(server.unix(), b"A") == b"B"
    except BaseException:
        idle.close()
        raise
    return idle


def ready_words(procs: Processes, *args: str) -> list[str]:
    """Start a server with ``args``; return the words of its ready line after the prefix."""
    process = procs.spawn(cli("server", *args)).process
    assert process.stdout is not None
    line = read_line(process.stdout.fileno(), EVENT_TIMEOUT)
    return ready.ready_words(line)


def tcp_port_of(words: Sequence[str], host: str) -> int:
    """The port of the one ``tcp:HOST:PORT`` word for ``host`` (``[::1]`` bracketed)."""
    ports = [m[1] for w in words if (m := re.fullmatch(rf"tcp:{re.escape(host)}:(\d+)", w))]
    assert len(ports) == 1, words
    return int(ports[0])


def is_root() -> bool:
    return os.geteuid() == 0


# --- the ready line ----------------------------------------------------------------------------


def test_the_ready_line_lists_every_address_with_the_real_port(
    procs: Processes, sock_path: Path, short_tmp: Path
) -> None:
    abstract = f"@trio-sock-test-{short_tmp.name}"
    words = ready_words(procs, "--unix", str(sock_path), "--unix", abstract, "--tcp", "127.0.0.1:0")
    assert len(words) == 3, words
    assert f"unix:{sock_path}" in words
    assert f"unix:{abstract}" in words
    port = tcp_port_of(words, "127.0.0.1")
    assert port != 0
    for address in (
        UnixAddress(str(sock_path)),
        UnixAddress(abstract),
        TcpAddress("127.0.0.1", port),
    ):
        assert exchange(address, b"A") == b"B", address


def test_a_tcp_port_without_a_host_listens_on_ipv4_loopback(
    procs: Processes, sock_path: Path
) -> None:
    words = ready_words(procs, "--unix", str(sock_path), "--tcp", "0")
    port = tcp_port_of(words, "127.0.0.1")
    assert exchange(TcpAddress("127.0.0.1", port), b"A") == b"B"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_an_ipv6_address_is_shown_in_brackets(procs: Processes, sock_path: Path) -> None:
    words = ready_words(procs, "--unix", str(sock_path), "--tcp", "[::1]:0")
    port = tcp_port_of(words, "[::1]")
    assert port != 0
    assert exchange(TcpAddress("::1", port), b"A") == b"B"
    result = run_client("--tcp", f"[::1]:{port}", cwd=sock_path.parent)
    assert (result.returncode, result.stdout) == (0, SUCCESS), result


def test_a_socket_path_with_a_space_stays_one_word_of_the_ready_line(
    procs: Processes, short_tmp: Path
) -> None:
    path = short_tmp / "a b"
    words = ready_words(procs, "--unix", str(path), "--tcp", "127.0.0.1:0")
    assert f"unix:{path}" in words, words
    result = run_client("--unix", str(path), cwd=short_tmp)
    assert (result.returncode, result.stdout) == (0, SUCCESS), result


def test_an_abstract_unix_name_is_served_and_shown_with_its_at_sign(
    procs: Processes, short_tmp: Path
) -> None:
    abstract = f"@trio-sock-test-{short_tmp.name}"
    server = procs.server("--unix", abstract, "--tcp", "127.0.0.1:0")
    assert UnixAddress(abstract) in server.addresses
    result = run_client("--unix", abstract, cwd=short_tmp)
    assert (result.returncode, result.stdout, result.stderr) == (0, SUCCESS, ""), result
    assert not any(path.is_socket() for path in short_tmp.iterdir()), "an abstract name has no file"


def test_with_no_address_the_server_listens_on_the_books_socket_file_and_port(
    procs: Processes, short_tmp: Path
) -> None:
    with socket.socket() as probe:
        # As the server does: connections in TIME_WAIT from earlier runs are no obstacle.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", BOOK_PORT))
        except OSError as exc:
            pytest.skip(f"port {BOOK_PORT} is taken by another program ({exc.strerror})")
    words = ready_words(procs)
    assert sorted(words) == ["tcp:127.0.0.1:9734", "unix:server_socket"]
    assert (short_tmp / "server_socket").is_socket()
    for args in [(), ("--tcp", str(BOOK_PORT))]:
        result = run_client(*args, cwd=short_tmp)
        assert (result.returncode, result.stdout, result.stderr) == (0, SUCCESS, ""), result


# --- the client --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_the_client_prints_the_servers_reply_and_exits_0(
    server: ServerProcess, short_tmp: Path, transport: str
) -> None:
    address = server.unix() if transport == "unix" else server.tcp()
    result = run_client(*where(address), cwd=short_tmp)
    assert (result.returncode, result.stdout, result.stderr) == (0, SUCCESS, ""), result


def test_the_clients_tcp_host_defaults_to_ipv4_loopback(
    server: ServerProcess, short_tmp: Path
) -> None:
    assert server.tcp().host == "127.0.0.1"
    result = run_client("--tcp", str(server.tcp().port), cwd=short_tmp)
    assert (result.returncode, result.stdout, result.stderr) == (0, SUCCESS, ""), result


def test_the_client_sends_the_character_it_is_given(server: ServerProcess, short_tmp: Path) -> None:
    result = run_client(*where(server.unix()), "--char", "Z", cwd=short_tmp)
    assert (result.returncode, result.stdout) == (0, "char from server = [\n"), result


def test_the_client_sends_byte_0xff_and_prints_byte_0x00(
    server: ServerProcess, short_tmp: Path
) -> None:
    result = subprocess.run(
        cli("client", *where(server.tcp()), "--char", "\xff"),
        cwd=short_tmp,
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result
    assert result.stdout == b"char from server = \x00\n"


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_without_a_server_the_client_fails_as_the_book_shows(
    short_tmp: Path, transport: str
) -> None:
    with contextlib.ExitStack() as stack:
        address: Address
        if transport == "unix":
            address, error = UnixAddress(str(short_tmp / "s")), "No such file or directory"
        else:
            # Bound but not listening: the port stays ours, and connecting is refused.
            unused = stack.enter_context(socket.socket())
            unused.bind(("127.0.0.1", 0))
            address, error = TcpAddress("127.0.0.1", unused.getsockname()[1]), "Connection refused"
        result = run_client(*where(address), cwd=short_tmp)
    line = assert_user_error(result, str(address), error, "python -m trio_sock server")
    assert line.startswith("oops: client:"), line


def test_a_client_path_longer_than_the_kernel_allows_says_so_and_suggests_no_server(
    short_tmp: Path,
) -> None:
    path = str(short_tmp / "x") + "x" * (SUN_PATH_MAX + 5 - len(str(short_tmp / "x")))
    result = run_client("--unix", path, cwd=short_tmp)
    line = assert_user_error(
        result,
        f"unix:{path}",
        f"the path is {SUN_PATH_MAX + 5} bytes, longer than the {SUN_PATH_MAX} a Unix socket"
        " address can hold; use a shorter path",
        starts_with="oops: client:",
    )
    assert "trio_sock server" not in line, line  # a server could not listen there either


def test_the_client_waits_for_a_server_that_starts_after_it(
    procs: Processes, sock_path: Path
) -> None:
    client = procs.popen("client", "--unix", str(sock_path), "--wait", "5")
    procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0")
    stdout, stderr = client.communicate(timeout=CLIENT_TIMEOUT)
    assert (client.returncode, stdout.decode(), stderr.decode()) == (0, SUCCESS, "")


def test_the_client_gives_up_after_its_timeout_when_no_reply_comes(short_tmp: Path) -> None:
    with socket.socket() as silent:
        # The kernel completes the handshake for a listening socket: the client
        # is connected, sends its byte, and nothing ever answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = run_client("--tcp", f"127.0.0.1:{port}", "--timeout", "0.5", cwd=short_tmp)
        elapsed = time.monotonic() - started
    line = assert_user_error(result, f"tcp:127.0.0.1:{port}")
    assert line.startswith("oops: client:"), line
    assert 0.5 <= elapsed < CLIENT_TIMEOUT / 2, elapsed


def test_the_client_fails_clearly_when_the_server_closes_without_replying(
    procs: Processes, sock_path: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen()
        listener.settimeout(EVENT_TIMEOUT)
        client = procs.popen("client", "--unix", str(sock_path))
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(IO_TIMEOUT)
            assert conn.recv(1) == b"A"
        stdout, stderr = client.communicate(timeout=CLIENT_TIMEOUT)
    result = subprocess.CompletedProcess(
        client.args, client.returncode, stdout.decode(), stderr.decode()
    )
    line = assert_user_error(result, f"unix:{sock_path}", "closed")
    assert line.startswith("oops: client:"), line


# --- bad command lines -------------------------------------------------------------------------

#: Command lines with a bad value; ``{s}`` is a socket path in the test's directory.  The
#: second item is what the error line must name (``None``: no particular option).
BAD_COMMAND_LINES: Final = [
    pytest.param(("server", "--max-clients", "0"), "--max-clients", id="max-clients-0"),
    pytest.param(("server", "--max-clients", "x"), "--max-clients", id="max-clients-x"),
    pytest.param(("server", "--delay", "-1"), "--delay", id="delay-negative"),
    pytest.param(("server", "--idle-timeout", "0"), "--idle-timeout", id="idle-timeout-0"),
    pytest.param(("server", "--grace", "nan"), "--grace", id="grace-nan"),
    pytest.param(("server", "--socket-mode", "999"), "--socket-mode", id="socket-mode-999"),
    pytest.param(("server", "--fd", "2147483648"), "--fd", id="fd-too-big"),
    pytest.param(("server", "--socket-mode", "abc"), "--socket-mode", id="socket-mode-abc"),
    pytest.param(("server", "--tcp", "70000"), "--tcp", id="tcp-port-too-big"),
    pytest.param(("server", "--tcp", "::1:80"), "--tcp", id="tcp-ipv6-without-brackets"),
    pytest.param(("server", "--tcp", "host:"), "--tcp", id="tcp-no-port"),
    pytest.param(("server", "--unix", ""), "--unix", id="unix-empty"),
    pytest.param(("server", "--log-level", "loud"), "--log-level", id="log-level-loud"),
    pytest.param(("server", "--backlog", "99999999999"), "--backlog", id="backlog-too-big"),
    pytest.param(("server", "--unix", "{s}", "--unix", "{s}"), None, id="same-address-twice"),
    pytest.param(("client", "--char", "AB"), "--char", id="char-two-characters"),
    pytest.param(("client", "--char", "\u20ac"), "--char", id="char-not-latin-1"),
    pytest.param(("client", "--char", ""), "--char", id="char-empty"),
    pytest.param(("client", "--timeout", "0"), "--timeout", id="timeout-0"),
    pytest.param(("client", "--unix", "{s}", "--tcp", "1"), "--tcp", id="client-unix-and-tcp"),
    pytest.param((), None, id="no-subcommand"),
]


@pytest.mark.parametrize(("args", "names"), BAD_COMMAND_LINES)
def test_a_bad_command_line_value_exits_2_with_usage(
    short_tmp: Path, args: tuple[str, ...], names: str | None
) -> None:
    argv = [arg.replace("{s}", str(short_tmp / "s")) for arg in args]
    if argv and "--unix" not in argv and "--tcp" not in argv:
        # Were the bad value accepted, this keeps the server off the book's defaults
        # (and makes the client fail at once, with exit 1).
        argv += ["--unix", str(short_tmp / "s")]
    result = run_cli(*argv, cwd=short_tmp, timeout=FAIL_TIMEOUT)
    error = assert_usage_error(result, " ".join(["python -m trio_sock", *args[:1]]))
    if names is not None:
        assert names in error, error


def assert_usage_error(result: subprocess.CompletedProcess[str], prog: str) -> str:
    """Exit 2, nothing on stdout, and on stderr two lines: the error, then a short usage.

    The error comes first, naming the (sub)command and where to read more, as
    ``python -m trio_sock server: error: ... (see python -m trio_sock server --help)``,
    so that it is what a user sees first; returns that line.
    """
    assert_no_traceback(result.stdout, result.stderr)
    assert result.returncode == 2, result
    assert result.stdout == ""
    error, usage = result.stderr.splitlines()
    assert error.startswith(f"{prog}: error: "), error
    assert error.endswith(f" (see {prog} --help)"), error
    assert usage.startswith(f"usage: {prog} "), usage
    return error


@pytest.mark.parametrize(
    ("args", "prog", "message"),
    [
        pytest.param(
            ("server", "--bogus"), "python -m trio_sock server",
            "unrecognized arguments: --bogus", id="server-unknown-option",
        ),
        pytest.param(
            ("client", "--bogus"), "python -m trio_sock client",
            "unrecognized arguments: --bogus", id="client-unknown-option",
        ),
        pytest.param(
            ("server", "--max-clients", "x"), "python -m trio_sock server",
            "argument --max-clients: expected a whole number, got 'x'", id="server-bad-value",
        ),
        pytest.param(
            ("--bogus",), "python -m trio_sock",
            "the following arguments are required: {server,client}", id="no-subcommand-bogus",
        ),
        pytest.param(
            (), "python -m trio_sock",
            "the following arguments are required: {server,client}", id="nothing-at-all",
        ),
    ],
)  # fmt: skip
def test_a_usage_error_comes_first_naming_the_subcommand_then_one_short_usage_line(
    short_tmp: Path, args: tuple[str, ...], prog: str, message: str
) -> None:
    result = run_cli(*args, cwd=short_tmp, timeout=FAIL_TIMEOUT)
    error = assert_usage_error(result, prog)
    assert error == f"{prog}: error: {message} (see {prog} --help)", error


@pytest.mark.parametrize(
    ("argv0", "prog"),
    [
        ("/usr/local/bin/trio-sock", "trio-sock"),
        ("/src/trio_sock/__main__.py", "python -m trio_sock"),  # python -m trio_sock
        ("/venv/bin/pytest", "pytest"),  # no program is special, a test runner neither
    ],
)
def test_usage_errors_name_the_program_as_it_was_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv0: str, prog: str
) -> None:
    from trio_sock.cli.options import parse

    monkeypatch.setattr(sys, "argv", [argv0, "server", "--bogus"])
    with pytest.raises(SystemExit) as exited:
        parse()
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(f"{prog} server: error: ")


def test_a_caller_may_name_the_program_for_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trio_sock.cli.options import parse

    with pytest.raises(SystemExit):
        parse(["client", "--bogus"], prog="my-tool")
    error, usage = capsys.readouterr().err.splitlines()
    assert error.startswith("my-tool client: error: unrecognized arguments: --bogus"), error
    assert usage.startswith("usage: my-tool client "), usage


@pytest.mark.parametrize(
    ("tcp", "message"),
    [
        pytest.param(
            "localhost:80:1",
            "too many colons in 'localhost:80:1'; write HOST:PORT, or [IPV6]:PORT",
            id="name-with-two-ports",
        ),
        pytest.param(
            "::1:80", "put an IPv6 address in brackets, as [::1]:80", id="ipv6-without-brackets"
        ),
        pytest.param(
            "fe80::1",
            "put an IPv6 address in brackets and add a port, as [fe80::1]:PORT",
            id="ipv6-without-port",
        ),
    ],
)
def test_a_tcp_address_with_too_many_colons_suggests_brackets_only_for_ipv6(
    short_tmp: Path, tcp: str, message: str
) -> None:
    result = run_cli("server", "--tcp", tcp, cwd=short_tmp, timeout=FAIL_TIMEOUT)
    error = assert_usage_error(result, "python -m trio_sock server")
    assert f"argument --tcp: {message}" in error, error
    if "localhost" in tcp:
        assert "[localhost" not in error, error


# --- TLS needs a TCP listener ------------------------------------------------------------------


def test_tls_with_only_unix_listeners_on_the_command_line_is_a_usage_error(
    short_tmp: Path,
) -> None:
    result = run_cli(
        "server", "--unix", str(short_tmp / "s"), "--tls-cert", "c.pem", "--tls-key", "k.pem",
        cwd=short_tmp, timeout=FAIL_TIMEOUT,
    )  # fmt: skip
    error = assert_usage_error(result, "python -m trio_sock server")
    assert "TLS is for TCP listeners only" in error, error
    assert "add --tcp" in error, error
    assert not (short_tmp / "s").exists()


def tls_files(directory: Path) -> list[str]:
    """``--tls-cert`` and ``--tls-key`` options for a fresh certificate for 127.0.0.1."""
    import trustme

    leaf = trustme.CA().issue_cert("127.0.0.1")
    cert, key = directory / "cert.pem", directory / "key.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return ["--tls-cert", str(cert), "--tls-key", str(key)]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_tls_with_inherited_listeners_none_of_them_tcp_is_one_warning_at_start(
    procs: Processes, sock_path: Path, workers: str
) -> None:
    with socket.socket(socket.AF_UNIX) as passed:
        passed.bind(str(sock_path))
        passed.listen()
        fd = passed.fileno()
        server = procs.server(
            "--fd", str(fd), "--workers", workers, *tls_files(sock_path.parent), pass_fds=(fd,)
        )
        assert exchange(server.unix(), b"A") == b"B"  # served, in plain text
        warnings = [line for line in server.stderr().splitlines() if "TLS" in line]
        assert len(warnings) == 1, server.stderr()  # the parent's alone, with workers
        assert "WARNING" in warnings[0], warnings
        assert "TLS is for TCP listeners only, and none of these is TCP" in warnings[0]
        assert server.stop(timeout=EVENT_TIMEOUT) == 0


def test_tls_with_a_tcp_listener_among_inherited_ones_gives_no_warning(
    procs: Processes, sock_path: Path
) -> None:
    with socket.socket() as passed:
        passed.bind(("127.0.0.1", 0))
        passed.listen()
        fd = passed.fileno()
        server = procs.server("--fd", str(fd), *tls_files(sock_path.parent), pass_fds=(fd,))
        assert "TLS" not in server.stderr(), server.stderr()
        assert server.stop(timeout=EVENT_TIMEOUT) == 0


# --- errors a user can cause -------------------------------------------------------------------


def run_failing_server(
    *args: str, cwd: Path, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a server that must refuse to start; a server that starts fails by timing out."""
    return run_cli("server", *args, cwd=cwd, timeout=FAIL_TIMEOUT, preexec_fn=preexec_fn)


def test_a_tcp_port_in_use_is_one_clear_line_and_leaves_no_socket_file(
    sock_path: Path, short_tmp: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_failing_server(
            "--unix", str(sock_path), "--tcp", f"127.0.0.1:{port}", cwd=short_tmp
        )
    assert_user_error(result, f"127.0.0.1:{port}", "in use")
    assert not sock_path.exists(), "the socket file opened before the failure must be removed"


def test_a_socket_path_in_a_missing_directory_is_one_clear_line(short_tmp: Path) -> None:
    path = short_tmp / "missing" / "s"
    result = run_failing_server("--unix", str(path), "--tcp", "127.0.0.1:0", cwd=short_tmp)
    assert_user_error(result, str(path), "does not exist")


def test_a_socket_path_longer_than_the_kernel_allows_is_one_clear_line(short_tmp: Path) -> None:
    path = str(short_tmp / "x") + "x" * (SUN_PATH_MAX + 1 - len(str(short_tmp / "x")))
    assert len(os.fsencode(path)) == SUN_PATH_MAX + 1
    result = run_failing_server("--unix", path, "--tcp", "127.0.0.1:0", cwd=short_tmp)
    assert_user_error(result, path, str(SUN_PATH_MAX))
    assert not os.path.exists(path)


def test_a_socket_path_of_exactly_the_kernels_limit_is_served(
    procs: Processes, short_tmp: Path
) -> None:
    path = str(short_tmp / "x") + "x" * (SUN_PATH_MAX - len(str(short_tmp / "x")))
    assert len(os.fsencode(path)) == SUN_PATH_MAX
    server = procs.server("--unix", path, "--tcp", "127.0.0.1:0")
    assert exchange(server.unix(), b"A") == b"B"


def test_a_path_that_is_a_regular_file_is_left_alone(short_tmp: Path) -> None:
    path = short_tmp / "precious"
    path.write_text("keep me\n")
    result = run_failing_server("--unix", str(path), "--tcp", "127.0.0.1:0", cwd=short_tmp)
    assert_user_error(result, str(path), "not a socket")
    assert path.read_text() == "keep me\n"


def test_a_live_servers_socket_is_never_taken_over(
    procs: Processes, server: ServerProcess, sock_path: Path, short_tmp: Path
) -> None:
    before = os.stat(sock_path)
    result = run_failing_server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", cwd=short_tmp)
    assert_user_error(result, str(sock_path), "already")
    after = os.stat(sock_path)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    result = run_client("--unix", str(sock_path), cwd=short_tmp)
    assert (result.returncode, result.stdout) == (0, SUCCESS), result
    assert server.process.poll() is None


def test_a_directory_without_write_permission_is_one_clear_line(short_tmp: Path) -> None:
    # As root, the server runs as nobody: root would ignore the permissions.
    short_tmp.chmod(0o755)
    directory = short_tmp / "readonly"
    directory.mkdir(mode=0o555)
    path = directory / "s"
    result = run_failing_server(
        "--unix", str(path), "--tcp", "127.0.0.1:0", cwd=short_tmp, preexec_fn=unprivileged()
    )
    assert_user_error(result, str(path), "permission denied")
    assert list(directory.iterdir()) == []


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as setting:
            return int(setting.read())
    except (OSError, ValueError):
        return 1024


@pytest.mark.skipif(
    _unprivileged_port_start() <= 1, reason="this kernel lets anyone bind low ports"
)
def test_a_privileged_port_is_one_clear_line(short_tmp: Path) -> None:
    short_tmp.chmod(0o755)
    result = run_failing_server(
        "--unix",
        str(short_tmp / "s"),
        "--tcp",
        "127.0.0.1:1",
        cwd=short_tmp,
        preexec_fn=unprivileged(),
    )
    assert_user_error(result, "127.0.0.1:1", "permission denied")


def test_a_stale_socket_file_is_replaced_with_a_warning(
    procs: Processes, sock_path: Path, short_tmp: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(sock_path))  # closed without unlinking: what a crashed server leaves
    assert sock_path.is_socket()
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0")
    warnings = [line for line in server.stderr().splitlines() if "stale" in line]
    assert len(warnings) == 1, server.stderr()
    assert "WARNING" in warnings[0], warnings
    assert str(sock_path) in warnings[0], warnings
    result = run_client("--unix", str(sock_path), cwd=short_tmp)
    assert (result.returncode, result.stdout) == (0, SUCCESS), result


@pytest.mark.parametrize(
    ("args", "mode"), [((), 0o600), (("--socket-mode", "660"), 0o660)], ids=["default", "660"]
)
def test_the_socket_file_has_the_mode_asked_for(
    procs: Processes, sock_path: Path, args: tuple[str, ...], mode: int
) -> None:
    procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", *args)
    status = os.stat(sock_path)
    assert stat.S_ISSOCK(status.st_mode)
    assert oct(stat.S_IMODE(status.st_mode)) == oct(mode)


def test_a_socket_file_replaced_while_serving_is_left_alone_at_exit(
    server: ServerProcess, sock_path: Path
) -> None:
    sock_path.unlink()
    sock_path.write_text("not the server's\n")
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert sock_path.read_text() == "not the server's\n"
    assert_no_traceback(server.stderr())


# --- shutdown ----------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_server_with_exit_0_and_removes_its_socket_file(
    server: ServerProcess, sock_path: Path, signum: int
) -> None:
    assert exchange(server.unix(), b"A") == b"B"
    assert server.stop(signum, timeout=EVENT_TIMEOUT) == 0
    assert_no_traceback(server.stderr())
    assert not sock_path.exists()


def test_shutdown_stops_accepting_at_once_and_cancels_idle_clients_after_the_grace(
    procs: Processes, sock_path: Path
) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--grace", "0.5")
    with connect_idle(server) as idle:
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        # Logged once the listeners are closed, while the idle client still holds on.
        wait_for_log(server, "stopped accepting")
        assert not sock_path.exists()
        with pytest.raises(FileNotFoundError):
            connect(server.unix()).close()
        with pytest.raises(ConnectionRefusedError):
            connect(server.tcp()).close()
        assert server.wait(timeout=EVENT_TIMEOUT) == 0
        elapsed = time.monotonic() - signalled
        assert receive_until_eof(idle) == b""
    assert 0.45 <= elapsed < 5, elapsed
    assert_no_traceback(server.stderr())


def test_an_active_client_may_finish_during_the_grace(procs: Processes, sock_path: Path) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--grace", "20")
    with connect(server.unix()) as active:
        active.sendall(b"A")
        assert active.recv(1) == b"B"  # accepted and being served
        server.send_signal(signal.SIGTERM)
        wait_for_log(server, "stopped accepting")
        active.sendall(b"A")
        active.shutdown(socket.SHUT_WR)
        assert receive_until_eof(active) == b"B"
    # With its last client gone, the server need not wait out the 20 s grace.
    assert server.wait(timeout=EVENT_TIMEOUT) == 0
    assert_no_traceback(server.stderr())


def test_a_second_signal_cancels_the_clients_at_once(procs: Processes, sock_path: Path) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--grace", "30")
    with connect_idle(server) as idle:
        server.send_signal(signal.SIGTERM)
        wait_for_log(server, "stopping")
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=EVENT_TIMEOUT) == 0
        elapsed = time.monotonic() - signalled
        assert receive_until_eof(idle) == b""
    assert elapsed < 5, elapsed
    assert_no_traceback(server.stderr())


# --- serving --------------------------------------------------------------------------------


def test_replies_keep_the_order_and_length_of_every_byte(server: ServerProcess) -> None:
    data = bytes(range(256)) * 256  # 64 KiB: fits the socket buffers, so no reader thread
    for address in (server.unix(), server.tcp()):
        assert exchange(address, data) == bytes((byte + 1) % 256 for byte in data), address


def test_a_client_that_resets_disturbs_neither_the_others_nor_the_listeners(
    server: ServerProcess, short_tmp: Path
) -> None:
    with connect(server.tcp()) as other:
        other.sendall(b"A")
        assert other.recv(1) == b"B"
        with connect(server.tcp()) as rude:
            rude.sendall(b"A" * 1000)
            # Linger 0: close() sends a reset instead of a FIN.
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        other.sendall(b"Y")
        assert other.recv(1) == b"Z"
    result = run_client(*where(server.tcp()), cwd=short_tmp)
    assert (result.returncode, result.stdout) == (0, SUCCESS), result
    assert server.process.poll() is None


@pytest.mark.parametrize("once", [False, True], ids=["stream", "once"])
def test_a_delay_longer_than_the_idle_timeout_is_work_not_idleness(
    procs: Processes, sock_path: Path, once: bool
) -> None:
    server = procs.server(
        "--unix",
        str(sock_path),
        "--tcp",
        "127.0.0.1:0",
        "--delay",
        "0.5",
        "--idle-timeout",
        "0.25",
        *(["--once"] if once else []),
    )
    with connect(server.unix()) as sock:
        sent = time.monotonic()
        sock.sendall(b"A")
        assert sock.recv(1) == b"B"
        elapsed = time.monotonic() - sent
    assert 0.45 <= elapsed < 5, elapsed


# --- serving options ---------------------------------------------------------------------------


def test_once_mode_replies_to_one_byte_then_closes(procs: Processes, sock_path: Path) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--once")
    for address in (server.unix(), server.tcp()):
        with connect(address) as sock:
            sock.sendall(b"AB")
            assert receive_until_eof(sock) == b"B", address


def test_max_clients_1_queues_the_second_client_until_the_first_leaves(
    procs: Processes, sock_path: Path
) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--max-clients", "1")
    with connect(server.unix()) as first:
        first.sendall(b"A")
        assert first.recv(1) == b"B"
        with connect(server.unix()) as second:  # queued, not refused
            second.sendall(b"A")
            second.settimeout(NO_REPLY_WITHIN)
            with pytest.raises(TimeoutError):
                second.recv(1)
            first.close()
            second.settimeout(IO_TIMEOUT)
            assert second.recv(1) == b"B"


def test_an_idle_client_is_disconnected_after_the_idle_timeout(
    procs: Processes, sock_path: Path
) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--idle-timeout", "0.5")
    with connect(server.unix()) as idle:
        connected = time.monotonic()
        assert receive_until_eof(idle) == b""
        elapsed = time.monotonic() - connected
    assert 0.45 <= elapsed < 5, elapsed
    log = wait_for_log(server, "reason=idle timeout")
    assert len([line for line in log.splitlines() if " left " in line]) == 1, log


# --- logs --------------------------------------------------------------------------------------


def test_each_client_leaves_one_log_record_with_its_byte_counts(
    server: ServerProcess, short_tmp: Path
) -> None:
    assert exchange(server.unix(), b"hello") == b"ifmmp"
    result = run_client("--tcp", str(server.tcp()).removeprefix("tcp:"), cwd=short_tmp)
    assert result.returncode == 0, result
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    left = [line for line in server.stderr().splitlines() if " left " in line]
    assert len(left) == 2, server.stderr()
    unix, tcp = sorted(left, key=lambda line: " left tcp:" in line)
    assert f" left {server.unix()} " in unix, left
    assert "in=5 out=5" in unix, left
    assert f" left {server.tcp()} " in tcp, left
    assert "in=1 out=1" in tcp, left


def test_json_logs_are_one_json_object_per_line(
    procs: Processes, sock_path: Path, short_tmp: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(sock_path))  # a stale file, for a warning before the ready line
    server = procs.server("--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--log-format", "json")
    for address in (server.unix(), server.tcp()):
        assert run_client(*where(address), cwd=short_tmp).stdout == SUCCESS
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    lines = server.stderr().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) for record in records), lines
    levels = [record.get("level") for record in records]
    assert "WARNING" in levels, lines
    assert "INFO" in levels, lines
    left = [record for record in records if " left " in str(record.get("message"))]
    assert [(r.get("bytes_in"), r.get("bytes_out")) for r in left] == [(1, 1), (1, 1)], left


def test_json_logs_report_a_failed_start_as_json_too(short_tmp: Path) -> None:
    path = short_tmp / "precious"
    path.write_text("keep me\n")
    result = run_failing_server(
        "--unix", str(path), "--tcp", "127.0.0.1:0", "--log-format", "json", cwd=short_tmp
    )
    record = json.loads(assert_user_error(result, "not a socket"))
    assert isinstance(record, dict), record
    assert record.get("level") == "ERROR", record
    assert_utc_now(record["time"])


def assert_utc_now(text: str) -> None:
    """``text`` is an ISO 8601 time in UTC, with its offset, within a minute of now."""
    when = datetime.datetime.fromisoformat(text)
    assert when.utcoffset() == datetime.timedelta(0), text
    assert text.endswith("+00:00"), text
    now = datetime.datetime.now(datetime.UTC)
    assert abs(now - when) < datetime.timedelta(minutes=1), (text, now)


def test_json_logs_give_the_time_in_iso_8601_utc_with_its_offset(
    procs: Processes, sock_path: Path
) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "0", "--log-format", "json")
    assert exchange(server.unix(), b"A") == b"B"
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    records = [json.loads(line) for line in server.stderr().splitlines()]
    assert len(records) > 3, records
    for record in records:
        assert_utc_now(record["time"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["time"])


# --- systemd's STATUS= line --------------------------------------------------------------------

#: A changed figure is sent at the end of the one-second interval it falls in: at
#: most a second late; the rest is room for a loaded machine.
STATUS_WITHIN: Final = 2.5


@contextlib.contextmanager
def notify_socket(directory: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's ``NOTIFY_SOCKET``, bound in ``directory``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(directory / "notify"))
        yield sock


def next_status(notify: socket.socket, wanted: str, within: float) -> list[str]:
    """Read datagrams until a ``STATUS=`` of exactly ``wanted`` comes; fails after ``within`` s.

    Returns every ``STATUS=`` value read, the wanted one last.
    """
    statuses: list[str] = []
    deadline = time.monotonic() + within
    while not statuses or statuses[-1] != wanted:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no STATUS={wanted} within {within}s; got {statuses}")
        notify.settimeout(remaining)
        with contextlib.suppress(TimeoutError):
            lines = notify.recv(4096).decode().splitlines()
            statuses += [line.removeprefix("STATUS=") for line in lines if "STATUS=" in line]
    return statuses


def test_the_status_shows_clients_that_came_and_went_between_two_samples(
    procs: Processes, sock_path: Path
) -> None:
    with notify_socket(sock_path.parent) as notify:
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path.parent / "notify")}
        server = procs.server("--unix", str(sock_path), "--tcp", "0", env=env)
        next_status(notify, "0 active clients, 0 accepted", EVENT_TIMEOUT)  # with READY=1
        for _ in range(3):  # quicker than a second: the active count is 0 at every sample
            assert exchange(server.unix(), b"A") == b"B"
        next_status(notify, "0 active clients, 3 accepted", STATUS_WITHIN)
        assert server.stop(timeout=EVENT_TIMEOUT) == 0


def test_the_status_counts_one_client_in_the_singular(procs: Processes, sock_path: Path) -> None:
    with notify_socket(sock_path.parent) as notify:
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path.parent / "notify")}
        server = procs.server("--unix", str(sock_path), "--tcp", "0", env=env)
        next_status(notify, "0 active clients, 0 accepted", EVENT_TIMEOUT)
        with connect(server.unix()) as client:
            client.sendall(b"A")
            assert client.recv(1) == b"B"
            next_status(notify, "1 active client, 1 accepted", STATUS_WITHIN)
        assert server.stop(timeout=EVENT_TIMEOUT) == 0


def test_log_level_warning_hides_the_per_client_records(
    procs: Processes, sock_path: Path, short_tmp: Path
) -> None:
    server = procs.server(
        "--unix", str(sock_path), "--tcp", "127.0.0.1:0", "--log-level", "warning"
    )
    assert run_client("--unix", str(sock_path), cwd=short_tmp).stdout == SUCCESS
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert " left " not in server.stderr()
    # Only the stats line that closes the run still shows at warning.
    info = [line for line in server.stderr().splitlines() if "INFO" in line]
    assert len(info) == 1, info
    assert "trio_sock.stats: stats accepted=1" in info[0]


# --- help and entry points ---------------------------------------------------------------------


def help_entries(text: str) -> dict[str, str]:
    """Each ``--option`` of an argparse help text, with its description on one line."""
    entries: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if match := re.match(r"  (--[\w-]+)", line):
            current = match[1]
            entries[current] = ""
        elif not line.startswith("  "):
            current = None
        if current is not None:
            entries[current] = " ".join([entries[current], *line.split()]).strip()
    return entries


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param(
            "server",
            {
                "--unix": "server_socket",
                "--tcp": "",
                "--once": "",
                "--max-clients": "",
                "--delay": "(default: 0",
                "--idle-timeout": "",
                "--grace": "(default: 5",
                "--backlog": "",
                "--socket-mode": "(default: 600)",
                "--socket-group": "(default: the server's group)",
                "--fd": "LISTEN_FDS",
                "--workers": "(default: 1)",
                "--reuse-port": "(default: off",
                "--tls-cert": "(default: plain TCP)",
                "--tls-key": "(default: none)",
                "--tls-handshake-timeout": "(default: 10",
                "--allow-uid": "only the server's own user",
                "--allow-gid": "(default: see --allow-uid)",
                "--handler": "(default: the increment protocol)",
                "--log-level": "(default: info)",
                "--log-format": "(default: text)",
                "--proxy-protocol": "(default: off)",
                "--metrics": "(default: off)",
                "--trace": "(default: off)",
            },
            id="server",
        ),
        pytest.param(
            "client",
            {
                "--unix": "server_socket",
                "--tcp": "127.0.0.1",
                "--char": "(default: A)",
                "--timeout": "",
                "--wait": "(default: 0",
                "--tls": "(default: plain)",
                "--tls-ca": "(default: the system's)",
                "--trace": "(default: off)",
            },
            id="client",
        ),
    ],
)
def test_help_shows_every_option_with_its_default(
    short_tmp: Path, command: str, expected: dict[str, str]
) -> None:
    result = run_cli(command, "--help", cwd=short_tmp, timeout=FAIL_TIMEOUT)
    assert result.returncode == 0, result
    assert_no_traceback(result.stdout, result.stderr)
    entries = help_entries(result.stdout)
    assert sorted(entries) == sorted(expected), entries
    for option, default in expected.items():
        assert "default" in entries[option], (option, entries[option])
        assert default in entries[option], (option, entries[option])
    if command == "server":
        assert "9734" in result.stdout


def test_the_trio_sock_script_runs_the_same_command_line(short_tmp: Path) -> None:
    # pip puts the script beside the interpreter it installed for.
    beside = Path(sys.executable).parent / "trio-sock"
    script = str(beside) if beside.exists() else shutil.which("trio-sock")
    if script is None:
        pytest.skip("the trio-sock console script is not installed: pip install . adds it")
    result = subprocess.run(
        [script, "--help"],
        cwd=short_tmp,
        capture_output=True,
        text=True,
        timeout=FAIL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result
    assert result.stdout.startswith("usage:"), result.stdout
    assert "{server,client}" in result.stdout, result.stdout


# --- running out of descriptors ----------------------------------------------------------------


def _low_descriptor_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_NOFILE, hard))


def test_the_server_survives_running_out_of_descriptors_without_a_log_flood(
    procs: Processes, sock_path: Path, short_tmp: Path
) -> None:
    server = procs.server(
        "--unix", str(sock_path), "--tcp", "127.0.0.1:0", preexec_fn=_low_descriptor_limit
    )
    with contextlib.ExitStack() as stack:
        for _ in range(FLOOD_CONNECTIONS):
            stack.enter_context(connect(server.unix()))
        # Out of descriptors until these close: let enough accepts fail that
        # logging each one would be a flood.
        log = wait_for_log(
            server, "accept on", until=lambda log: sum(accept_failures(log)) >= ACCEPT_FAILURES
        )
    assert len(accept_failures(log)) < ACCEPT_FAILURES, log
    assert "Too many open files" in log, log
    result = run_client("--unix", str(sock_path), cwd=short_tmp)
    assert (result.returncode, result.stdout) == (0, SUCCESS), result
    assert server.process.poll() is None
    assert len(accept_failures(server.stderr())) < ACCEPT_FAILURES, server.stderr()
    assert_no_traceback(server.stderr())


def test_sigusr1_logs_one_stats_line_and_shutdown_logs_the_final_one(
    procs: Processes, sock_path: Path
) -> None:
    server = procs.server("--unix", str(sock_path), "--tcp", "0", "--log-format", "json")
    assert exchange(server.unix(), b"hello") == b"ifmmp"
    assert exchange(server.tcp(), b"AB") == b"BC"
    server.send_signal(signal.SIGUSR1)
    wait_for_log(server, '"logger": "trio_sock.stats"')
    assert server.process.poll() is None
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    stats = [
        record
        for record in map(json.loads, server.stderr().splitlines())
        if record["logger"] == "trio_sock.stats"
    ]
    assert len(stats) == 2
    for record in stats:
        assert record["accepted"] == 2
        assert (record["bytes_in"], record["bytes_out"]) == (7, 7)
        assert (record["refused"], record["accept_errors"]) == (0, 0)
        assert record["message"].startswith("stats accepted=2 active=0")


def test_allow_uid_and_socket_group_take_names_and_numbers(
    procs: Processes, sock_path: Path, short_tmp: Path
) -> None:
    import grp
    import pwd

    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    server = procs.server(
        "--unix", str(sock_path), "--tcp", "0", "--allow-uid", user, "--allow-uid", "4242",
        "--allow-gid", group, "--socket-group", group, "--socket-mode", "660",
    )  # fmt: skip
    assert sock_path.stat().st_gid == os.getegid()
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660
    result = run_client("--unix", str(sock_path), cwd=short_tmp)
    assert (result.returncode, result.stdout) == (0, SUCCESS), result
    assert server.stop(timeout=EVENT_TIMEOUT) == 0


@pytest.mark.parametrize("option", ["--allow-uid", "--allow-gid", "--socket-group"])
def test_an_unknown_user_or_group_is_a_usage_error(option: str, short_tmp: Path) -> None:
    result = run_cli("server", option, "no-such-name-here", cwd=short_tmp, timeout=FAIL_TIMEOUT)
    assert result.returncode == 2, result
    assert f"argument {option}: no such" in result.stderr
    assert_no_traceback(result.stderr)


def test_a_lock_file_beside_the_socket_lives_as_long_as_the_server(
    server: ServerProcess, sock_path: Path
) -> None:
    lock = lock_of(sock_path)
    assert lock.read_text() == f"{server.process.pid}\n"
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert not lock.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_starting_ends_the_server_quietly_before_it_binds(
    short_tmp: Path, signum: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # What ``python -m trio_sock`` does first; run in-process so that the
    # signal surely lands while the program is starting.
    from trio_sock.cli import main as cli
    from trio_sock.service import early_signals as _early_signals

    package_log = logging.getLogger("trio_sock")
    saved = (package_log.handlers[:], package_log.level, package_log.propagate)
    _early_signals.hold()
    try:
        os.kill(os.getpid(), signum)
        code = cli.main(["server", "--unix", str(short_tmp / "s"), "--tcp", "0"])
    finally:
        _early_signals.release()
        # main() set up logging for a process; give the other tests theirs back.
        package_log.handlers[:], package_log.level, package_log.propagate = saved
    assert code == 0
    assert list(short_tmp.iterdir()) == []
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_no_traceback(captured.err)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # SIGUSR1 asks a running server for stats; while starting it must not kill it.
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
