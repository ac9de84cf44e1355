"""``--metrics [HOST:]PORT``: an HTTP endpoint that answers ``GET /metrics``.

A scraper asks every few seconds, one request per connection or a few, so the
endpoint is the smallest HTTP/1.1 that serves it: read the request head (8 KiB at
most, within ``REQUEST_TIMEOUT``), answer, close.  It runs in the serving process
beside the server, in its own tasks: a scraper that misbehaves, or a bug in
collecting the figures, ends that request and never the server.
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from trio_sock.listen.tcp import open_tcp_listeners

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from trio_sock.config.addresses import TcpAddress
    from trio_sock.service.metrics import Figures

_log = logging.getLogger("trio_sock.service")

#: A scraper that has not sent its whole request in this long is dropped.
REQUEST_TIMEOUT: Final = 10.0
#: A request head longer than this is no scrape.
MAX_HEAD: Final = 8192
#: Scrapers served at once; one more is closed at once, so that a flood of them can
#: take neither the server's descriptors nor its CPU.  Prometheus sends one at a time.
MAX_SCRAPERS: Final = 16
#: Prometheus' text format, as ``prometheus_client.generate_latest`` writes it.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PATH: Final = "/metrics"
_OK: Final = "200 OK"
_TEXT: Final = "Content-Type: text/plain; charset=utf-8\r\n"
_FAILED: Final = b"the figures could not be collected: see the server's log\n"


@contextlib.asynccontextmanager
async def metrics_listeners(address: TcpAddress | None) -> AsyncIterator[list[trio.SocketListener]]:
    """The listeners for ``address``, open until the end (none if it is ``None``): a
    server opens them before its own, so that a port in use fails before anything else.

    Raises:
        ListenError: as ``open_metrics_listeners``.
    """
    if address is None:
        yield []
        return
    listeners = await open_metrics_listeners(address)
    try:
        yield listeners
    finally:
        for listener in listeners:
            listener.socket.close()


async def open_metrics_listeners(address: TcpAddress) -> list[trio.SocketListener]:
    """Listen on ``address`` for scrapers.

    Raises:
        ListenError: as for any listener, its message naming ``--metrics``.
    """
    listeners = await open_tcp_listeners(address, option="--metrics")
    return [
        trio.SocketListener(trio.socket.from_stdlib_socket(listener.socket))
        for listener in listeners
    ]


async def serve_metrics(
    listeners: list[trio.SocketListener], collect: Callable[[], Awaitable[Figures]]
) -> None:
    """Answer scrapers on ``listeners`` until cancelled, with the figures ``collect`` gives;
    the listeners are closed when it returns."""
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        _log.info("metrics at http://%s:%d%s", host, port, PATH)
    slots = trio.CapacityLimiter(MAX_SCRAPERS)
    await trio.serve_listeners(partial(_answer, collect, slots), listeners)


async def _answer(
    collect: Callable[[], Awaitable[Figures]],
    slots: trio.CapacityLimiter,
    stream: trio.SocketStream,
) -> None:
    """One scraper's connection: one request, one response."""
    async with stream:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            return  # closed at once
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                head = await _read_head(stream)
                await stream.send_all(await _response_to(head, collect))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the scraper left: nothing to answer
        finally:
            slots.release()


async def _response_to(head: bytes | None, collect: Callable[[], Awaitable[Figures]]) -> bytes:
    """The whole response to the request ``head`` (``None``: none that can be read)."""
    from trio_sock.service.metrics import exposition  # prometheus_client: only if asked for

    status, body, headers = _check(head)
    if status == _OK:
        try:
            body = exposition(await collect())
            headers = f"Content-Type: {CONTENT_TYPE}\r\n"
        except Exception as exc:  # a bug of ours: a traceback for whoever fixes it
            _log.exception("collecting the metrics failed", exc_info=exc)
            status, body = "500 Internal Server Error", _FAILED
    length = len(body)
    if head is not None and head.startswith(b"HEAD "):
        body = b""
    return (
        f"HTTP/1.1 {status}\r\n{headers}Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode() + body


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    """The request up to its blank line; ``None`` if it closes first or is too long."""
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        if len(head) > MAX_HEAD:
            return None
        chunk = await stream.receive_some(MAX_HEAD)
        if not chunk:
            return None
        head += chunk
    return head


def _check(head: bytes | None) -> tuple[str, bytes, str]:
    """Status, body and headers for a request that is not for the metrics; ``_OK``
    and text headers for one that is (the caller then collects the body)."""
    parts = [] if head is None else head.split(b"\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return "400 Bad Request", b"not an HTTP/1 request\n", _TEXT
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != PATH.encode():
        return "404 Not Found", f"the metrics are at {PATH}\n".encode(), _TEXT
    if method not in (b"GET", b"HEAD"):
        return "405 Method Not Allowed", b"GET or HEAD only\n", f"Allow: GET, HEAD\r\n{_TEXT}"
    return _OK, b"", _TEXT
