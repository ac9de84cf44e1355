"""``--trace``: the socket calls the chapter names, one line each on stderr, as made.

Real ``python -m trio_sock`` processes.  Where strace can run, the descriptor
numbers the trace shows are checked against the system calls strace saw.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from typing import TYPE_CHECKING, Final

import pytest

from tests.helpers import (
    cli,
    connect,
    exchange,
    ready,
    run_cli,
    strace_missing,
    wait_for_log,
)
from tests.listen.test_socket_files import children_of
from trio_sock.trace import address_text, quoted

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers import Processes

LINE: Final = re.compile(r"^(?P<call>\w+)\((?P<args>.*)\) = (?P<result>.*)$")


def calls(stderr: str) -> list[tuple[str, str, str]]:
    """The traced calls in ``stderr``: (name, arguments, result), in order."""
    found = []
    for line in stderr.splitlines():
        if match := LINE.match(line):
            found.append((match["call"], match["args"], match["result"]))
    return found


def test_quoted_shows_bytes_as_strace_does() -> None:
    assert quoted(b"A") == '"A"'
    assert quoted(b'say "hi"\n') == '"say \\"hi\\"\\n"'
    assert quoted(b"\x00\x7f\xff\\") == '"\\0\\177\\377\\\\"'


def test_address_text_names_paths_and_ports() -> None:
    import socket

    assert address_text(socket.AF_UNIX, "server_socket") == '"server_socket"'
    assert address_text(socket.AF_UNIX, "\0hidden") == '@"hidden"'
    assert address_text(socket.AF_INET, ("127.0.0.1", 9734)) == '{AF_INET, "127.0.0.1", port 9734}'


def test_a_client_with_no_server_shows_connect_failing_with_enoent(short_tmp: Path) -> None:
    result = run_cli("client", "--trace", "--unix", "server_socket", cwd=short_tmp)
    assert result.returncode == 1
    assert result.stdout == ""
    traced = calls(result.stderr)
    assert [name for name, _, _ in traced] == ["socket", "connect", "close"]
    (_, args, result_fd), (_, connect_args, outcome), (_, close_args, closed) = traced
    assert args == "AF_UNIX, SOCK_STREAM"
    fd = result_fd.removeprefix("fd ")
    assert fd.isdigit()
    assert connect_args == f'fd {fd}, "server_socket"'
    assert outcome == "-1 ENOENT (No such file or directory)"
    assert (close_args, closed) == (f"fd {fd}", "0")
    # The chapter's failure, then the usual one-line error, last.
    assert result.stderr.splitlines()[-1].startswith("oops: client: unix:server_socket: ")


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_client_shows_socket_connect_write_read_close_and_the_same_answer(
    procs: Processes, transport: str
) -> None:
    server = procs.server("--unix", "sock", "--tcp", "0")
    where = (
        ["--unix", str(server.unix().path)]
        if transport == "unix"
        else ["--tcp", f"{server.tcp().host}:{server.tcp().port}"]
    )
    result = run_cli("client", "--trace", "--char", '"', *where, cwd=procs.cwd)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "char from server = #\n"  # stdout is unchanged by --trace
    traced = calls(result.stderr)
    fd = traced[0][2].removeprefix("fd ")
    # A would-block (EAGAIN, EINPROGRESS) may come before the call that succeeds; the
    # rest is the chapter's sequence, every call on the same descriptor.
    done = [(name, args, res) for name, args, res in traced if not res.startswith("-1 E")]
    # A TCP connect in progress is decided by getsockopt(SO_ERROR): its outcome.
    names = [name.replace("getsockopt", "connect") for name, _, _ in done]
    assert names == ["socket", "connect", "write", "read", "close"]
    assert traced[0][1] == ("AF_UNIX" if transport == "unix" else "AF_INET") + ", SOCK_STREAM"
    assert all(args.startswith(f"fd {fd}") for _, args, _ in done[1:])
    assert (done[-3][1], done[-3][2]) == (f'fd {fd}, "\\""', "1")  # write(fd, "\"") = 1
    assert (done[-2][1], done[-2][2]) == (f"fd {fd}, 1", '"#"')  # read(fd, 1) = "#"
    for name, _, res in traced:
        if res.startswith("-1 "):
            assert (name, res.split()[1]) in {("read", "EAGAIN"), ("connect", "EINPROGRESS")}


@pytest.mark.skipif(strace_missing() is not None, reason=strace_missing() or "")
def test_the_descriptors_shown_are_the_ones_the_kernel_gave(short_tmp: Path) -> None:
    log = short_tmp / "strace.log"
    strace = shutil.which("strace")
    assert strace is not None
    done = subprocess.run(
        [
            *(strace, "-f", "-q", "-o", str(log), "-e", "trace=socket,connect,close"),
            *cli("client", "--trace", "--unix", "server_socket"),
        ],
        cwd=short_tmp,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    [(_, _, fd_text)] = [c for c in calls(done.stderr) if c[0] == "socket"]
    fd = int(fd_text.removeprefix("fd "))
    seen = log.read_text()
    assert re.search(rf"socket\(AF_UNIX, SOCK_STREAM\|SOCK_CLOEXEC, 0\) = {fd}\b", seen), seen
    assert re.search(rf'connect\({fd}, \{{sa_family=AF_UNIX, sun_path="server_socket"\}}', seen)
    assert re.search(rf"close\({fd}\) += 0", seen)


def client_calls(server_stderr: str) -> list[tuple[str, str, str]]:
    """The traced calls of the server's first client, from its accept to its close."""
    traced = calls(server_stderr)
    [accepted] = [c for c in traced if c[0] == "accept" and c[2].startswith("fd ")][:1]
    fd = accepted[2].removeprefix("fd ")
    mine = [c for c in traced if c[1].split(",")[0] == f"fd {fd}"]
    return [accepted, *mine]


