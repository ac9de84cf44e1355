"""``server --handler MODULE:NAME``: a user's module in the current directory, served.

Real ``python -m trio_sock server`` processes in a temporary directory holding
the user's module, as a user would run them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from tests.cli.test_cli import assert_usage_error
from tests.helpers import assert_user_error, exchange, ready, run_cli, wait_for_log
from tests.listen.test_systemd import free_tcp_port, needs_socket_activate, socket_activate
from trio_sock.config.addresses import TcpAddress, UnixAddress

if TYPE_CHECKING:
    from tests.helpers import Processes

#: A user's module: an async handler, a sans-I/O class, and things that are neither.
USER_MODULE: Final = """\
import trio_sock


async def echo(conn: trio_sock.Connection) -> None:
    async for data in conn:
        await conn.send_all(data)


class Upper:
    done = False

    def data_received(self, data: bytes) -> bytes:
        return data.upper()


class Nested:
    class Inner(Upper):
        pass


not_a_handler = 42
"""
PROG: Final = "python -m trio_sock server"
ROOT: Final = Path(__file__).resolve().parents[2]


@pytest.fixture
def user_module(short_tmp: Path) -> Path:
    path = short_tmp / "mine.py"
    path.write_text(USER_MODULE)
    (short_tmp / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (short_tmp / "typo.py").write_text("def oops(:\n")
    return path


@pytest.mark.parametrize(
    ("name", "sent", "expected"),
    [("echo", b"Hello", b"Hello"), ("Upper", b"Hello", b"HELLO"), ("Nested.Inner", b"a", b"A")],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_handler_from_the_current_directory_is_served_on_every_listener(
    procs: Processes, user_module: Path, name: str, sent: bytes, expected: bytes, workers: str
) -> None:
    path = str(user_module.parent / "sock")
    server = procs.server(
        "--unix", path, "--tcp", "0", "--handler", f"mine:{name}", "--workers", workers
    )
    for address in (server.unix(), server.tcp()):
        assert exchange(address, sent) == expected
    assert server.stop() == 0
    assert "Traceback" not in server.stderr()


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("nowhere:x", ["nowhere:x", "no module named 'nowhere'"]),
        ("broken:x", ["broken:x", "RuntimeError('boom at import')"]),
        ("typo:x", ["typo:x", "syntax error in", "typo.py, line 1"]),
        ("mine:missing", ["mine:missing", "mine has no 'missing'"]),
        ("mine:not_a_handler", ["mine:not_a_handler", "not 42"]),
    ],
)
def test_a_handler_that_cannot_be_loaded_is_one_line_and_exit_1(
    short_tmp: Path, user_module: Path, spec: str, fragments: list[str]
) -> None:
    result = run_cli("server", "--unix", "sock", "--tcp", "0", "--handler", spec, cwd=short_tmp)
    assert_user_error(result, *fragments, starts_with="trio_sock server: error: ")
    assert not (short_tmp / "sock").exists()  # nothing listened


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--handler", "mine"], "must be MODULE:NAME"),
        (["--handler", "mine:echo:x"], "must be MODULE:NAME"),
        (["--handler", "mine:echo", "--once"], "--once and --delay belong to the increment"),
        (["--handler", "mine:echo", "--delay", "1"], "--once and --delay belong to the increment"),
    ],
)
def test_a_malformed_handler_or_one_with_once_or_delay_is_a_usage_error(
    short_tmp: Path, user_module: Path, args: list[str], fragment: str
) -> None:
    error = assert_usage_error(run_cli("server", *args, cwd=short_tmp), PROG)
    assert fragment in error


def test_a_users_handler_module_passes_mypy_strict(short_tmp: Path, user_module: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is a test dependency: pip install -e '.[test]'")
    # An editable install is an import hook mypy cannot follow: point it at the source,
    # with its py.typed, as an installed wheel would be seen.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user_module)],
        cwd=short_tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_socket_activate
def test_a_handler_is_served_on_sockets_systemd_passes(procs: Processes, user_module: Path) -> None:
    path, port = procs.cwd / "s", free_tcp_port()
    argv = socket_activate(
        str(path), f"127.0.0.1:{port}", names=["u", "t"], server_args=["--handler", "mine:Upper"]
    )
    child = procs.spawn(argv)
    wait_for_log(child, f"Listening on 127.0.0.1:{port} as 4.")
    assert exchange(UnixAddress(str(path)), b"first") == b"FIRST"  # starts the server
    ready(child)
    assert exchange(TcpAddress("127.0.0.1", port), b"then tcp") == b"THEN TCP"
