"""The report pipe: a worker's figures by listener, as its parent reads them (``--metrics``)."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

from tests.helpers import EVENT_TIMEOUT, open_stream
from trio_sock import ServerConfig, ServerStats
from trio_sock.workers.process import WorkerProcess
from trio_sock.workers.worker import WorkerRole, read_report_line, report_line, send_report

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trio_sock import Server

NAMES = [field.name for field in attrs.fields(ServerStats)]


def stats(base: int) -> ServerStats:
    return ServerStats(**{name: base + i for i, name in enumerate(NAMES)})


@attrs.frozen
class FakeServer:
    figures: dict[str, ServerStats]

    def stats_by_listener(self) -> dict[str, ServerStats]:
        return self.figures


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    reading, writing = os.pipe()
    yield reading, writing
    for fd in (reading, writing):
        with contextlib.suppress(OSError):  # closed by the test already
            os.close(fd)


async def test_a_report_line_reads_back_as_the_figures_of_a_real_server(server: Server) -> None:
    async with await open_stream(server.addresses[0]) as stream:
        await stream.send_all(b"abc")
        assert await stream.receive_some() == b"bcd"
        line = report_line(server)
        assert line.endswith(b"\n")
        assert b"\n" not in line[:-1]
        expected = {str(a): s for a, s in server.stats_by_listener().items()}
        assert read_report_line(line) == expected
        assert expected[str(server.addresses[0])].bytes_in == 3


@pytest.mark.parametrize("line", [b"", b"[1]", b'{"unix:s": {"accepted": 1}}', b'{"unix:s": 7'])
def test_a_line_that_is_no_report_is_an_error(line: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        read_report_line(line)


def test_the_report_pipe_reaches_a_worker_with_its_role(monkeypatch: pytest.MonkeyPatch) -> None:
    role = WorkerRole(3, ServerConfig(), report_fd=42)
    monkeypatch.setenv("TRIO_SOCK_WORKER", role.to_environment())
    assert WorkerRole.from_environment() == role


async def test_the_parent_keeps_the_latest_whole_report(pipe: tuple[int, int]) -> None:
    reading, writing = pipe
    worker = WorkerProcess(1, None, -1, trio.lowlevel.FdStream(os.dup(reading)))  # type: ignore[arg-type]
    first = {"unix:s": stats(1), "tcp:127.0.0.1:1": stats(20)}
    second = {"unix:s": stats(300)}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.read_reports)
        with trio.fail_after(EVENT_TIMEOUT):
            send_report(writing, FakeServer(first))  # type: ignore[arg-type]
            await worker.wait_for_report(1)
            assert (worker.received, worker.latest) == (1, first)
            line = report_line(FakeServer(second))  # type: ignore[arg-type]
            os.write(writing, b'{"torn\n' + line[:10])  # a torn line, then one in two pieces
            await trio.testing.wait_all_tasks_blocked()
            assert (worker.received, worker.latest) == (1, first)
            os.write(writing, line[10:])
            await worker.wait_for_report(2)
            assert (worker.received, worker.latest) == (2, second)
            os.close(writing)  # the worker exited
            await worker.ended.wait()
            await worker.wait_for_report(3)  # returns: no report can come any more
    assert worker.received == 2
    await worker.reports.aclose()


def test_a_report_to_a_parent_that_is_gone_is_lost_quietly(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    reading, writing = pipe
    os.close(reading)
    caplog.set_level(logging.DEBUG, "trio_sock.workers")
    send_report(writing, FakeServer({"unix:s": stats(1)}))  # type: ignore[arg-type]  # EPIPE
    assert [r.getMessage() for r in caplog.records] == [
        "a report to the parent was lost: Broken pipe"
    ]
