"""Departure records: one per client at a human rate, a summary beyond ``PER_SECOND``.

``DepartureLog`` is driven directly, then through a real server.  Seconds are
virtual (``autojump_clock``): any number of clients leave within the same
instant, and "the second is over" is exact.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

from tests.helpers import open_stream
from trio_sock import Server, ServerConfig, TcpAddress, UnixAddress, serve
from trio_sock.server.departures import PER_SECOND, DepartureLog

if TYPE_CHECKING:
    from trio_sock.config.addresses import Address

#: More clients than are logged one by one in a second: the rest make a summary.
CROWD = PER_SECOND + 50


def departures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_sock.clients"]


def one_by_one(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records of single clients."""
    return [r for r in departures(caplog) if "reason" in r.__dict__]


def summaries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records that sum up clients not logged one by one."""
    return [r for r in departures(caplog) if "clients" in r.__dict__]


def field(record: logging.LogRecord, name: str) -> Any:  # noqa: ANN401 - any extra= value
    """A structured field of a record (``extra=``), for the JSON log format."""
    return record.__dict__[name]


def reasons_of(caplog: pytest.LogCaptureFixture) -> collections.Counter[str]:
    """Every departure's reason, from the single records and the summaries together."""
    counted = collections.Counter(field(r, "reason") for r in one_by_one(caplog))
    for summary in summaries(caplog):
        counted.update(field(summary, "reasons"))
    return counted


# --- DepartureLog on its own ---------------------------------------------------------------


