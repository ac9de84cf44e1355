"""``Connection`` and async handlers: Trio's own stream checks, then real servers.

The conformance checks are Trio's (``trio.testing.check_half_closeable_stream``);
the servers are ``serve`` in the test's nursery, spoken to over real Unix and
TCP sockets.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
import trustme

import trio_sock
from tests.helpers import address_of, open_stream, receive_to_eof, start_in
from trio_sock import Connection, ServerConfig, TcpAddress
from trio_sock.config.addresses import UnixAddress
from trio_sock.server.connection import PlainConnection, TlsConnection
from trio_sock.server.peers import PeerCredentials
from trio_sock.server.stats import Tally
from trio_sock.testing import serving

if TYPE_CHECKING:
    from pathlib import Path


TRANSPORTS = ["unix", "tcp"]
#: Small socket buffers, so that a clogged pair is clogged after a few sends.
CLOG_BUFFER = 4096


# --- Trio's conformance checks -------------------------------------------------------------


def connection_pair() -> tuple[PlainConnection, PlainConnection]:
    """Two plain Connections, the two ends of a socketpair."""
    clock = trio.current_time
    ends = []
    for sock in socket.socketpair():
        sock.setblocking(False)
        tally = Tally(clock(), alive=clock(), watched=sock)
        ends.append(PlainConnection(sock, tally, clock, address=UnixAddress("@test"), peer=None))
    return ends[0], ends[1]


async def stream_maker() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
    return connection_pair()


async def clogged_stream_maker() -> tuple[
    trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream
]:
    left, right = connection_pair()
    # Both ways: the checks also run on the flipped pair.
    for end in (left, right):
        end.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLOG_BUFFER)
        end.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLOG_BUFFER)
    for end in (left, right):
        while True:
            try:
                end.socket.send(b"x" * CLOG_BUFFER)
            except BlockingIOError:
                break
    return left, right


async def test_a_connection_passes_trios_half_closeable_stream_checks() -> None:
    await trio.testing.check_half_closeable_stream(stream_maker, clogged_stream_maker)


async def test_iterating_a_connection_is_a_checkpoint_and_loses_nothing_when_cancelled() -> None:
    left, right = connection_pair()
    async with left, right:
        await right.send_all(b"ready")
        with trio.testing.assert_checkpoints():
            assert await left.__anext__() == b"ready"
        with trio.CancelScope() as scope:
            scope.cancel()
            await left.receive_some()  # cancelled before it reads anything
        await right.send_all(b"kept")
        assert await left.receive_some() == b"kept"


# --- async handlers on a real server -------------------------------------------------------


async def echo(conn: Connection) -> None:
    async for data in conn:
        await conn.send_all(data)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_async_handler_echoes_until_the_clients_eof(
    nursery: trio.Nursery, server_config: ServerConfig, transport: str
) -> None:
    server = await start_in(nursery, server_config, echo)
    async with await open_stream(address_of(server, transport)) as stream:
        for message in (b"hello", b"x" * 200_000):
            await stream.send_all(message)
            got = b""
            while len(got) < len(message):
                got += await stream.receive_some()
            assert got == message
        await stream.send_eof()
        assert await stream.receive_some() == b""


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_connection_knows_its_listener_and_its_peer(
    nursery: trio.Nursery, server_config: ServerConfig, transport: str
) -> None:
    seen: list[tuple[object, object]] = []
    noted = trio.Event()

    async def note(conn: Connection) -> None:
        await conn.send_all(b"k")
        await conn.aclose()  # the peer is asked for lazily: it is still known after this
        seen.append((conn.address, conn.peer))
        noted.set()

    server = await start_in(nursery, server_config, note)
    address = address_of(server, transport)
    async with await open_stream(address) as stream:
        assert await receive_to_eof(stream) == b"k"
        await noted.wait()
        [(listener, peer)] = seen
        assert listener == address
        if transport == "unix":
            assert peer == PeerCredentials(os.getpid(), os.getuid(), os.getgid())
        else:
            local = stream.socket.getsockname()
            assert peer == TcpAddress(local[0], local[1])


async def test_a_handlers_bug_is_logged_with_its_traceback_and_the_others_go_on(
    nursery: trio.Nursery, server_config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async def buggy(conn: Connection) -> None:
        async for data in conn:
            if data == b"!":
                raise KeyError("a bug in the handler")
            await conn.send_all(data)

    caplog.set_level(logging.INFO, logger="trio_sock")
    server = await start_in(nursery, server_config, buggy)
    address = address_of(server, "tcp")
    async with await open_stream(address) as bystander, await open_stream(address) as culprit:
        await culprit.send_all(b"!")
        assert await receive_to_eof(culprit) == b""
        await bystander.send_all(b"fine")
        assert await bystander.receive_some() == b"fine"
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)
    assert server.stats().failed == 1


async def test_the_client_leaving_is_an_ordinary_departure_even_through_a_nursery(
    nursery: trio.Nursery, server_config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    gone = trio.Event()

    async def talks_to_the_gone(conn: Connection) -> None:
        try:
            async with trio.open_nursery() as inner:  # a group wraps what escapes

                async def write_forever() -> None:
                    while True:
                        await conn.send_all(b"x" * 65536)

                inner.start_soon(write_forever)
        finally:
            gone.set()

    caplog.set_level(logging.INFO, logger="trio_sock")
    server = await start_in(nursery, server_config, talks_to_the_gone)
    address = address_of(server, "unix")
    assert isinstance(address, UnixAddress)
    client = socket.socket(socket.AF_UNIX)
    client.connect(address.sockaddr)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    client.close()  # a reset, with the server's writes unread
    await gone.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert server.stats().failed == 0


async def test_an_idle_client_is_dropped_and_its_handler_sees_the_connection_closed(
    nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    raised: list[BaseException] = []

    async def waits(conn: Connection) -> None:
        try:
            await conn.receive_some()
        except trio.ClosedResourceError as exc:
            raised.append(exc)
            raise

    config = attrs.evolve(server_config, idle_timeout=0.2)
    server = await start_in(nursery, config, waits)
    async with await open_stream(address_of(server, "unix")) as stream:
        assert await receive_to_eof(stream) == b""  # the server closed it
    assert len(raised) == 1
    await trio.testing.wait_all_tasks_blocked()  # the client's task has left
    assert (server.active_clients, server.stats().dropped_idle) == (0, 1)


async def test_handlers_get_the_grace_then_are_cancelled(
    server_config: ServerConfig,
) -> None:
    started, cancelled = trio.Event(), trio.Event()

    async def never_ends(conn: Connection) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    config = attrs.evolve(server_config, grace=0.1)
    async with trio.open_nursery() as nursery:
        server = await start_in(nursery, config, never_ends)
        async with await open_stream(address_of(server, "unix")):
            await started.wait()
            server.stop()
            await cancelled.wait()
    assert server.active_clients == 0


# --- over TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_a_tls_connection_passes_trios_two_way_stream_checks(ca: trustme.CA) -> None:
    server_context, client_context = tls_contexts(ca)

    async def tls_maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        ours, theirs = connection_pair()
        tls = trio.SSLStream(ours, server_context, server_side=True)
        other = trio.SSLStream(theirs, client_context, server_hostname="localhost")
        return TlsConnection(tls, Tally(0.0)), other

    await trio.testing.check_two_way_stream(tls_maker, None)


async def test_an_async_handler_speaks_tls_and_knows_its_peer(
    nursery: trio.Nursery, server_config: ServerConfig, short_tmp: Path, ca: trustme.CA
) -> None:
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = short_tmp / "cert.pem", short_tmp / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    seen: list[Connection] = []

    async def note_and_echo(conn: Connection) -> None:
        seen.append(conn)
        await echo(conn)

    config = attrs.evolve(server_config, tls_cert=str(cert), tls_key=str(key))
    server = await start_in(nursery, config, note_and_echo)
    address = address_of(server, "tcp")
    assert isinstance(address, TcpAddress)
    _, client_context = tls_contexts(ca)
    async with await trio_sock.open_stream(address, tls=client_context) as stream:
        tcp = stream.transport_stream
        await stream.send_all(b"secret")
        assert await stream.receive_some() == b"secret"
        [conn] = seen
        assert isinstance(conn, TlsConnection)
        assert not isinstance(conn, trio.abc.HalfCloseableStream)  # TLS has no half-close
        local = tcp.socket.getsockname()
        assert (conn.address, conn.peer) == (address, TcpAddress(local[0], local[1]))
    await trio.testing.wait_all_tasks_blocked()
    assert server.stats().bytes_in == len(b"secret")  # what the handler saw, not the records
    # The Unix listener of the same server stays plain, and half-closeable.
    async with await open_stream(address_of(server, "unix")) as plain:
        await plain.send_all(b"clear")
        assert await plain.receive_some() == b"clear"
        assert isinstance(seen[1], trio.abc.HalfCloseableStream)


async def test_open_stream_speaks_tls_only_to_tcp(server_config: ServerConfig) -> None:
    with pytest.raises(ValueError, match="TLS is for TCP servers"):
        await trio_sock.open_stream(UnixAddress("/nonexistent/sock"), tls=True)


# --- every promise holds for handlers: departure records, peer policy -----------------------


async def test_a_handlers_client_leaves_a_departure_record_with_its_reason_and_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock.clients")
    async with serving(echo) as server, await open_stream(server.addresses[0]) as stream:
        await stream.send_all(b"12345")
        assert await stream.receive_some() == b"12345"
        await stream.send_eof()
        assert await stream.receive_some() == b""
        await trio.testing.wait_all_tasks_blocked()  # its task has left
    [record] = [r for r in caplog.records if r.name == "trio_sock.clients"]
    fields = record.__dict__
    assert (fields["reason"], fields["bytes_in"], fields["bytes_out"]) == ("done", 5, 5)


async def test_the_peer_policy_turns_a_client_away_before_the_handler_sees_it() -> None:
    called = trio.Event()

    async def never(conn: Connection) -> None:
        called.set()

    async with (
        serving(never, allow_uids=[os.getuid() + 1]) as server,
        await open_stream(server.addresses[0]) as stream,
    ):
        assert await receive_to_eof(stream) == b""  # closed at once
        await trio.testing.wait_all_tasks_blocked()
        assert (server.stats().refused, called.is_set()) == (1, False)
