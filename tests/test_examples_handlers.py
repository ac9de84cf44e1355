"""The handler examples (echo, kv, chat): kv's protocol synchronously, h11-style, and
each one served for real, by ``trio_sock.testing.serving`` and by ``--handler``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
import trio

from tests.helpers import exchange
from trio_sock import open_stream
from trio_sock.testing import serving

if TYPE_CHECKING:
    from types import ModuleType

    from tests.helpers import Processes

EXAMPLES: Final = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    """``examples/NAME.py`` as a module, as ``--handler NAME:...`` imports it."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kv = load("kv")
chat = load("chat")
echo = load("echo")


# --- kv: a pure protocol, tested without any I/O -------------------------------------------------


def test_kv_answers_each_whole_line_and_keeps_a_partial_one() -> None:
    protocol = kv.KV({})
    assert protocol.data_received(b"SET a 1\nGET a\nGE") == b"OK\nVALUE 1\n"
    assert protocol.data_received(b"T b\r\n") == b"NOT_FOUND\n"
    assert protocol.data_received(b"DEL a\nDEL a\n") == b"DELETED\nNOT_FOUND\n"
    assert protocol.done is False


def test_kv_is_done_after_quit_and_ignores_what_follows() -> None:
    protocol = kv.KV({})
    assert protocol.data_received(b"QUIT\nSET a 1\n") == b"BYE\n"
    assert protocol.done is True
    assert protocol.eof_received() == b""


@pytest.mark.parametrize("line", [b"", b"SET a", b"GET", b"GET a b", b"FLY away", b"QUIT now"])
def test_kv_explains_a_command_it_cannot_read(line: bytes) -> None:
    assert kv.KV({}).data_received(line + b"\n").startswith(b"ERROR ")


def test_kv_takes_a_last_command_without_its_newline_and_cuts_an_endless_line() -> None:
    protocol = kv.KV({b"k": b"v"})
    assert protocol.data_received(b"GET k") == b""
    assert protocol.eof_received() == b"VALUE v\n"
    flood = kv.KV({})
    assert flood.data_received(b"x" * (kv.MAX_LINE + 1)) == b"ERROR line too long\n"
    assert flood.done is True


def test_kv_clients_share_one_store() -> None:
    store: dict[bytes, bytes] = {}
    kv.KV(store).data_received(b"SET shared yes\n")
    assert kv.KV(store).data_received(b"GET shared\n") == b"VALUE yes\n"


# --- served for real ---------------------------------------------------------------------------


async def test_kv_served_closes_after_quit() -> None:
    async with serving(kv.KV) as server, await open_stream(server.addresses[0]) as stream:
        await stream.send_all(b"SET x 42\nGET x\nQUIT\n")
        received = b""
        while chunk := await stream.receive_some():
            received += chunk
        assert received == b"OK\nVALUE 42\nBYE\n"


async def test_echo_served_sends_every_byte_back() -> None:
    async with serving(echo.handle) as server, await open_stream(server.addresses[1]) as stream:
        await stream.send_all(b"round trip")
        assert await stream.receive_some() == b"round trip"


async def read_line(stream: trio.abc.ReceiveStream, pending: bytearray) -> bytes:
    while b"\n" not in pending:
        chunk = await stream.receive_some()
        assert chunk, "the server closed the connection"
        pending += chunk
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line


async def test_chat_gives_each_line_to_every_other_client() -> None:
    async with serving(chat.handle) as server:
        address = server.addresses[0]
        async with await open_stream(address) as ann, await open_stream(address) as bob:
            await trio.testing.wait_all_tasks_blocked()  # both have joined the room
            await ann.send_all(b"hello bob\n")
            line = await read_line(bob, bytearray())
            assert line.endswith(b": hello bob")
            await bob.send_all(b"hi\n")
            assert (await read_line(ann, bytearray())).endswith(b": hi")


async def test_a_chat_client_that_stops_reading_is_dropped_and_the_others_get_everything() -> None:
    async with serving(chat.handle) as server:
        address = server.addresses[0]
        async with (
            await open_stream(address) as talker,
            await open_stream(address) as reader,
            await open_stream(address),
        ):
            await trio.testing.wait_all_tasks_blocked()
            members = len(chat.ROOM.members)
            line = b"x" * 4000 + b"\n"
            pending = bytearray()
            sent = 0
            # Bounded: the sleeper's socket buffers and its BACKLOG lines fill long before.
            while len(chat.ROOM.members) == members and sent < 10_000:
                await talker.send_all(line)
                sent += 1
                assert (await read_line(reader, pending)).endswith(b"x" * 4000)
            assert len(chat.ROOM.members) == members - 1, "the sleeper was never dropped"
            await talker.send_all(b"after\n")
            assert (await read_line(reader, pending)).endswith(b": after")


def test_the_handler_examples_serve_from_the_command_line(procs: Processes) -> None:
    for name in ("echo.py", "kv.py", "chat.py"):
        (procs.cwd / name).write_text((EXAMPLES / name).read_text())
    server = procs.server("--unix", str(procs.cwd / "kv.sock"), "--tcp", "0", "--handler", "kv:KV")
    assert exchange(server.unix(), b"SET a 1\nGET a\n") == b"OK\nVALUE 1\n"
    assert server.stop() == 0
    server = procs.server(
        "--unix", str(procs.cwd / "echo.sock"), "--tcp", "0", "--handler", "echo:handle"
    )
    assert exchange(server.tcp(), b"as sent") == b"as sent"
    assert server.stop() == 0
