"""Socket-file safety and TCP listeners, against real sockets in short temporary paths."""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import unprivileged
from trio_sock.config.addresses import TcpAddress, UnixAddress
from trio_sock.config.server import ServerConfig
from trio_sock.errors import ListenError
from trio_sock.listen.open_all import open_listeners
from trio_sock.listen.tcp import open_tcp_listeners
from trio_sock.listen.unix import SUN_PATH_MAX, open_unix_listener

if TYPE_CHECKING:
    from trio_sock.listen.listener import Listener


def connects(path: str) -> bool:
    """True if something accepts connections on ``path`` right now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


def leave_stale_socket(path: Path) -> None:
    """What a killed server leaves behind: a socket file nothing listens on."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


def test_a_new_socket_file_accepts_connections_with_mode_600(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    listener = open_unix_listener(UnixAddress(str(path)))
    try:
        mode = os.lstat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert connects(str(path))
        assert listener.address == UnixAddress(str(path))
    finally:
        listener.close()


@pytest.mark.parametrize("mode", [0o660, 0o666, 0o700, 0o000])
def test_the_socket_file_gets_exactly_the_mode_asked(short_tmp: Path, mode: int) -> None:
    path = short_tmp / "sock"
    listener = open_unix_listener(UnixAddress(str(path)), mode=mode)
    try:
        assert stat.S_IMODE(os.lstat(path).st_mode) == mode
    finally:
        listener.close()


def test_the_socket_file_is_born_with_its_mode_before_anyone_can_see_it(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the widest umask, and chmod made a no-op, the file must still be
    # created with the mode: it never exists with wider permissions.
    seen: dict[str, int] = {}
    real_link = os.link

    def spying_link(
        source: str, target: str, *, src_dir_fd: int, dst_dir_fd: int, follow_symlinks: bool
    ) -> None:
        seen["mode"] = stat.S_IMODE(os.lstat(source, dir_fd=src_dir_fd).st_mode)
        seen["target_exists"] = os.path.lexists(short_tmp / target)
        real_link(
            source,
            target,
            src_dir_fd=src_dir_fd,
            dst_dir_fd=dst_dir_fd,
            follow_symlinks=follow_symlinks,
        )

    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    monkeypatch.setattr(os, "link", spying_link)
    old_umask = os.umask(0)
    try:
        listener = open_unix_listener(UnixAddress(str(short_tmp / "sock")), mode=0o640)
    finally:
        os.umask(old_umask)
    listener.close()
    assert seen == {"mode": 0o640, "target_exists": False}


def test_the_process_umask_is_left_as_it_was(short_tmp: Path) -> None:
    old = os.umask(0o027)
    try:
        open_unix_listener(UnixAddress(str(short_tmp / "sock")), mode=0o600).close()
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


def test_a_live_servers_socket_is_never_taken_over(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    first = open_unix_listener(UnixAddress(str(path)))
    try:
        inode = os.lstat(path).st_ino
        with pytest.raises(
            ListenError, match=r"another server \(pid \d+\) already holds"
        ) as caught:
            open_unix_listener(UnixAddress(str(path)))
        assert caught.value.errno == errno.EADDRINUSE
        assert isinstance(caught.value, OSError)
        assert os.lstat(path).st_ino == inode
        assert connects(str(path))
    finally:
        first.close()


def test_a_live_server_without_a_lock_file_is_found_by_probing(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        with pytest.raises(ListenError, match="already listening"):
            open_unix_listener(UnixAddress(str(path)))
        assert connects(str(path))
    assert not (short_tmp / "sock.lock").exists()


def test_the_lock_file_holds_the_pid_and_goes_at_close(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    listener = open_unix_listener(UnixAddress(str(path)))
    lock = short_tmp / "sock.lock"
    assert lock.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    listener.close()
    assert not lock.exists()


def test_a_lock_file_left_by_a_dead_server_is_taken_over(short_tmp: Path) -> None:
    # The kernel drops a dead process's flock: the file alone means nothing.
    (short_tmp / "sock.lock").write_text("999999\n")
    leave_stale_socket(short_tmp / "sock")
    listener = open_unix_listener(UnixAddress(str(short_tmp / "sock")))
    try:
        assert (short_tmp / "sock.lock").read_text() == f"{os.getpid()}\n"
        assert connects(str(short_tmp / "sock"))
    finally:
        listener.close()


def test_a_lock_unlinked_by_its_holder_is_not_trusted(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between our open() and flock(), the old holder unlinks the file and a
    # third server creates a new one: we must lock the file at the path now.
    import fcntl

    path = short_tmp / "sock"
    real_flock = fcntl.flock
    swaps: list[int] = []

    def flock_after_a_swap(fd: int, operation: int) -> None:
        if not swaps:
            swaps.append(fd)
            os.unlink(f"{path}.lock")
            (short_tmp / "sock.lock").write_text("")
        real_flock(fd, operation)

    monkeypatch.setattr("trio_sock.listen.lockfile.fcntl.flock", flock_after_a_swap)
    listener = open_unix_listener(UnixAddress(str(path)))
    try:
        held = os.fstat(listener._lock._fd)  # type: ignore[union-attr]
        now = os.stat(f"{path}.lock")
        assert (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
        assert len(swaps) == 1
    finally:
        listener.close()


def test_a_world_writable_directory_without_the_sticky_bit_is_warned_about(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    open_dir = short_tmp / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    sticky = short_tmp / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    with caplog.at_level(logging.WARNING, logger="trio_sock.listeners"):
        open_unix_listener(UnixAddress(str(sticky / "s"))).close()
        assert not caplog.records
        open_unix_listener(UnixAddress(str(open_dir / "s"))).close()
    (record,) = caplog.records
    assert "anyone could replace the socket" in record.getMessage()


def test_the_socket_file_can_be_given_to_a_group_before_listen(short_tmp: Path) -> None:
    group = os.getgroups()[-1] if os.getgroups() else os.getgid()
    path = short_tmp / "sock"
    listener = open_unix_listener(UnixAddress(str(path)), mode=0o660, group=group)
    try:
        assert os.lstat(path).st_gid == group
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660
    finally:
        listener.close()


def test_a_group_the_server_may_not_use_is_explained(short_tmp: Path) -> None:
    # As root, a child without capabilities stands in for an ordinary user.
    short_tmp.chmod(0o777)
    code = (
        "import sys; from trio_sock.listen.unix import open_unix_listener;"
        "from trio_sock import UnixAddress, ListenError\n"
        "try: open_unix_listener(UnixAddress(sys.argv[1]), group=4242)\n"
        "except ListenError as e: print(e); sys.exit(3)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(short_tmp / "sock")],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=unprivileged(),
        check=False,
    )
    assert done.returncode == 3, done
    assert "cannot give the socket file to group 4242" in done.stdout
    assert sorted(p.name for p in short_tmp.iterdir()) == []


def test_a_file_that_appears_while_starting_is_never_replaced(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program creates the path between the probe and the naming.
    path = short_tmp / "sock"
    real_listen = socket.socket.listen

    def listen_then_race(self: socket.socket, backlog: int) -> None:
        real_listen(self, backlog)
        path.write_text("theirs")

    monkeypatch.setattr(socket.socket, "listen", listen_then_race)
    with pytest.raises(ListenError, match="appeared"):
        open_unix_listener(UnixAddress(str(path)))
    assert path.read_text() == "theirs"
    assert sorted(p.name for p in short_tmp.iterdir()) == ["sock"]


def test_a_stale_socket_that_changes_while_starting_is_never_replaced(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = short_tmp / "sock"
    leave_stale_socket(path)
    real_listen = socket.socket.listen

    def listen_then_swap(self: socket.socket, backlog: int) -> None:
        real_listen(self, backlog)
        path.unlink()
        path.write_text("theirs")

    monkeypatch.setattr(socket.socket, "listen", listen_then_swap)
    with pytest.raises(ListenError, match="changed while"):
        open_unix_listener(UnixAddress(str(path)))
    assert path.read_text() == "theirs"


def test_a_directory_that_cannot_be_searched_is_explained(short_tmp: Path) -> None:
    # As root, a child without capabilities stands in for an ordinary user.
    locked = short_tmp / "locked"
    (locked / "sub").mkdir(parents=True)
    locked.chmod(0o000)
    try:
        for path in (locked / "sock", locked / "sub" / "sock"):
            done = subprocess.run(
                [sys.executable, "-m", "trio_sock", "server", "--unix", str(path)],
                capture_output=True, text=True, timeout=30, check=False,
                preexec_fn=unprivileged(),
            )  # fmt: skip
            assert done.returncode == 1, done
            assert f"cannot listen on unix:{path}: permission denied" in done.stderr
    finally:
        locked.chmod(0o700)


def test_a_live_server_with_a_full_queue_still_counts_as_live(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(str(path))
    busy.listen(0)
    waiting = []
    try:
        for _ in range(8):  # fill the queue: further connects answer EAGAIN
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            waiting.append(client)
            try:
                client.connect(str(path))
            except BlockingIOError:
                break
        with pytest.raises(ListenError, match="already listening"):
            open_unix_listener(UnixAddress(str(path)))
        assert path.exists()
    finally:
        for client in waiting:
            client.close()
        busy.close()


def test_a_stale_socket_is_replaced_with_a_warning(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = short_tmp / "sock"
    leave_stale_socket(path)
    assert not connects(str(path))
    with caplog.at_level(logging.WARNING, logger="trio_sock.listeners"):
        listener = open_unix_listener(UnixAddress(str(path)))
    try:
        assert connects(str(path))
        assert any("stale" in record.getMessage() for record in caplog.records)
    finally:
        listener.close()


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_a_path_that_is_not_a_socket_is_never_deleted(short_tmp: Path, kind: str) -> None:
    path = short_tmp / "sock"
    if kind == "file":
        path.write_text("precious")
    elif kind == "directory":
        path.mkdir()
    else:
        leave_stale_socket(short_tmp / "target")
        path.symlink_to(short_tmp / "target")
    with pytest.raises(ListenError, match="not a socket") as caught:
        open_unix_listener(UnixAddress(str(path)))
    assert "left alone" in str(caught.value)
    assert os.path.lexists(path)
    if kind == "file":
        assert path.read_text() == "precious"
    assert sorted(p.name for p in short_tmp.iterdir()) == sorted(
        ["sock", "target"] if kind == "symlink" else ["sock"]
    )


def test_a_path_longer_than_the_kernel_allows_is_refused_up_front(short_tmp: Path) -> None:
    path = str(short_tmp / ("x" * (SUN_PATH_MAX - len(str(short_tmp)))))
    assert len(path) == SUN_PATH_MAX + 1
    with pytest.raises(ListenError, match=f"{SUN_PATH_MAX + 1} bytes") as caught:
        open_unix_listener(UnixAddress(path))
    assert caught.value.errno == errno.ENAMETOOLONG
    assert list(short_tmp.iterdir()) == []


def test_an_abstract_name_longer_than_the_kernel_allows_is_refused() -> None:
    with pytest.raises(ListenError, match="longer than"):
        open_unix_listener(UnixAddress("@" + "x" * (SUN_PATH_MAX + 1)))


def test_a_path_at_the_limit_replaces_a_stale_socket_too(short_tmp: Path) -> None:
    # The socket is bound by a short name of its own, then renamed: a long path is no matter.
    path = str(short_tmp / ("x" * (SUN_PATH_MAX - len(str(short_tmp)) - 1)))
    assert len(path) == SUN_PATH_MAX
    leave_stale_socket(Path(path))
    listener = open_unix_listener(UnixAddress(path))
    try:
        assert connects(path)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    finally:
        listener.close()
    assert not os.path.lexists(path)


def test_a_missing_directory_is_named_in_the_error(short_tmp: Path) -> None:
    with pytest.raises(ListenError, match="does not exist") as caught:
        open_unix_listener(UnixAddress(str(short_tmp / "nowhere" / "sock")))
    assert "nowhere" in str(caught.value)
    assert caught.value.errno == errno.ENOENT


def test_a_parent_that_is_a_file_is_named_as_not_a_directory(short_tmp: Path) -> None:
    (short_tmp / "file").write_text("")
    with pytest.raises(ListenError, match="is not a directory") as caught:
        open_unix_listener(UnixAddress(str(short_tmp / "file" / "sock")))
    assert caught.value.errno == errno.ENOTDIR


def test_a_failure_after_bind_leaves_no_file_behind(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: socket.socket, backlog: int) -> None:
        raise OSError(errno.ENOBUFS, "No buffer space available")

    monkeypatch.setattr(socket.socket, "listen", refuse)
    with pytest.raises(ListenError, match="No buffer space"):
        open_unix_listener(UnixAddress(str(short_tmp / "sock")))
    assert list(short_tmp.iterdir()) == []


def test_close_removes_the_file_and_may_be_called_again(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    listener = open_unix_listener(UnixAddress(str(path)))
    listener.close()
    assert not path.exists()
    listener.close()
    assert listener.socket.fileno() == -1


def test_close_leaves_a_file_that_replaced_ours_in_place(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = short_tmp / "sock"
    listener = open_unix_listener(UnixAddress(str(path)))
    path.unlink()
    path.write_text("somebody else's")
    with caplog.at_level(logging.WARNING, logger="trio_sock.listeners"):
        listener.close()
    assert path.read_text() == "somebody else's"
    assert any("replaced" in record.getMessage() for record in caplog.records)


def test_close_leaves_another_servers_socket_in_place(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    ours = open_unix_listener(UnixAddress(str(path)))
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as theirs:
        theirs.bind(str(path))
        theirs.listen()
        ours.close()
        assert connects(str(path))


def test_an_abstract_name_has_no_file_and_cannot_be_bound_twice(short_tmp: Path) -> None:
    name = f"@trio_sock-test-{os.getpid()}"
    first = open_unix_listener(UnixAddress(name))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect("\0" + name[1:])
        with pytest.raises(ListenError, match="already in use"):
            open_unix_listener(UnixAddress(name))
    finally:
        first.close()
    assert list(short_tmp.iterdir()) == []


async def test_tcp_port_0_is_reported_as_the_real_port() -> None:
    (listener,) = await open_tcp_listeners(TcpAddress("127.0.0.1", 0))
    try:
        assert isinstance(listener.address, TcpAddress)
        assert listener.address.host == "127.0.0.1"
        assert listener.address.port != 0
        assert listener.address.port == listener.socket.getsockname()[1]
        assert not listener.socket.getblocking()
    finally:
        listener.close()


async def test_tcp_port_in_use_says_so_and_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=r"address already in use.*--tcp") as caught:
            await open_tcp_listeners(TcpAddress("127.0.0.1", port))
    assert caught.value.errno == errno.EADDRINUSE
    assert f"tcp:127.0.0.1:{port}" in str(caught.value)


async def test_an_unknown_host_is_explained() -> None:
    with pytest.raises(ListenError, match="cannot resolve host"):
        await open_tcp_listeners(TcpAddress("no-such-host.invalid", 0))


async def test_an_address_this_machine_lacks_is_explained() -> None:
    with pytest.raises(ListenError, match="no such address"):
        await open_tcp_listeners(TcpAddress("192.0.2.1", 0))


@pytest.mark.skipif(not socket.has_ipv6, reason="Python was built without IPv6")
async def test_ipv6_loopback_prints_in_brackets() -> None:
    try:
        listeners = await open_tcp_listeners(TcpAddress("::1", 0))
    except ListenError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        (listener,) = listeners
        assert str(listener.address).startswith("tcp:[::1]:")
    finally:
        listener.close()


async def test_open_listeners_opens_all_or_none(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ServerConfig(addresses=[UnixAddress(str(path)), TcpAddress("127.0.0.1", port)])
        with pytest.raises(ListenError, match="already in use"):
            await open_listeners(config)
    assert not path.exists()


async def test_open_listeners_keeps_the_config_order(short_tmp: Path) -> None:
    config = ServerConfig(
        addresses=[TcpAddress("127.0.0.1", 0), UnixAddress(str(short_tmp / "sock"))]
    )
    listeners: list[Listener] = await open_listeners(config)
    try:
        assert [type(listener.address) for listener in listeners] == [TcpAddress, UnixAddress]
    finally:
        for listener in listeners:
            listener.close()


def test_a_symlink_at_the_lock_path_is_never_followed(short_tmp: Path) -> None:
    victim = short_tmp / "victim.txt"
    victim.write_text("precious")
    (short_tmp / "sock.lock").symlink_to(victim)
    with pytest.raises(ListenError):
        open_unix_listener(UnixAddress(str(short_tmp / "sock")))
    assert victim.read_text() == "precious"
    assert (short_tmp / "sock.lock").is_symlink()
    assert not (short_tmp / "sock").exists()


# --- who else may write to the socket's directory ------------------------------------------------


def test_a_directory_writable_by_a_group_the_server_is_not_in_is_warned_about(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = os.getegid()
    foreign = max({own, *os.getgroups()}) + 4242  # a group this process is not in
    cases = {"own": (own, 0o770), "sticky": (foreign, 0o1770), "foreign": (foreign, 0o770)}
    for name, (group, mode) in cases.items():
        (short_tmp / name).mkdir()
        os.chown(short_tmp / name, -1, group)
        (short_tmp / name).chmod(mode)
    with caplog.at_level(logging.WARNING, logger="trio_sock.listeners"):
        for name in ("own", "sticky"):
            open_unix_listener(UnixAddress(str(short_tmp / name / "s"))).close()
        assert not caplog.records
        open_unix_listener(UnixAddress(str(short_tmp / "foreign" / "s"))).close()
    (record,) = caplog.records
    message = record.getMessage()
    assert f"members of group {foreign} may write to {short_tmp / 'foreign'}" in message
    assert "could replace the socket" in message


# --- the private directory the socket is bound in -------------------------------------------------


def test_the_socket_is_bound_in_a_private_directory_that_is_removed_after(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int, int]] = []
    real_bind = socket.socket.bind

    def spying_bind(self: socket.socket, address: str) -> None:
        real_bind(self, address)
        private = os.path.dirname(os.path.realpath(address))
        found = os.lstat(private)
        seen.append((os.path.dirname(private), stat.S_IMODE(found.st_mode), found.st_uid))

    monkeypatch.setattr(socket.socket, "bind", spying_bind)
    listener = open_unix_listener(UnixAddress(str(short_tmp / "sock")), mode=0o666)
    try:
        assert seen == [(str(short_tmp), 0o700, os.geteuid())]
        assert sorted(p.name for p in short_tmp.iterdir()) == ["sock", "sock.lock"]
        assert stat.S_IMODE(os.lstat(short_tmp / "sock").st_mode) == 0o666
    finally:
        listener.close()


def test_a_private_directory_swapped_for_a_symlink_is_never_followed(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone who may write to the directory renames ours away the moment it is
    # made, and puts a symlink to a directory of theirs in its place.
    victim = short_tmp / "victim"
    victim.write_text("precious")
    victim.chmod(0o600)
    lure = short_tmp / "lure"
    lure.mkdir()
    (lure / "s").symlink_to(victim)
    shared = short_tmp / "shared"
    shared.mkdir()
    real_mkdir = os.mkdir

    def mkdir_then_swap(name: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(name, mode, dir_fd=dir_fd)
        os.rename(shared / name, short_tmp / "moved")
        (shared / name).symlink_to(lure)

    monkeypatch.setattr(os, "mkdir", mkdir_then_swap)
    with pytest.raises(ListenError, match="replaced while the server was starting"):
        open_unix_listener(UnixAddress(str(shared / "sock")), mode=0o666)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (lure / "s").is_symlink()
    assert not (short_tmp / "moved" / "s").exists()
    assert [p.is_symlink() for p in shared.iterdir()] == [True]  # theirs, left alone


def test_without_proc_the_server_refuses_rather_than_bind_by_name(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio_sock.listen.private_dir

    monkeypatch.setattr(trio_sock.listen.private_dir, "PROC_FDS", str(short_tmp / "no-proc"))
    with pytest.raises(ListenError, match="/proc is not mounted"):
        open_unix_listener(UnixAddress(str(short_tmp / "sock")))
    assert list(short_tmp.iterdir()) == []


# --- a socket's identity -------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["chmod", "touch", "chgrp", "link"])
def test_close_removes_our_file_after_its_metadata_changed(
    short_tmp: Path, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    path = short_tmp / "sock"
    listener = open_unix_listener(UnixAddress(str(path)))
    if change == "chmod":
        path.chmod(0o600)
    elif change == "touch":
        os.utime(path)
    elif change == "chgrp":
        os.chown(path, -1, os.getegid())
    else:
        os.link(path, short_tmp / "elsewhere")
    with caplog.at_level(logging.WARNING, logger="trio_sock.listeners"):
        listener.close()
    assert not path.exists()
    assert not caplog.records


# --- the kernel's list of listening sockets (sock_diag) -------------------------------------------


def diag_message(kind: int, body: bytes, sequence: int = 1) -> bytes:
    """One netlink message as the kernel frames it, padded to 4 bytes."""
    from trio_sock.listen.unix_diag import HEADER

    length = HEADER.size + len(body)
    return HEADER.pack(length, kind, 2, sequence, 0) + body + b"\0" * (-length % 4)


def diag_socket(inode: int, device: int) -> bytes:
    """A SOCK_DIAG_BY_FAMILY answer about one listening socket, with its VFS attribute."""
    from trio_sock.listen.unix_diag import (
        ATTRIBUTE,
        MESSAGE,
        SOCK_DIAG_BY_FAMILY,
        UNIX_DIAG_VFS,
        VFS,
    )

    vfs = ATTRIBUTE.pack(ATTRIBUTE.size + VFS.size, UNIX_DIAG_VFS) + VFS.pack(inode, device)
    # UNIX_DIAG_SHUTDOWN: 1 byte, padded to 4; first, so that the padding must be skipped.
    shutdown = ATTRIBUTE.pack(5, 6) + b"\0\0\0\0"
    body = MESSAGE.pack(socket.AF_UNIX, socket.SOCK_STREAM, 10, 0, 99, 0, 0)
    return diag_message(SOCK_DIAG_BY_FAMILY, body + shutdown + vfs)


def test_the_sock_diag_parser_reads_each_listening_files_device_and_inode() -> None:
    from trio_sock.listen.unix_diag import parse

    found: set[tuple[int, int]] = set()
    first = diag_socket(2147444, 254 << 20) + diag_socket(7, 1 << 20 | 3)
    assert parse(first, found) is False
    assert found == {(254 << 20, 2147444), (1 << 20 | 3, 7)}
    assert parse(diag_message(3, b"\0\0\0\0"), found) is True  # NLMSG_DONE


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b"\x10\0\0", "truncated netlink header", id="short header"),
        pytest.param(b"\xff\0\0\0" + b"\0" * 12, "length 255", id="length past the end"),
        pytest.param(b"\x04\0\0\0" + b"\0" * 12, "length 4", id="length below a header"),
        pytest.param(b"\x14\0\0\0\x63\0" + b"\0" * 14, "unexpected type 99", id="odd type"),
    ],
)
def test_the_sock_diag_parser_refuses_a_malformed_answer(data: bytes, error: str) -> None:
    from trio_sock.listen.unix_diag import UnixDiagError, parse

    with pytest.raises(UnixDiagError, match=error):
        parse(data, set())


def test_the_sock_diag_parser_refuses_a_short_vfs_attribute_and_reports_kernel_errors() -> None:
    from trio_sock.listen.unix_diag import (
        ATTRIBUTE,
        MESSAGE,
        SOCK_DIAG_BY_FAMILY,
        UNIX_DIAG_VFS,
        UnixDiagError,
        parse,
    )

    # A VFS attribute whose length (6) leaves 2 bytes of payload, padded to 4: well framed,
    # but too short for the inode and device it must hold.
    short_vfs = ATTRIBUTE.pack(6, UNIX_DIAG_VFS) + b"\1\0\0\0"
    body = MESSAGE.pack(socket.AF_UNIX, socket.SOCK_STREAM, 10, 0, 99, 0, 0) + short_vfs
    with pytest.raises(UnixDiagError, match="UNIX_DIAG_VFS attribute of 2 bytes"):
        parse(diag_message(SOCK_DIAG_BY_FAMILY, body), set())
    refused = diag_message(2, (-errno.EINVAL).to_bytes(4, "little", signed=True) + b"\0" * 16)
    with pytest.raises(OSError, match="Invalid argument") as caught:
        parse(refused, set())
    assert caught.value.errno == errno.EINVAL


def test_a_files_key_uses_the_kernels_device_encoding(short_tmp: Path) -> None:
    from trio_sock.listen.unix_diag import file_key, listening_files

    path = short_tmp / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        try:
            assert file_key(os.lstat(path)) not in listening_files()
            live.listen()
            assert file_key(os.lstat(path)) in listening_files()
        except OSError as exc:  # a sandbox without sock_diag: the fallback is tested elsewhere
            pytest.skip(f"sock_diag is not available here: {exc}")
    found = os.lstat(short_tmp)
    device, inode = file_key(found)
    assert (device >> 20, device & 0xFFFFF) == (os.major(found.st_dev), os.minor(found.st_dev))
    assert inode == found.st_ino & 0xFFFFFFFF


def test_without_sock_diag_a_live_server_is_still_found_by_connecting(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio_sock.listen.unix_diag

    def refused() -> set[tuple[int, int]]:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(trio_sock.listen.unix_diag, "listening_files", refused)
    path = short_tmp / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        with pytest.raises(ListenError, match="already listening"):
            open_unix_listener(UnixAddress(str(path)))
        other.setblocking(False)
        accepted, _ = other.accept()  # the fallback did connect: the peer saw it
        accepted.close()


def test_a_live_server_found_by_the_kernel_is_never_connected_to(short_tmp: Path) -> None:
    path = short_tmp / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        other.setblocking(False)
        with pytest.raises(ListenError, match="already listening"):
            open_unix_listener(UnixAddress(str(path)))
        try:
            accepted, _ = other.accept()
        except BlockingIOError:
            return
        accepted.close()
        pytest.fail("the probe connected to the live server")


# --- paths that are not UTF-8 ------------------------------------------------------------------


def test_a_path_may_hold_any_byte_but_control_characters() -> None:
    raw = UnixAddress("dir/\udcffsock")  # what os.fsdecode makes of b"dir/\xffsock"
    assert os.fsencode(raw.path) == b"dir/\xffsock"
    assert raw.display == "dir/\\xffsock"
    assert str(raw) == "unix:dir/\\xffsock"
    assert UnixAddress("dir/é").display == "dir/é"
    for bad in ("dir/\nsock", "dir/\x00sock", "dir/\x1bsock"):
        with pytest.raises(ValueError, match="control characters") as caught:
            UnixAddress(bad)
        assert repr(bad) in str(caught.value)
    with pytest.raises(ValueError, match="cannot be a file name"):
        UnixAddress("dir/\ud800")  # a surrogate no byte decodes to


@pytest.mark.parametrize(
    "text",
    [
        '{"number": 1, "config": "{\\"addresses\\": [{\\"unix\\": 7}]}", "log_level": "info",'
        ' "log_format": "text"}',
        '{"number": 1, "config": "{\\"addresses\\": [{\\"smoke\\": \\"x\\"}]}",'
        ' "log_level": "info", "log_format": "text"}',
        '{"number": 1, "config": "{\\"addresses\\": [{\\"tcp\\": [\\"::1\\"]}]}",'
        ' "log_level": "info", "log_format": "text"}',
        '{"number": 1, "config": "{\\"bogus\\": 1}", "log_level": "info", "log_format": "text"}',
        '{"number": 1, "config": "[]", "log_level": "info", "log_format": "text"}',
        '{"number": 1}',
        "not json",
    ],
)
def test_a_malformed_worker_address_is_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    from trio_sock.errors import WorkerError
    from trio_sock.workers.worker import WORKER_ENV, WorkerRole

    monkeypatch.setenv(WORKER_ENV, text)
    with pytest.raises(WorkerError, match="malformed"):
        WorkerRole.from_environment()
