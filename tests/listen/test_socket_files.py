"""Socket files against hostile neighbours, through real ``python -m trio_sock server`` processes.

Issue 10: a symlink swapped in while the server binds, metadata changes to the
live socket file, paths that are not UTF-8, and a live neighbour that a
``connect()`` probe would hurt (the book's server1.c).  Every subprocess is
killed at the end of its test, pass or fail (the ``procs`` fixture).  Nothing
sleeps to synchronise: tests wait for ready lines, exits and log lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Final

import pytest

from tests.helpers import (
    EVENT_TIMEOUT,
    FAIL_TIMEOUT,
    READY_PREFIX,
    START_TIMEOUT,
    Processes,
    ServerProcess,
    assert_no_traceback,
    assert_user_error,
    cli,
    exchange,
    lock_of,
    read_line,
    run_cli,
    strace_missing,
)
from trio_sock.config.addresses import UnixAddress

# --- a symlink swapped in while the server binds --------------------------------------------------

#: How long strace holds each bind() (and mkdir) before returning to the server: an
#: attacker's window, widened from microseconds so that the race is lost every time.
RACE_DELAY_US: Final = 200_000
#: A group the victim file is not in, for ``--socket-group``: root may give a file
#: to any gid, named in /etc/group or not.
RACE_GROUP: Final = 4242
#: The attacker's own entries in the socket directory, which it never attacks.
ATTACKER_PREFIX: Final = ".atk-"


def strace_works() -> str | None:
    """Why the race test cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root: the attack is on a root server's chmod and chown"
    return strace_missing()


