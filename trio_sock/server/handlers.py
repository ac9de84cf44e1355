"""What each client gets: a handler, and how the server tells its two kinds apart.

An **async function** taking a ``trio_sock.Connection`` runs in the client's own
task (``handled``), with the connection as a Trio stream.

A **sans-I/O protocol class** (h11's shape): the server makes one instance per
client and

- calls ``data_received(data)`` with each chunk it reads, and sends back the
  bytes it returns (``b""`` for none);
- calls ``eof_received()``, if the class has it, when the client has finished
  sending, and sends back what it returns before closing;
- closes the connection once the reply to a call is sent, if the instance's
  ``done`` attribute is then true.

The increment protocol (``trio_sock.protocol.Increment``) is one, and the default.
Sans-I/O classes run on the server's fastest path: no stream object, no task
beyond the client's own.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Protocol, TypeAlias

import attrs

from trio_sock.protocol import Increment

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trio_sock.server.connection import Connection


class SansIOProtocol(Protocol):
    """One client's protocol state, with no I/O: bytes in, bytes out."""

    @property
    def done(self) -> bool:
        """True once the server should close after sending the last reply."""
        ...

    def data_received(self, data: bytes) -> bytes:
        """The reply to ``data`` (``b""`` for none)."""
        ...


#: An async handler: runs once per client, in the client's task, until it returns.
AsyncHandler: TypeAlias = "Callable[[Connection], Awaitable[None]]"
#: What ``serve`` takes as a handler: a sans-I/O protocol class (any callable making
#: a fresh ``SansIOProtocol`` for each client), or an async handler.
Handler: TypeAlias = "Callable[[], SansIOProtocol] | AsyncHandler"


@attrs.frozen
class Served:
    """A handler, sorted: exactly one of the two is set."""

    protocol: Callable[[], SansIOProtocol] | None
    """Makes each client's sans-I/O protocol."""
    handler: AsyncHandler | None
    """Runs once per client."""


def sort_handler(handler: object) -> Served:
    """Which kind of handler ``handler`` is, checked before any client comes.

    Args:
        handler: A sans-I/O protocol class, an async function taking a
            ``Connection``, or ``None`` for the increment protocol.

    Raises:
        TypeError: ``handler`` is neither kind; the message shows it.
    """
    if handler is None:
        return Served(Increment, None)
    if isinstance(handler, type) and callable(getattr(handler, "data_received", None)):
        return Served(handler, None)
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        return Served(None, handler)  # type: ignore[arg-type]
    raise TypeError(
        "a handler must be an async function taking a trio_sock.Connection, or a sans-I/O"
        f" protocol class (with data_received(data) -> bytes and done), not {handler!r}"
    )


def eof_reply(protocol: SansIOProtocol) -> bytes:
    """What ``protocol`` says when the client has finished sending, if it has a say."""
    eof_received: Callable[[], bytes] | None = getattr(protocol, "eof_received", None)
    return b"" if eof_received is None else eof_received()