async def test_at_info_the_first_per_second_departures_of_a_second_get_records_of_their_own(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    log = DepartureLog()
    began = trio.current_time()
    assert [log.will_log("eof") for _ in range(CROWD)] == [True] * PER_SECOND + [False] * 50
    await trio.sleep_until(began + 0.999)
    assert not log.will_log("eof")  # the same second still
    await trio.sleep_until(began + 1.0)
    assert [log.will_log("eof") for _ in range(CROWD)] == [True] * PER_SECOND + [False] * 50


async def test_the_rest_are_summed_up_in_one_record_when_their_second_is_over(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    log = DepartureLog()
    nursery.start_soon(log.summarize)
    began = trio.current_time()
    reasons = ["eof"] * (PER_SECOND + 30) + ["idle timeout"] * 20 + ["Broken pipe"] * 5
    logged = [log.will_log(reason) for reason in reasons]
    assert logged.count(True) == PER_SECOND
    await trio.sleep_until(began + 0.999)
    assert summaries(caplog) == [], "summed up before the second was over"
    await trio.sleep_until(began + 1.0)
    await trio.testing.wait_all_tasks_blocked()
    (summary,) = summaries(caplog)
    assert summary.levelno == logging.INFO
    assert field(summary, "clients") == 55
    assert field(summary, "reasons") == {"eof": 30, "idle timeout": 20, "Broken pipe": 5}
    message = summary.getMessage()
    assert message.startswith("55 more clients left")
    assert "eof=30, idle timeout=20, Broken pipe=5" in message
    await trio.sleep(10)
    assert len(summaries(caplog)) == 1, "summed up twice"


async def test_each_second_with_too_many_departures_gets_its_own_summary(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    log = DepartureLog()
    nursery.start_soon(log.summarize)
    began = trio.current_time()
    first = [log.will_log("eof") for _ in range(CROWD)]
    await trio.sleep_until(began + 1.5)
    second = [log.will_log("idle timeout") for _ in range(PER_SECOND + 70)]
    await trio.sleep_until(began + 10)
    assert first.count(True) == second.count(True) == PER_SECOND
    assert [(field(s, "clients"), field(s, "reasons")) for s in summaries(caplog)] == [
        (50, {"eof": 50}),
        (70, {"idle timeout": 70}),
    ]


async def test_what_is_left_is_summed_up_when_the_summarizer_is_cancelled_early(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    log = DepartureLog()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.summarize)
        began = trio.current_time()
        for _ in range(CROWD):
            log.will_log("eof")
        await trio.sleep(0.5)
        assert summaries(caplog) == []
        nursery.cancel_scope.cancel()
    assert trio.current_time() - began == pytest.approx(0.5)
    (summary,) = summaries(caplog)
    assert (field(summary, "clients"), field(summary, "reasons")) == (50, {"eof": 50})


async def test_at_debug_every_departure_gets_a_record_of_its_own(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_sock")
    log = DepartureLog()
    nursery.start_soon(log.summarize)
    assert all(log.will_log("eof") for _ in range(10 * PER_SECOND))
    await trio.sleep(10)
    assert summaries(caplog) == []


async def test_above_info_no_departure_is_logged_nor_summed_up(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_sock")
    log = DepartureLog()
    nursery.start_soon(log.summarize)
    assert not any(log.will_log("eof") for _ in range(CROWD))
    await trio.sleep(10)
    assert departures(caplog) == []


# --- through a real server -------------------------------------------------------------------


async def start(nursery: trio.Nursery, config: ServerConfig) -> Server:
    # No idle timeout to speak of: only the clients decide when they leave.
    server: Server = await nursery.start(serve, attrs.evolve(config, idle_timeout=1e6))
    return server


def pick(server: Server, kind: type[Address]) -> Address:
    return next(a for a in server.addresses if isinstance(a, kind))


async def served_once(address: Address) -> trio.SocketStream:
    """A client that has had its reply to ``A``: connected and served for sure."""
    stream = await open_stream(address)
    await stream.send_all(b"A")
    assert await stream.receive_some(1) == b"B"
    return stream


def reset_on_close(stream: trio.SocketStream) -> None:
    """Make the next close a TCP reset (RST) instead of an orderly EOF."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def crowd_leaves(address: Address, count: int = CROWD) -> float:
    """``count`` clients connect, are served, then all leave in the same virtual
    instant; returns that instant, once the server has seen every one leave."""
    streams = [await served_once(address) for _ in range(count)]
    left_at = trio.current_time()
    for stream in streams:
        await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == left_at
    return left_at


async def test_a_crowd_leaving_at_once_gets_per_second_records_then_one_summary(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    server = await start(nursery, server_config)
    left_at = await crowd_leaves(pick(server, UnixAddress))
    assert server.active_clients == 0
    assert len(one_by_one(caplog)) == PER_SECOND
    assert summaries(caplog) == [], "summed up before the second was over"
    await trio.sleep_until(left_at + 1.0)
    await trio.testing.wait_all_tasks_blocked()
    (summary,) = summaries(caplog)
    assert field(summary, "clients") == CROWD - PER_SECOND
    assert reasons_of(caplog) == {"eof": CROWD}
    # Each client is in one record or in the sum, and none in two records.
    numbers = {field(r, "client") for r in one_by_one(caplog)}
    assert len(numbers) == PER_SECOND


async def test_the_summary_counts_each_reason_of_a_crowd_that_left_in_different_ways(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    server = await start(nursery, server_config)
    streams = [await served_once(pick(server, TcpAddress)) for _ in range(CROWD)]
    left_at = trio.current_time()
    for number, stream in enumerate(streams):
        if number % 2:
            reset_on_close(stream)
        await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep_until(left_at + 1.0)
    await trio.testing.wait_all_tasks_blocked()
    assert len(one_by_one(caplog)) == PER_SECOND
    (summary,) = summaries(caplog)
    assert field(summary, "clients") == CROWD - PER_SECOND
    assert sum(field(summary, "reasons").values()) == CROWD - PER_SECOND
    reset = os.strerror(errno.ECONNRESET)
    assert reasons_of(caplog) == {"eof": CROWD // 2, reset: CROWD - CROWD // 2}


async def test_at_debug_every_client_of_a_crowd_gets_a_record_of_its_own(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_sock")
    server = await start(nursery, server_config)
    left_at = await crowd_leaves(pick(server, UnixAddress), 3 * PER_SECOND)
    await trio.sleep_until(left_at + 5)
    records = one_by_one(caplog)
    assert len(records) == 3 * PER_SECOND
    assert len({field(r, "client") for r in records}) == 3 * PER_SECOND
    assert all(r.levelno == logging.INFO for r in records)
    assert summaries(caplog) == []


@pytest.mark.parametrize("how", ["stop", "cancel"])
async def test_the_summary_is_logged_at_shutdown_if_the_second_is_not_over(
    autojump_clock: trio.testing.MockClock,
    server_config: ServerConfig,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sock")
    async with trio.open_nursery() as nursery:
        server = await start(nursery, server_config)
        left_at = await crowd_leaves(pick(server, UnixAddress))
        assert summaries(caplog) == []
        if how == "stop":
            server.stop()
        else:
            nursery.cancel_scope.cancel()
    assert trio.current_time() < left_at + 1.0
    (summary,) = summaries(caplog)
    assert field(summary, "clients") == CROWD - PER_SECOND
    assert reasons_of(caplog) == {"eof": CROWD}


async def test_a_learners_handful_of_clients_all_get_records_of_their_own(
    server_config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    # The real clock: a learner's clients, as a learner runs them.
    caplog.set_level(logging.INFO, logger="trio_sock")
    async with trio.open_nursery() as nursery:
        server = await start(nursery, server_config)
        for number in range(5):
            kind = UnixAddress if number % 2 else TcpAddress
            stream = await open_stream(pick(server, kind))
            async with stream:
                await stream.send_all(b"hello")
                await stream.send_eof()
                assert await stream.receive_some(100) == b"ifmmp"
                assert await stream.receive_some(1) == b""
        await trio.testing.wait_all_tasks_blocked()
        server.stop()
    records = one_by_one(caplog)
    assert [field(r, "client") for r in records] == [1, 2, 3, 4, 5]
    assert [field(r, "transport") for r in records] == ["tcp", "unix"] * 2 + ["tcp"]
    assert all(field(r, "reason") == "eof" for r in records)
    assert all((field(r, "bytes_in"), field(r, "bytes_out")) == (5, 5) for r in records)
    assert all("in=5 out=5" in r.getMessage() for r in records)
    assert summaries(caplog) == []