def children_of(pid: int) -> list[int]:
    """The processes ``pid`` started (from /proc), each followed by its own, depth first."""
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                found += [int(child), *children_of(int(child))]
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and everything it started: a killed strace would let its tracee run on."""
    for each in [*children_of(pid), pid]:
        with contextlib.suppress(OSError):
            os.kill(each, signal.SIGKILL)


class Attacker:
    """Someone who may write to the socket's directory: each new entry there is
    replaced by a symlink to ``target`` (a directory by a symlink to ``lure``, a
    directory whose ``s`` is a symlink to ``target``), as fast as it can look."""

    def __init__(self, directory: Path, target: Path, lure: Path, spared: set[str]) -> None:
        self.directory = directory
        self.target = target
        self.lure = lure
        self.spared = spared
        self.swapped: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Attacker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=EVENT_TIMEOUT)

    def _run(self) -> None:
        seen: set[str] = set()
        deadline = time.monotonic() + START_TIMEOUT
        count = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            with os.scandir(self.directory) as entries:
                names = [e.name for e in entries]
            for name in names:
                if name in seen or name in self.spared or name.startswith(ATTACKER_PREFIX):
                    continue
                seen.add(name)
                count += 1
                link = self.directory / f"{ATTACKER_PREFIX}{count}"
                victim = self.directory / name
                try:
                    if victim.is_dir() and not victim.is_symlink():
                        link.symlink_to(self.lure)
                        victim.rename(self.directory / f"{ATTACKER_PREFIX}moved-{count}")
                    else:
                        link.symlink_to(self.target)
                    link.rename(victim)
                except OSError:
                    continue  # it went before we got to it
                self.swapped.append(name)


@pytest.mark.parametrize(
    "delayed",
    [
        pytest.param("bind", id="swapped during bind"),
        pytest.param("mkdir,mkdirat,bind", id="swapped before the private directory is opened"),
    ],
)
def test_a_symlink_swapped_in_while_binding_never_changes_the_file_it_names(
    procs: Processes, short_tmp: Path, delayed: str
) -> None:
    if (reason := strace_works()) is not None:
        pytest.skip(reason)
    victim = short_tmp / "victim"
    victim.write_text("precious")
    victim.chmod(0o600)
    before = victim.stat()
    lure = short_tmp / "lure"
    lure.mkdir()
    (lure / "s").symlink_to(victim)
    shared = short_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by the attacker, and not sticky
    path = shared / "sock"
    command = [
        *("strace", "-q", "-f", "-o", "/dev/null"),
        *("-e", f"inject={delayed}:delay_exit={RACE_DELAY_US}"),
        *cli("server", "--unix", str(path), "--socket-mode", "666"),
        *("--socket-group", str(RACE_GROUP)),
    ]
    with Attacker(shared, victim, lure, {path.name, lock_of(path).name}) as attacker:
        child = procs.spawn(command)
        assert child.process.stdout is not None
        line = read_line(child.process.stdout.fileno(), START_TIMEOUT)
    try:
        after = victim.stat()
        assert (stat.S_IMODE(after.st_mode), after.st_gid) == (
            stat.S_IMODE(before.st_mode),
            before.st_gid,
        ), f"the server changed {victim}; the attacker swapped {attacker.swapped}"
        assert victim.read_text() == "precious"
        assert attacker.swapped, "the attacker never got its chance: the test proves nothing"
        if line.startswith(READY_PREFIX):
            # It bound through a descriptor of its own directory: it serves, as asked.
            assert path.is_socket()
            assert stat.S_IMODE(path.lstat().st_mode) == 0o666
            assert path.lstat().st_gid == RACE_GROUP
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(EVENT_TIMEOUT)
                client.connect(str(path))
                client.sendall(b"A")
                assert client.recv(1) == b"B"
            server_pid = int(lock_of(path).read_text())
            os.kill(server_pid, signal.SIGTERM)
            assert child.process.wait(timeout=EVENT_TIMEOUT) == 0, child.stderr()
        else:
            assert child.process.wait(timeout=FAIL_TIMEOUT) == 1, (line, child.stderr())
            *warnings, message = child.stderr().splitlines()
            assert message.startswith("trio_sock server: error: cannot listen on"), message
            # Besides the one error line, only the warning that anyone may write there.
            assert all("anyone could replace the socket" in w for w in warnings), warnings
        assert_no_traceback(child.stderr())
    finally:
        kill_tree(child.process.pid)


# --- the live socket file's identity -------------------------------------------------------------


def stop_and_check(server: ServerProcess) -> str:
    """SIGTERM ``server``; it must exit 0 with no traceback. Returns its stderr."""
    assert server.stop(timeout=EVENT_TIMEOUT) == 0, server.stderr()
    log = server.stderr()
    assert_no_traceback(log)
    return log


@pytest.mark.parametrize("change", ["chmod to the same mode", "touch", "chgrp", "hard link"])
def test_a_metadata_change_does_not_make_the_socket_file_someone_elses(
    procs: Processes, short_tmp: Path, change: str
) -> None:
    path = short_tmp / "s"
    server = procs.server("--unix", str(path))
    if change == "chmod to the same mode":
        path.chmod(stat.S_IMODE(path.lstat().st_mode))
    elif change == "touch":
        os.utime(path)
    elif change == "chgrp":
        os.chown(path, -1, os.getegid())
    else:
        os.link(path, short_tmp / "elsewhere")
    assert exchange(server.unix(), b"A") == b"B"
    log = stop_and_check(server)
    assert not path.exists(), f"the socket file was left behind after a {change}"
    assert "replaced" not in log, log


@pytest.mark.parametrize("replacement", ["socket", "file"])
def test_a_socket_file_really_replaced_is_left_alone_with_a_warning(
    procs: Processes, short_tmp: Path, replacement: str
) -> None:
    path = short_tmp / "s"
    server = procs.server("--unix", str(path))
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as theirs:
        if replacement == "socket":
            theirs.bind(str(path))
        else:
            path.write_text("theirs")
        log = stop_and_check(server)
        assert path.exists()
        assert stat.S_ISSOCK(path.lstat().st_mode) == (replacement == "socket")
    assert f"{path} was replaced by another file; leaving it in place" in log, log


def test_a_stale_socket_file_is_replaced_with_a_warning(procs: Processes, short_tmp: Path) -> None:
    path = short_tmp / "s"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # what a server killed with -9 leaves behind
    server = procs.server("--unix", str(path))
    assert exchange(server.unix(), b"A") == b"B"
    assert f"replaced the stale socket file {path}" in server.stderr()
    stop_and_check(server)
    assert not path.exists()


# --- paths that are not UTF-8 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "encoding", "log_format"),
    [("1", None, "text"), ("2", None, "text"), ("1", "ascii", "text"), ("1", None, "json")],
    ids=["one process", "two workers", "ascii stdout and stderr", "json logs"],
)
def test_a_path_that_is_not_utf_8_is_served_and_shown_escaped(
    procs: Processes, short_tmp: Path, workers: str, encoding: str | None, log_format: str
) -> None:
    raw = os.fsencode(short_tmp) + b"/\xff\xc3\xa9sock"  # a lone 0xff byte, then "é" in UTF-8
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(raw)  # a stale socket there, so that a log line names the path
    env = {**os.environ, "PYTHONIOENCODING": encoding} if encoding else None
    server = procs.server(
        *("--unix", os.fsdecode(raw), "--workers", workers, "--log-format", log_format), env=env
    )
    e_acute = "\\xe9" if encoding else "é"  # an ASCII stdout lacks it: escaped too
    shown = f"{short_tmp}/\\xff{e_acute}sock"
    assert server.addresses == [UnixAddress(shown)]
    assert stat.S_ISSOCK(os.lstat(raw).st_mode)
    for _ in range(int(workers) * 2):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(EVENT_TIMEOUT)
            client.connect(raw)
            client.sendall(b"A")
            assert client.recv(1) == b"B"
    log = stop_and_check(server)
    assert not os.path.lexists(raw)
    if log_format == "json":
        messages = [json.loads(line)["message"] for line in log.splitlines()]
    else:
        messages = log.splitlines()
    assert any(f"replaced the stale socket file {shown} " in m for m in messages), log
    assert "\\udc" not in log, log  # never the surrogate Python holds the byte as


# --- a live neighbour the old connect() probe killed: the book's server1.c -----------------------

#: The book's server1.c, listening on argv[1] instead of "server_socket", with its
#: "server waiting" line flushed so that a test can wait for it.  On EOF it writes
#: anyway (``ch`` is whatever was there) and dies of SIGPIPE, as the book's does.
SERVER1_C: Final = r"""
#include <sys/types.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include <stdlib.h>

