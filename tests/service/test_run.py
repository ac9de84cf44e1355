"""``trio_sock.run``: a user's program that serves as ``python -m trio_sock server`` does.

The programs are real processes, as a user would write and run them: a script
that builds a ``ServerConfig`` and calls ``trio_sock.run`` with a handler.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Final

import pytest

import trio_sock
from tests.cli.test_handler_option import USER_MODULE
from tests.helpers import exchange, ready, wait_for_log
from trio_sock.config.addresses import UnixAddress
from trio_sock.config.server import ServerConfig

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers import Processes, ServerProcess

#: A user's program: serve ``mine``'s handler named by argv[2] (or the string
#: itself, when it holds a colon) with argv[1] workers.
PROGRAM: Final = """\
import os
import sys

import mine
import trio_sock

workers, name = int(sys.argv[1]), sys.argv[2]
handler = name if ":" in name else eval("mine." + name)
unix = trio_sock.UnixAddress(os.path.abspath("sock"))
config = trio_sock.ServerConfig(
    addresses=[unix, trio_sock.TcpAddress("127.0.0.1", 0)], workers=workers
)
trio_sock.run(config, handler)
print("run returned", flush=True)
"""


def start_program(procs: Processes, workers: int, name: str) -> ServerProcess:
    (procs.cwd / "mine.py").write_text(USER_MODULE)
    (procs.cwd / "app.py").write_text(PROGRAM)
    return ready(procs.spawn([sys.executable, "app.py", str(workers), name]))


@pytest.mark.parametrize(
    ("name", "sent", "expected"),
    [("echo", b"Hello", b"Hello"), ("Nested.Inner", b"a", b"A"), ("mine:Upper", b"b", b"B")],
)
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_a_handler_until_a_signal_and_then_returns(
    procs: Processes, workers: int, name: str, sent: bytes, expected: bytes, signum: int
) -> None:
    server = start_program(procs, workers, name)
    for address in (server.unix(), server.tcp()):
        assert exchange(address, sent) == expected
    server.send_signal(signum)
    assert server.process.stdout is not None
    assert server.process.stdout.read().decode() == "run returned\n"
    assert server.wait() == 0
    assert not (procs.cwd / "sock").exists()
    assert "Traceback" not in server.stderr()


def test_run_logs_the_stats_line_on_sigusr1(procs: Processes) -> None:
    (procs.cwd / "logged.py").write_text(
        "import logging, runpy\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s %(message)s')\n"
        "runpy.run_path('app.py', run_name='__main__')\n"
    )
    (procs.cwd / "mine.py").write_text(USER_MODULE)
    (procs.cwd / "app.py").write_text(PROGRAM)
    server = ready(procs.spawn([sys.executable, "logged.py", "1", "echo"]))
    assert exchange(server.unix(), b"x") == b"x"
    server.send_signal(signal.SIGUSR1)
    stderr = wait_for_log(server, "trio_sock.stats stats ")
    assert "accepted=1" in stderr
    assert server.stop() == 0


async def handler_in_the_test(conn: trio_sock.Connection) -> None:
    await conn.send_all(b"")


def nested() -> object:
    async def handle(conn: trio_sock.Connection) -> None:
        await conn.send_all(b"")

    return handle


async def impostor(conn: trio_sock.Connection) -> None:
    await conn.send_all(b"")


# Its name leads to another object: what the parent checks is that a worker
# importing the name gets this very handler.
impostor.__qualname__ = impostor.__name__ = "handler_in_the_test"


@pytest.mark.parametrize(
    "handler", [lambda conn: None, nested(), impostor], ids=["lambda", "nested", "impostor"]
)
def test_workers_need_a_handler_they_can_import_by_name(short_tmp: Path, handler: object) -> None:
    config = ServerConfig(addresses=[UnixAddress(str(short_tmp / "sock"))], workers=2)
    with pytest.raises(ValueError, match="workers import the handler for themselves"):
        trio_sock.run(config, handler)  # type: ignore[arg-type]
    assert not (short_tmp / "sock").exists()  # refused before anything listened


def test_a_handler_defined_in_the_script_being_run_is_refused_with_workers(
    procs: Processes,
) -> None:
    (procs.cwd / "script.py").write_text(
        "import trio_sock\n"
        "async def handle(conn: trio_sock.Connection) -> None:\n"
        "    pass\n"
        "config = trio_sock.ServerConfig(addresses=[trio_sock.UnixAddress('sock')], workers=2)\n"
        "try:\n"
        "    trio_sock.run(config, handle)\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    child = procs.spawn([sys.executable, "script.py"])
    assert child.process.wait(timeout=30) == 0
    assert child.process.stdout is not None
    out = child.process.stdout.read().decode()
    assert "not the script being run" in out
    assert not (procs.cwd / "sock").exists()


def test_a_server_that_cannot_start_raises_its_error_as_itself(short_tmp: Path) -> None:
    config = ServerConfig(addresses=[UnixAddress(str(short_tmp / "missing" / "sock"))])
    with pytest.raises(trio_sock.ListenError, match="missing"):
        trio_sock.run(config)


def test_a_handler_spec_that_cannot_be_loaded_raises_handler_error(short_tmp: Path) -> None:
    config = ServerConfig(addresses=[UnixAddress(str(short_tmp / "sock"))])
    with pytest.raises(trio_sock.HandlerError, match="nowhere_at_all:x"):
        trio_sock.run(config, "nowhere_at_all:x")
    assert not (short_tmp / "sock").exists()
