"""The client library: the book's exchange, and every way it can fail, explained."""

from __future__ import annotations

import errno
import logging
import socket
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

from trio_sock import (
    ClientConfig,
    ClientTimeoutError,
    ConnectError,
    ProtocolError,
    Server,
    ServerConfig,
    TcpAddress,
    TrioSockError,
    UnixAddress,
    exchange,
    send_char,
    serve,
)
from trio_sock.client import start_command

if TYPE_CHECKING:
    from pathlib import Path


async def test_send_char_returns_the_next_character(server: Server) -> None:
    for address in server.addresses:
        assert await send_char(ClientConfig(address=address, char="A")) == "B"
        assert await send_char(ClientConfig(address=address, char="\xff")) == "\x00"


async def test_exchange_sends_any_bytes_and_returns_as_many(server: Server) -> None:
    data = bytes(range(256)) * 4
    reply = await exchange(server.addresses[0], data)
    assert reply == bytes((b + 1) % 256 for b in data)


async def test_no_socket_file_is_the_books_failure_explained(short_tmp: Path) -> None:
    address = UnixAddress(str(short_tmp / "sock"))
    with pytest.raises(ConnectError) as caught:
        await send_char(ClientConfig(address=address))
    error = caught.value
    assert isinstance(error, OSError)
    assert isinstance(error, TrioSockError)
    assert error.errno == errno.ENOENT
    assert str(error).startswith(f"{address}: No such file or directory;")
    assert f"start one with: python -m trio_sock server --unix {address.path}" in str(error)


async def test_a_refused_tcp_connection_is_explained() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connecting is refused
        address = TcpAddress("127.0.0.1", port)
        with pytest.raises(ConnectError, match="Connection refused") as caught:
            await send_char(ClientConfig(address=address))
    assert caught.value.errno == errno.ECONNREFUSED
    assert f"--tcp 127.0.0.1:{port}" in str(caught.value)


@pytest.mark.parametrize(
    ("address", "command"),
    [
        (UnixAddress("server_socket"), "python -m trio_sock server"),
        (TcpAddress("127.0.0.1", 9734), "python -m trio_sock server"),
        (UnixAddress("/tmp/a b"), "python -m trio_sock server --unix '/tmp/a b'"),
        (UnixAddress("@name"), "python -m trio_sock server --unix @name"),
        (TcpAddress("::1", 80), "python -m trio_sock server --tcp [::1]:80"),
    ],
)
def test_the_hint_starts_a_server_on_the_same_address(address: object, command: str) -> None:
    assert start_command(address) == command  # type: ignore[arg-type]


async def test_wait_retries_until_the_server_appears(
    autojump_clock: trio.testing.MockClock,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_sock.client")
    config = ClientConfig(address=server_config.addresses[0], wait=30)
    replies: list[str] = []

    async def client() -> None:
        replies.append(await send_char(config))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await trio.sleep(5)  # virtual seconds: the client keeps retrying meanwhile
        assert not replies
        server: Server = await nursery.start(serve, server_config)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.deadline = trio.current_time() + 1
    assert server.accepted == 1
    assert replies == ["B"]
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) >= 5
    assert all("No such file or directory" in r.getMessage() for r in retries)


async def test_wait_gives_up_after_the_time_given(
    autojump_clock: trio.testing.MockClock, short_tmp: Path
) -> None:
    config = ClientConfig(address=UnixAddress(str(short_tmp / "sock")), wait=3)
    began = trio.current_time()
    with pytest.raises(ConnectError, match="No such file"):
        await send_char(config)
    assert 2 <= trio.current_time() - began <= 3


async def test_a_server_that_never_replies_times_out(
    autojump_clock: trio.testing.MockClock, short_tmp: Path
) -> None:
    path = str(short_tmp / "sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(path)
        mute.listen()
        began = trio.current_time()
        with pytest.raises(ClientTimeoutError, match="no reply within 2s") as caught:
            await send_char(ClientConfig(address=UnixAddress(path), timeout=2))
    assert isinstance(caught.value, TimeoutError)
    assert trio.current_time() - began == pytest.approx(2)


async def test_a_full_listen_queue_means_busy_not_an_error(
    autojump_clock: trio.testing.MockClock, short_tmp: Path
) -> None:
    # A Unix server's full queue answers EAGAIN; the client knocks again until
    # its timeout rather than failing with a misleading error.
    path = str(short_tmp / "sock")
    queued = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy:
        busy.bind(path)
        busy.listen(0)
        try:
            while True:
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.setblocking(False)
                queued.append(client)
                client.connect(path)
        except BlockingIOError:
            pass
        with pytest.raises(ClientTimeoutError):
            await send_char(ClientConfig(address=UnixAddress(path), timeout=1))
        for client in queued:
            client.close()


async def test_a_server_that_closes_without_replying_is_a_protocol_error(
    nursery: trio.Nursery, short_tmp: Path
) -> None:
    path = str(short_tmp / "sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen()

    async def accept_and_close() -> None:
        with listener:
            conn, _ = await listener.accept()
            conn.close()

    nursery.start_soon(accept_and_close)
    with pytest.raises(ProtocolError, match="closed the connection without replying"):
        await send_char(ClientConfig(address=UnixAddress(path)))


async def test_a_once_server_answers_only_the_first_byte_of_a_longer_exchange(
    nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    server: Server = await nursery.start(serve, attrs.evolve(server_config, once=True))
    with pytest.raises(ProtocolError, match="after 1 of 2 reply bytes"):
        await exchange(server.addresses[0], b"AB")


async def test_an_unknown_host_is_a_connect_error() -> None:
    with pytest.raises(ConnectError, match=r"no-such-host\.invalid"):
        await send_char(ClientConfig(address=TcpAddress("no-such-host.invalid", 9734)))


async def test_a_path_that_is_not_a_socket_is_named_as_such(short_tmp: Path) -> None:
    with pytest.raises(ConnectError, match="not a socket") as caught:
        await send_char(ClientConfig(address=UnixAddress(str(short_tmp))))
    assert "start one with" not in str(caught.value)