int main(int argc, char *argv[])
{
    int server_sockfd, client_sockfd;
    socklen_t server_len, client_len;
    struct sockaddr_un server_address;
    struct sockaddr_un client_address;

    server_sockfd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&server_address, 0, sizeof(server_address));
    server_address.sun_family = AF_UNIX;
    strncpy(server_address.sun_path, argv[1], sizeof(server_address.sun_path) - 1);
    server_len = sizeof(server_address);
    bind(server_sockfd, (struct sockaddr *)&server_address, server_len);
    listen(server_sockfd, 5);
    while(1) {
        char ch = 'A';
        printf("server waiting\n");
        fflush(stdout);
        client_len = sizeof(client_address);
        client_sockfd = accept(server_sockfd,
            (struct sockaddr *)&client_address, &client_len);
        read(client_sockfd, &ch, 1);
        ch++;
        write(client_sockfd, &ch, 1);
        close(client_sockfd);
    }
}
"""


@pytest.fixture(scope="session")
def server1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The book's server1.c, compiled with gcc once per session."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed, so the book's server1.c cannot be built")
    out = tmp_path_factory.mktemp("server1")
    (out / "server1.c").write_text(SERVER1_C)
    # -O0, as tests/test_peers.py builds the book's clients: the book ignores what
    # read() and write() return, which fortified headers turn into warnings.
    command = [gcc, "-Wall", "-O0", "-o", str(out / "server1"), str(out / "server1.c")]
    built = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, f"gcc could not build server1.c:\n{built.stderr}"
    return out / "server1"


def test_a_live_book_server_is_left_alive_and_answering(
    procs: Processes, short_tmp: Path, server1: Path
) -> None:
    path = short_tmp / "server_socket"
    book = procs.spawn([str(server1), str(path)])
    assert book.process.stdout is not None
    assert read_line(book.process.stdout.fileno(), START_TIMEOUT) == "server waiting"
    refused = run_cli("server", "--unix", str(path), cwd=short_tmp, timeout=FAIL_TIMEOUT)
    assert_user_error(refused, "a server is already listening there", str(path))
    # server1 serves one client at a time: this answer comes after any probe's.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(EVENT_TIMEOUT)
        try:
            client.connect(str(path))
        except ConnectionRefusedError:
            code = book.process.wait(timeout=EVENT_TIMEOUT)
            pytest.fail(f"server1 no longer listens: it exited {code} (-13 is SIGPIPE)")
        client.sendall(b"A")
        assert client.recv(1) == b"B"
    assert book.process.poll() is None, f"server1 died: {book.process.returncode}"
    assert path.is_socket()
