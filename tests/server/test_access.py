"""Peer credentials and the peer policy, with real Unix connections.

Running as root, a child process that changes its uid/gid stands in for
another local user; as anyone else those tests are skipped with the reason.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

from tests.helpers import start_in
from trio_sock import ServerConfig, TcpAddress, UnixAddress
from trio_sock.server.peers import AccessPolicy, PeerCredentials, policy_for

if TYPE_CHECKING:
    from pathlib import Path

OTHER_UID = 4242
OTHER_GID = 4343
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="connecting as another user needs root to switch users"
)


def test_the_kernel_names_the_connecting_process(short_tmp: Path) -> None:
    path = str(short_tmp / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            conn, _ = listener.accept()
            with conn:
                peer = PeerCredentials.of(conn)
    assert peer == PeerCredentials(os.getpid(), os.geteuid(), os.getegid())
    assert str(peer) == f"pid={os.getpid()} uid={os.geteuid()} gid={os.getegid()}"


def test_tcp_listeners_have_no_policy() -> None:
    config = ServerConfig(allow_uids=[0])
    assert policy_for(TcpAddress("127.0.0.1", 0), config) is None


def test_socket_files_rely_on_their_mode_unless_told_otherwise() -> None:
    assert policy_for(UnixAddress("s"), ServerConfig()) is None
    config = ServerConfig(allow_uids=[1000], allow_gids=[50])
    assert policy_for(UnixAddress("s"), config) == AccessPolicy(
        uids=frozenset({1000}), gids=frozenset({50})
    )


def test_abstract_names_serve_only_the_servers_user_by_default() -> None:
    assert policy_for(UnixAddress("@x"), ServerConfig()) == AccessPolicy(
        uids=frozenset({os.geteuid()})
    )
    config = ServerConfig(allow_gids=[50])
    assert policy_for(UnixAddress("@x"), config) == AccessPolicy(gids=frozenset({50}))


def connect_as(uid: int, gid: int, address: str, *, groups: tuple[int, ...] = ()) -> str:
    """Connect from a child process running as ``uid``/``gid``; return what it saw."""
    code = (
        "import os, socket, sys\n"
        f"os.setgroups({list(groups)!r}); os.setgid({gid}); os.setuid({uid})\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(10)\n"
        "address = sys.argv[1]\n"
        "s.connect('\\0' + address[1:] if address.startswith('@') else address)\n"
        "try:\n"
        "    s.sendall(b'A')\n"
        "    print(repr(s.recv(1)))\n"
        "except (ConnectionResetError, BrokenPipeError):\n"
        "    print('reset')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, address],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def open_to_all(directory: Path) -> Path:
    """Let the other user reach sockets in ``directory``."""
    directory.chmod(0o755)
    return directory


@needs_root
async def test_a_peer_outside_the_policy_is_closed_at_once_and_counted(
    nursery: trio.Nursery, short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(open_to_all(short_tmp) / "s")
    config = ServerConfig(addresses=[UnixAddress(path)], socket_mode=0o666, allow_uids=[0])
    server = await start_in(nursery, config)
    seen = await trio.to_thread.run_sync(connect_as, OTHER_UID, OTHER_GID, path)
    assert seen in ("b''", "reset")
    assert await trio.to_thread.run_sync(connect_as, 0, 0, path) == "b'B'"
    stats = server.stats()
    assert (stats.accepted, stats.refused) == (2, 1)
    (warning,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert f"uid={OTHER_UID}" in warning.getMessage()


@needs_root
async def test_a_peer_in_an_allowed_supplementary_group_is_served(
    nursery: trio.Nursery, short_tmp: Path
) -> None:
    path = str(open_to_all(short_tmp) / "s")
    config = ServerConfig(addresses=[UnixAddress(path)], socket_mode=0o666, allow_gids=[777])
    server = await start_in(nursery, config)
    served = await trio.to_thread.run_sync(
        lambda: connect_as(OTHER_UID, OTHER_GID, path, groups=(777,))
    )
    refused = await trio.to_thread.run_sync(connect_as, OTHER_UID, OTHER_GID, path)
    assert served == "b'B'"
    assert refused in ("b''", "reset")
    assert server.stats().refused == 1


@needs_root
async def test_an_abstract_name_refuses_other_users_by_default(nursery: trio.Nursery) -> None:
    name = f"@trio_sock-test-{os.getpid()}"
    server = await start_in(nursery, ServerConfig(addresses=[UnixAddress(name)]))
    address = name
    assert await trio.to_thread.run_sync(connect_as, OTHER_UID, OTHER_GID, address) in (
        "b''",
        "reset",
    )
    assert await trio.to_thread.run_sync(connect_as, os.geteuid(), os.getegid(), address) == (
        "b'B'"
    )
    assert server.stats().refused == 1


async def test_the_departure_record_names_the_unix_peer(
    nursery: trio.Nursery, server_config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    server = await start_in(nursery, server_config)
    stream = await trio.open_unix_socket(server.addresses[0].sockaddr)  # type: ignore[union-attr]
    async with stream:
        await stream.send_all(b"A")
        assert await stream.receive_some(1) == b"B"
    await trio.testing.wait_all_tasks_blocked()
    (record,) = [r for r in caplog.records if r.name == "trio_sock.clients"]
    assert f"peer=pid={os.getpid()} uid={os.geteuid()}" in record.getMessage()
    assert (getattr(record, "pid"), getattr(record, "uid")) == (os.getpid(), os.geteuid())  # noqa: B009


async def test_stats_count_every_kind_of_departure(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    server = await start_in(nursery, attrs.evolve(server_config, idle_timeout=10))
    talker = await trio.open_unix_socket(server.addresses[0].sockaddr)  # type: ignore[union-attr]
    idler = await trio.open_unix_socket(server.addresses[0].sockaddr)  # type: ignore[union-attr]
    await talker.send_all(b"hello")
    assert await talker.receive_some(5) == b"ifmmp"
    await trio.testing.wait_all_tasks_blocked()
    live = server.stats()
    assert (live.accepted, live.active, live.bytes_in, live.bytes_out) == (2, 2, 5, 5)
    await talker.aclose()
    assert await idler.receive_some(1) == b""  # dropped after 10 virtual seconds
    await idler.aclose()
    await trio.testing.wait_all_tasks_blocked()
    final = server.stats()
    assert (final.active, final.dropped_idle, final.bytes_in, final.bytes_out) == (0, 1, 5, 5)
    assert str(final).startswith("accepted=2 active=0 refused=0 dropped_idle=1")
