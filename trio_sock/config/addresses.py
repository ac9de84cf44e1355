"""Where a server listens and a client connects: ``UnixAddress`` and ``TcpAddress``.

Each checks itself (``rules``); ``TcpAddress.parse`` and ``parse_address`` read
them as a user types them and as the ready line prints them.
"""

from __future__ import annotations

import os
from typing import Any, TypeAlias

import attrs

from . import rules
from .defaults import DEFAULT_TCP_HOST
from .rules import field_rule


@attrs.frozen
class UnixAddress:
    """A Unix-domain stream socket: a file path, or ``@NAME`` in Linux's abstract namespace."""

    path: str = attrs.field(validator=field_rule(rules.unix_path))
    """The socket file's path, relative to the current directory or absolute;
    ``@NAME`` names an abstract socket, which has no file at all.  Bytes that are
    not UTF-8 are lone surrogates, as ``os.fsdecode`` gives them."""

    @property
    def is_abstract(self) -> bool:
        """True for ``@NAME``: no file, no permissions, gone when the last socket closes."""
        return self.path.startswith("@")

    @property
    def sockaddr(self) -> str:
        """The address as ``socket.bind`` and ``connect`` want it."""
        return "\0" + self.path[1:] if self.is_abstract else self.path

    @property
    def transport(self) -> str:
        """``"unix"``, as logs name it."""
        return "unix"

    @property
    def display(self) -> str:
        """The path as logs and the ready line show it: a byte that is not UTF-8 as
        ``\\xNN``, so that printing it never fails and shows what is on disk."""
        return os.fsencode(self.path).decode("utf-8", "backslashreplace")

    def __str__(self) -> str:
        return f"unix:{self.display}"


@attrs.frozen
class TcpAddress:
    """A TCP address: a host name or IP literal, and a port (0 picks a free one)."""

    host: str = attrs.field(validator=field_rule(rules.host))
    """A name (``localhost``) or an IP literal, IPv6 without brackets (``::1``)."""
    port: int = attrs.field(validator=field_rule(rules.port))
    """0 to 65535; a listener on 0 gets a free port from the kernel."""

    @classmethod
    def parse(cls, text: str, *, default_host: str = DEFAULT_TCP_HOST) -> TcpAddress:
        """Parse ``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``.

        Args:
            text: The address as a user typed it.
            default_host: The host when ``text`` is only a port.

        Raises:
            ValueError: ``text`` is none of those forms; the message shows it.
        """
        if text.startswith("["):
            host, bracket, port = text[1:].partition("]:")
            if not bracket:
                raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        elif ":" in text:
            host, _, port = text.rpartition(":")
            if ":" in host:
                raise ValueError(_too_many_colons(text, host, port))
        else:
            host, port = default_host, text
        if not port.isascii() or not port.isdigit() or len(port) > 5:
            raise ValueError(f"expected [HOST:]PORT with a port of 0 to 65535, got {text!r}")
        return cls(host, int(port))

    @property
    def transport(self) -> str:
        """``"tcp"``, as logs name it."""
        return "tcp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def _too_many_colons(text: str, host: str, port: str) -> str:
    """Why ``text`` is no ``HOST:PORT``: brackets are suggested only for a real IPv6 address."""
    import ipaddress  # only to explain a mistake

    def is_ipv6(candidate: str) -> bool:
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            return False
        return True

    if is_ipv6(host):
        return f"put an IPv6 address in brackets, as [{host}]:{port}"
    if is_ipv6(text):
        return f"put an IPv6 address in brackets and add a port, as [{text}]:PORT"
    return f"too many colons in {text!r}; write HOST:PORT, or [IPV6]:PORT"


Address: TypeAlias = UnixAddress | TcpAddress


def parse_address(text: str) -> Address:
    """Parse an address as the ready line prints it, or as a user would type it.

    Accepted forms: ``unix:PATH``, ``@NAME`` (abstract Unix), ``tcp:[HOST:]PORT``,
    and bare ``[HOST:]PORT`` / ``[IPV6]:PORT`` for TCP.  Anything with a ``/``
    in it is taken as a Unix path.

    Raises:
        ValueError: ``text`` is none of those forms.
    """
    if text.startswith("unix:"):
        return UnixAddress(text.removeprefix("unix:"))
    if text.startswith("tcp:"):
        return TcpAddress.parse(text.removeprefix("tcp:"))
    if text.startswith("@") or "/" in text:
        return UnixAddress(text)
    try:
        return TcpAddress.parse(text)
    except ValueError as exc:
        raise ValueError(f"{exc}; for a Unix socket file, write unix:{text}") from None


def connectable(value: Address) -> None:
    """The rule for where a client connects: an address with a real port (0 is for listeners)."""
    if not isinstance(value, UnixAddress | TcpAddress):
        raise TypeError(f"must be a UnixAddress or TcpAddress, not {value!r}")
    if isinstance(value, TcpAddress) and value.port == 0:
        raise ValueError(f"must be the server's real port, not 0, in {value}")


def to_jsonable(address: Address) -> dict[str, Any]:
    """``address`` as a JSON object that ``from_jsonable`` reads back: ``{"unix": PATH}``,
    ``{"tcp": [HOST, PORT]}``.  Not as it prints: a path that is not UTF-8 prints
    escaped, but its lone surrogates survive JSON (``\\udcff``) exactly."""
    if isinstance(address, UnixAddress):
        return {"unix": address.path}
    return {"tcp": [address.host, address.port]}


def from_jsonable(value: dict[str, Any]) -> Address:
    """An address as ``to_jsonable`` wrote it.

    Raises:
        ValueError, TypeError, KeyError: ``value`` is not such an address.
    """
    (kind, field), *others = value.items()  # a ValueError if there is not just one
    if others:
        raise ValueError(f"an address with more than one kind: {value!r}")
    if kind == "unix":
        return UnixAddress(field)
    if kind == "tcp":
        host, port = field
        return TcpAddress(host, port)
    raise KeyError(kind)