@pytest.mark.parametrize(("once", "size"), [(False, "65536"), (True, "1")])
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_server_shows_accept_giving_a_new_descriptor_then_read_write_close(
    procs: Processes, transport: str, once: bool, size: str
) -> None:
    path = str(procs.cwd / "sock")
    server = procs.server("--trace", "--unix", path, "--tcp", "0", *(["--once"] * once))
    address = server.unix() if transport == "unix" else server.tcp()
    assert exchange(address, b"A") == b"B"
    assert server.stop() == 0
    (_, listening, accepted), *rest = client_calls(server.stderr())
    # accept(fd L) = fd C: the named socket stays; the client has a socket of its own.
    assert re.fullmatch(r"fd \d+", listening)
    assert re.fullmatch(r"fd \d+", accepted)
    assert listening != accepted
    done = [(name, args, res) for name, args, res in rest if not res.startswith("-1 EAGAIN")]
    fd = accepted
    assert done[0] == ("read", f"{fd}, {size}", '"A"')
    assert done[1] == ("write", f'{fd}, "B"', "1")
    assert done[-1] == ("close", fd, "0")
    # Bytes read after the reply are the client's EOF, or (--once) what the linger drains.
    assert all(name in {"read", "shutdown"} for name, _, _ in done[2:-1]), done


@pytest.mark.skipif(strace_missing() is not None, reason=strace_missing() or "")
def test_the_server_shows_the_descriptor_accept_really_returned(procs: Processes) -> None:
    log = procs.cwd / "strace.log"
    strace = shutil.which("strace")
    assert strace is not None
    child = procs.spawn(
        [
            *(strace, "-f", "-q", "-o", str(log), "-e", "trace=accept4,close"),
            *cli("server", "--trace", "--unix", str(procs.cwd / "sock")),
        ]
    )
    server = ready(child)
    assert exchange(server.unix(), b"A") == b"B"
    # strace would not pass SIGTERM on: signal the server it runs, and strace ends with it.
    [traced_pid] = children_of(child.process.pid)[:1]
    os.kill(traced_pid, signal.SIGTERM)
    assert server.wait() == 0
    [(_, listening, accepted), *_] = client_calls(server.stderr())
    seen = log.read_text()
    listening_fd, accepted_fd = listening.removeprefix("fd "), accepted.removeprefix("fd ")
    assert re.search(rf"accept4\({listening_fd}, .*\) = {accepted_fd}\b", seen), seen
    assert re.search(rf"close\({accepted_fd}\) += 0", seen)


def test_a_server_shows_socket_bind_listen_and_the_name_given_then_accepts_there(
    procs: Processes,
) -> None:
    path = str(procs.cwd / "server_socket")
    server = procs.server("--trace", "--unix", path, "--tcp", "0", "--backlog", "5")
    assert exchange(server.unix(), b"A") == b"B"
    assert server.stop() == 0
    traced = calls(server.stderr())
    unix_fd = traced[0][2]
    assert traced[0] == ("socket", "AF_UNIX, SOCK_STREAM", unix_fd)
    # Bound under a private name first (no one can swap the path meanwhile), then named.
    assert traced[1][0] == "bind"
    assert traced[1][1].startswith(f'{unix_fd}, "/proc/self/fd/')
    assert traced[2] == ("listen", f"{unix_fd}, 5", "0")
    assert traced[3][0] == "link"
    assert traced[3][1].endswith(f', "{path}"')
    tcp_fd = traced[4][2]
    assert traced[4:7] == [
        ("socket", "AF_INET, SOCK_STREAM", tcp_fd),
        ("bind", f'{tcp_fd}, {{AF_INET, "127.0.0.1", port 0}}', "0"),
        ("listen", f"{tcp_fd}, 5", "0"),
    ]
    (_, listening, _), *_ = client_calls(server.stderr())
    assert listening == unix_fd  # the client came through the named socket
    assert traced[-1][0] == "close"  # the listeners are closed last
    assert ("close", unix_fd, "0") in traced


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_with_every_slot_taken_the_server_says_how_many_wait_in_the_queue(
    procs: Processes, transport: str
) -> None:
    path = str(procs.cwd / "sock")
    server = procs.server("--trace", "--unix", path, "--tcp", "0", "--max-clients", "1")
    address = server.unix() if transport == "unix" else server.tcp()
    with contextlib.ExitStack() as held:
        first = held.enter_context(connect(address))  # takes the one slot
        wait_for_log(server, "accept(fd ")
        for _ in range(2):  # these two wait in the kernel's queue
            held.enter_context(connect(address))
        stderr = wait_for_log(server, "2 connections waiting")
        [(_, listening, _)] = [c for c in calls(stderr) if c[0] == "accept"][:1]
        assert (
            f"# 2 connections waiting in the listen queue of {listening}"
            " (--max-clients 1: every slot taken)" in stderr
        )
        first.sendall(b"A")
        assert first.recv(1) == b"B"
    assert server.stop() == 0
