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

import importlib
import inspect
import os
import re
import sys
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

import attrs

from trio_sock.errors import HandlerError
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


#: ``MODULE:NAME``: a dotted module path, a colon, a name in it (dotted for an attribute
#: of an attribute), as ``python -m`` and WSGI/ASGI servers spell them.
_DOTTED: Final = r"[^\W\d]\w*(?:\.[^\W\d]\w*)*"
_SPEC: Final = re.compile(f"(?P<module>{_DOTTED}):(?P<name>{_DOTTED})")


def check_handler_spec(spec: str) -> None:
    """The rule for ``--handler``: ``MODULE:NAME``, both dotted Python identifiers.

    Raises:
        ValueError: ``spec`` is not of that form; the message shows it.
    """
    if not _SPEC.fullmatch(spec):
        raise ValueError(f"must be MODULE:NAME, such as echo:handle, not {spec!r}")


def import_handler(spec: str) -> Handler:
    """The handler that ``MODULE:NAME`` names, imported as ``python -m`` would find it.

    The current directory comes first on the import path, as for ``python -m``.

    Raises:
        HandlerError: the module fails to import (whatever it raised), has no such
            name, or the name is neither kind of handler; one line naming ``spec``.
    """
    check_handler_spec(spec)
    module_name, _, name = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")  # as python -m: the current directory
    try:
        found: object = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while importing
        raise HandlerError(f"cannot load handler {spec}: {_why(exc)}") from exc
    for part in name.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise HandlerError(
                f"cannot load handler {spec}: {module_name} has no {name!r}"
            ) from None
    try:
        sort_handler(found)
    except TypeError as exc:
        raise HandlerError(f"cannot use handler {spec}: {exc}") from None
    return found  # type: ignore[return-value]


def _why(exc: Exception) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return f"no module named {exc.name!r} (is it in the current directory?)"
    if isinstance(exc, SyntaxError):
        return f"syntax error in {exc.filename}, line {exc.lineno}: {exc.msg}"
    return f"importing it raised {exc!r}"
