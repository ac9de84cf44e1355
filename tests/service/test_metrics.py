"""``--metrics``: the figures in Prometheus' text format, and the endpoint that serves them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import trio_sock.service.metrics_endpoint
from trio_sock import ServerStats, TcpAddress
from trio_sock.errors import ListenError
from trio_sock.service.metrics import Figures, exposition
from trio_sock.service.metrics_endpoint import (
    CONTENT_TYPE,
    REQUEST_TIMEOUT,
    open_metrics_listeners,
    serve_metrics,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

NAMES = [field.name for field in attrs.fields(ServerStats)]


def stats(base: int) -> ServerStats:
    """Figures that differ field by field, so that a figure shown under the wrong name fails."""
    return ServerStats(**{name: base + i for i, name in enumerate(NAMES)})


#: Every sample of a scrape, by name and sorted labels.
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Series:
    """Every sample of a scrape, by name and labels, as Prometheus' own parser reads it."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(name: str) -> str:
    """The sample name of a figure: counters end in ``_total``, the gauge does not."""
    return f"trio_sock_{name}" if name == "active" else f"trio_sock_{name}_total"


# --- the format --------------------------------------------------------------------------------


def test_every_figure_of_the_stats_line_is_a_metric_by_listener() -> None:
    figures = Figures({"unix:/run/s": stats(100), "tcp:127.0.0.1:9734": stats(200)})
    found = samples(exposition(figures).decode())
    expected = {
        (metric(name), (("listener", listener),)): getattr(figures.totals[listener], name)
        for name in NAMES
        for listener in figures.totals
    }
    assert found == expected


def test_with_workers_each_workers_figures_are_shown_too() -> None:
    one = {"unix:/run/s": stats(1)}
    two = {"unix:/run/s": stats(50)}
    figures = Figures({"unix:/run/s": stats(1000)}, {1: one, 2: two})
    found = samples(exposition(figures).decode())
    for name in NAMES:
        assert found[(metric(name), (("listener", "unix:/run/s"),))] == 1000 + NAMES.index(name)
        for number, mine in ((1, one), (2, two)):
            labels = (("listener", "unix:/run/s"), ("worker", str(number)))
            worker_metric = metric(name).replace("trio_sock_", "trio_sock_worker_")
            assert found[(worker_metric, labels)] == getattr(mine["unix:/run/s"], name)
    assert len(found) == len(NAMES) * 3


def test_the_types_are_counters_but_for_active_clients() -> None:
    text = exposition(Figures({"unix:s": stats(0)})).decode()
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types == {
        f"trio_sock_{name}": "gauge" if name == "active" else "counter" for name in NAMES
    }


# --- the endpoint ------------------------------------------------------------------------------


async def start_endpoint(
    nursery: trio.Nursery, collect: Callable[[], Awaitable[Figures]]
) -> tuple[str, int]:
    listeners = await open_metrics_listeners(TcpAddress("127.0.0.1", 0))
    nursery.start_soon(serve_metrics, listeners, collect)
    host, port = listeners[0].socket.getsockname()[:2]
    return host, port


async def request(where: tuple[str, int], raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``raw``; the status line, headers and body of the response, read to EOF."""
    async with await trio.open_tcp_stream(*where) as stream:
        await stream.send_all(raw)
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert int(headers["Content-Length"]) == len(body) or raw.startswith(b"HEAD")
    return status, headers, body


async def figures_now() -> Figures:
    return Figures({"unix:s": stats(7)})


@attrs.define
class Counted:
    """``figures_now``, counting the scrapes that asked for it."""

    asked: int = 0

    async def __call__(self) -> Figures:
        self.asked += 1
        return await figures_now()


async def test_get_metrics_answers_in_the_text_format(nursery: trio.Nursery) -> None:
    where = await start_endpoint(nursery, figures_now)
    status, headers, body = await request(where, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Type"] == CONTENT_TYPE
    assert headers["Connection"] == "close"
    assert body == exposition(await figures_now())
    # A query string is no other page; HTTP/1.0 and bare newlines are understood too.
    status, _, again = await request(where, b"GET /metrics?x=1 HTTP/1.0\n\n")
    assert (status, again) == ("HTTP/1.1 200 OK", body)


async def test_head_gives_the_length_without_the_body(nursery: trio.Nursery) -> None:
    where = await start_endpoint(nursery, figures_now)
    status, headers, body = await request(where, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert (status, body) == ("HTTP/1.1 200 OK", b"")
    assert int(headers["Content-Length"]) == len(exposition(await figures_now()))


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405 Method Not Allowed"),
        (b"hello\r\n\r\n", "400 Bad Request"),
        (b"GET /metrics SMTP/1.0\r\n\r\n", "400 Bad Request"),
    ],
)
async def test_anything_else_gets_an_error_and_no_figures(
    nursery: trio.Nursery, raw: bytes, status: str
) -> None:
    collect = Counted()
    where = await start_endpoint(nursery, collect)
    got, headers, body = await request(where, raw)
    assert got == f"HTTP/1.1 {status}"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert b"trio_sock_" not in body
    assert body.endswith(b"\n")
    assert collect.asked == 0


async def test_a_head_too_long_is_refused_without_collecting(nursery: trio.Nursery) -> None:
    collect = Counted()
    where = await start_endpoint(nursery, collect)
    head = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000
    try:
        status, _, body = await request(where, head)
    except trio.BrokenResourceError:  # closed with bytes unread: the kernel resets it
        pass
    else:
        assert (status, body) == ("HTTP/1.1 400 Bad Request", b"not an HTTP/1 request\n")
    assert collect.asked == 0
    status, _, _ = await request(where, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert (status, collect.asked) == ("HTTP/1.1 200 OK", 1)


async def test_a_slow_scraper_is_dropped_and_others_are_served(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    where = await start_endpoint(nursery, figures_now)
    async with await trio.open_tcp_stream(*where) as slow:
        await slow.send_all(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line
        status, _, _ = await request(where, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        start = trio.current_time()
        assert await slow.receive_some() == b""
        assert trio.current_time() - start == pytest.approx(REQUEST_TIMEOUT, abs=0.1)


async def test_a_failure_to_collect_ends_that_request_only(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def collect() -> Figures:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return await figures_now()

    where = await start_endpoint(nursery, collect)
    status, _, body = await request(where, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert body == b"the figures could not be collected: see the server's log\n"
    status, _, _ = await request(where, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failed] == ["collecting the metrics failed"]
    assert failed[0].exc_info is not None
    assert "boom" in str(failed[0].exc_info[1])


async def test_a_port_in_use_is_a_listen_error_naming_the_option(nursery: trio.Nursery) -> None:
    where = await start_endpoint(nursery, figures_now)
    with pytest.raises(ListenError, match=r"127\.0\.0\.1.*in use.* with --metrics$") as raised:
        await open_metrics_listeners(TcpAddress(*where))
    assert raised.value.errno is not None


async def test_scrapers_beyond_the_limit_are_closed_at_once(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trio_sock.service.metrics_endpoint, "MAX_SCRAPERS", 2)
    where = await start_endpoint(nursery, figures_now)
    holders = [await trio.open_tcp_stream(*where) for _ in range(2)]
    await trio.testing.wait_all_tasks_blocked()  # both hold a slot, reading their request
    with trio.fail_after(5):
        async with await trio.open_tcp_stream(*where) as third:
            # No room: closed before a byte is read (so sending none, lest it be reset).
            assert await third.receive_some() == b""
    await holders[0].aclose()
    await trio.testing.wait_all_tasks_blocked()  # its slot is given back
    status, _, _ = await request(where, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    await holders[1].aclose()
