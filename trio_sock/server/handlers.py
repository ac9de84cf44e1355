"""What each client gets: a handler, and how the server tells its two kinds apart.

A **sans-I/O protocol class** (h11's shape) is the one kind served so far: the
server makes one instance per client and

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

from typing import TYPE_CHECKING, Protocol, TypeAlias

from trio_sock.protocol import Increment

if TYPE_CHECKING:
    from collections.abc import Callable


class SansIOProtocol(Protocol):
    """One client's protocol state, with no I/O: bytes in, bytes out."""

    @property
    def done(self) -> bool:
        """True once the server should close after sending the last reply."""
        ...

    def data_received(self, data: bytes) -> bytes:
        """The reply to ``data`` (``b""`` for none)."""
        ...


#: What ``serve`` takes as a handler: a class (or any callable) making a fresh
#: ``SansIOProtocol`` for each client.
Handler: TypeAlias = "Callable[[], SansIOProtocol]"


def protocol_factory(handler: object) -> Callable[[], SansIOProtocol]:
    """``handler`` as a maker of per-client protocols, checked before any client comes.

    Args:
        handler: A sans-I/O protocol class, or ``None`` for the increment protocol.

    Raises:
        TypeError: ``handler`` is not a sans-I/O protocol class; the message shows it.
    """
    if handler is None:
        return Increment
    if isinstance(handler, type) and callable(getattr(handler, "data_received", None)):
        return handler
    raise TypeError(
        f"a handler must be a sans-I/O protocol class (with data_received(data) -> bytes"
        f" and done), not {handler!r}"
    )


def eof_reply(protocol: SansIOProtocol) -> bytes:
    """What ``protocol`` says when the client has finished sending, if it has a say."""
    eof_received: Callable[[], bytes] | None = getattr(protocol, "eof_received", None)
    return b"" if eof_received is None else eof_received()
