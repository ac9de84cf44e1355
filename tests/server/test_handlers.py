"""Sans-I/O protocol classes as handlers: the fast path and the stream path serve any.

Each test runs ``serve`` in the test's nursery with a small protocol class and
talks to it over real Unix and TCP sockets.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

from tests.helpers import address_of, open_stream, receive_to_eof, start_in
from trio_sock import ServerConfig, TcpAddress, UnixAddress, serve
from trio_sock.protocol import Increment
from trio_sock.server.stats import Tally
from trio_sock.server.stream import _reply_over_stream
from trio_sock.testing import serving

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio_sock.server.connection import Connection
    from trio_sock.server.handlers import Handler, SansIOProtocol

TRANSPORTS = ["unix", "tcp"]


class Echo:
    """The smallest sans-I/O protocol: every chunk comes back as it is."""

    done = False

    def data_received(self, data: bytes) -> bytes:
        return data


class UpToNewline:
    """Echoes until a newline, then is done: the server closes after the reply."""

    def __init__(self) -> None:
        self.done = False

    def data_received(self, data: bytes) -> bytes:
        line, newline, _ = data.partition(b"\n")
        self.done = bool(newline)
        return line + newline


class CountAtEof:
    """Says nothing until the client's EOF, then how many bytes it sent."""

    done = False

    def __init__(self) -> None:
        self.count = 0

    def data_received(self, data: bytes) -> bytes:
        self.count += len(data)
        return b""

    def eof_received(self) -> bytes:
        return b"%d\n" % self.count


class Broken:
    """A handler with a bug on its first byte ``!``."""

    done = False

    def data_received(self, data: bytes) -> bytes:
        if b"!" in data:
            raise RuntimeError("a bug in the handler")
        return data


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_sans_io_class_replies_to_every_chunk_until_eof(transport: str) -> None:
    async with serving(Echo) as server, await open_stream(address_of(server, transport)) as stream:
        for message in (b"hello", b"\x00\xff", b"x" * 100_000):
            await stream.send_all(message)
            got = b""
            while len(got) < len(message):
                got += await stream.receive_some()
            assert got == message
        await stream.send_eof()
        assert await stream.receive_some() == b""


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_done_closes_the_connection_once_the_last_reply_is_sent(
    nursery: trio.Nursery, server_config: ServerConfig, transport: str
) -> None:
    server = await start_in(nursery, server_config, UpToNewline)
    async with await open_stream(address_of(server, transport)) as stream:
        await stream.send_all(b"first ")
        assert await stream.receive_some() == b"first "
        await stream.send_all(b"line\nand more")
        assert await receive_to_eof(stream) == b"line\n"  # then the server's EOF


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_eof_received_gets_the_last_word_and_an_empty_reply_sends_nothing(
    nursery: trio.Nursery, server_config: ServerConfig, transport: str
) -> None:
    server = await start_in(nursery, server_config, CountAtEof)
    async with await open_stream(address_of(server, transport)) as stream:
        await stream.send_all(b"a" * 70_000)
        await stream.send_eof()
        # All of it: had an empty reply sent anything, it would come first.
        assert await receive_to_eof(stream) == b"70000\n"


async def test_a_handlers_exception_ends_its_client_only_logged_with_its_traceback(
    nursery: trio.Nursery, server_config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="trio_sock.server")
    server = await start_in(nursery, server_config, Broken)
    address = address_of(server, "unix")
    async with await open_stream(address) as bystander, await open_stream(address) as culprit:
        await culprit.send_all(b"!")
        assert await receive_to_eof(culprit) == b""  # closed, not hung
        await bystander.send_all(b"still here")
        assert await bystander.receive_some() == b"still here"
    [record] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.exc_info is not None
    assert "a bug in the handler" in str(record.exc_info[1])
    assert server.stats().failed == 1


@pytest.mark.parametrize(
    ("protocol", "sent", "expected", "reason"),
    [
        (UpToNewline, [b"ab\ncd"], b"ab\n", "done"),
        (CountAtEof, [b"abc", b"de"], b"5\n", "eof"),
    ],
)
async def test_the_stream_path_gives_a_protocol_its_done_and_its_eof(
    protocol: Callable[[], SansIOProtocol], sent: list[bytes], expected: bytes, reason: str
) -> None:
    client, server_side = trio.testing.memory_stream_pair()
    tally = Tally(0.0)

    async def client_side() -> None:
        for chunk in sent:
            await client.send_all(chunk)
        await client.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        got = await _reply_over_stream(
            server_side, ServerConfig(), tally, protocol(), counted=False
        )
    await server_side.aclose()
    assert got == reason
    assert await receive_to_eof(client) == expected
    assert tally.sent == len(expected)


def test_the_increment_is_a_sans_io_class() -> None:
    protocol = Increment()
    assert protocol.data_received(b"AZ\xff") == b"B[\x00"
    assert protocol.eof_received() == b""
    assert protocol.done is False


async def test_what_is_not_a_handler_is_refused_before_anything_listens(
    server_config: ServerConfig,
) -> None:
    for wrong in (42, Increment(), "Echo"):
        with pytest.raises(TypeError, match=repr(wrong).replace("(", r"\(").replace(")", r"\)")):
            await serve(server_config, wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="increment protocol"):
        await serve(attrs.evolve(server_config, once=True), Echo)


async def test_serving_runs_a_handler_on_a_fresh_socket_and_a_free_port_then_stops() -> None:
    async with serving(Echo, idle_timeout=5.0) as server:
        unix, tcp = server.addresses
        assert isinstance(unix, UnixAddress)
        assert isinstance(tcp, TcpAddress)
        assert tcp.port != 0
        assert await trio.Path(unix.path).exists()
        for address in server.addresses:
            async with await open_stream(address) as stream:
                await stream.send_all(b"ping")
                assert await stream.receive_some() == b"ping"
    # The socket file and its directory are gone.
    assert not await trio.Path(unix.path).parent.exists()


async def test_serve_refuses_workers_it_would_not_run(server_config: ServerConfig) -> None:
    with pytest.raises(ValueError, match="workers=2 would be ignored"):
        await serve(attrs.evolve(server_config, workers=2))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["sans-io", "async"])
async def test_closing_when_done_never_resets_away_the_last_reply(
    transport: str, kind: str
) -> None:
    async def first_line(conn: Connection) -> None:
        data = await conn.receive_some()
        await conn.send_all(data.partition(b"\n")[0] + b"\n")

    handler: Handler = UpToNewline if kind == "sans-io" else first_line
    async with serving(handler) as server, trio.open_nursery() as nursery:
        stream = await open_stream(address_of(server, transport))

        async def send_more_than_is_read() -> None:
            # The server reads one chunk, replies, and is done with input still unread:
            # closing then would make the kernel reset the connection.
            # Ended by the server's close, or by ours once the reply is in.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(b"line\n" + b"x" * 300_000)

        nursery.start_soon(send_more_than_is_read)
        async with stream:
            assert await receive_to_eof(stream) == b"line\n"
