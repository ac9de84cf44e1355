"""Addresses and configuration: small frozen attrs classes that validate themselves.

Nothing here opens a socket.  Each class checks its own fields, so a config that
exists is a config that makes sense; misuse raises ``TypeError`` or
``ValueError`` showing the bad value.  Checks that need the filesystem or the
kernel (does the directory exist, is the port free) belong to ``listeners``.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

#: The book's Unix socket, created in the current directory.
DEFAULT_UNIX_PATH: Final = "server_socket"
#: The book's port, 9734, on loopback: reachable from other machines only when asked.
DEFAULT_TCP_HOST: Final = "127.0.0.1"
DEFAULT_TCP_PORT: Final = 9734
#: Below the usual soft limit of 1024 open files, leaving room for the listeners,
#: stdio and logs, so the default never runs the process out of descriptors.
DEFAULT_MAX_CLIENTS: Final = 1000
#: Long enough for a person typing into ``nc``; short enough that an abandoned
#: connection frees its slot within a minute.
DEFAULT_IDLE_TIMEOUT: Final = 60.0
#: As the contract says: active clients get five seconds to finish at shutdown.
DEFAULT_GRACE: Final = 5.0
#: Only the server's own user may connect, unless asked otherwise.
DEFAULT_SOCKET_MODE: Final = 0o600
#: Connecting to a Unix socket takes microseconds; the reply, one scheduler tick.
#: Ten seconds means something is wrong, not slow.
DEFAULT_CLIENT_TIMEOUT: Final = 10.0
#: Linux stores the backlog in 16 bits (and caps it at net.core.somaxconn).
MAX_BACKLOG: Final = 0xFFFF
#: uid_t and gid_t are 32 bits; the all-ones value means "no change" to chown.
MAX_ID: Final = 2**32 - 2
#: A descriptor is a C int.
MAX_FD: Final = 2**31 - 1


def _check_seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number of seconds, not {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{attribute.name} must be 0 or more seconds, not {value!r}")


def _check_finite_seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    _check_seconds(_, attribute, value)
    if math.isinf(value):
        raise ValueError(f"{attribute.name} must be a finite number of seconds, not {value!r}")


def _check_positive_seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    _check_seconds(_, attribute, value)
    if value == 0:
        raise ValueError(f"{attribute.name} must be more than 0 seconds, not {value!r}")


def _check_count(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be 1 or more, not {value!r}")


def _check_unix_path(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"a Unix socket path must be a str, not {value!r}")
    if value in ("", "@"):
        raise ValueError(f"a Unix socket path must not be empty, got {value!r}")
    if any(not c.isprintable() for c in value):
        # A newline would split the ready line and every log line that names it.
        raise ValueError(f"a Unix socket path must not contain control characters, got {value!r}")


@attrs.frozen
class UnixAddress:
    """A Unix-domain stream socket: a file path, or ``@NAME`` in Linux's abstract namespace."""

    path: str = attrs.field(validator=_check_unix_path)
    """The socket file's path, relative to the current directory or absolute;
    ``@NAME`` names an abstract socket, which has no file at all."""

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

    def __str__(self) -> str:
        return f"unix:{self.path}"


def _check_host(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"host must be a str, not {value!r}")
    if not value or any(c.isspace() for c in value) or "[" in value or "]" in value:
        raise ValueError(f"host must be a name or an IP address without brackets, not {value!r}")


def _check_port(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"port must be an int, not {value!r}")
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be between 0 and 65535, not {value!r}")


@attrs.frozen
class TcpAddress:
    """A TCP address: a host name or IP literal, and a port (0 picks a free one)."""

    host: str = attrs.field(validator=_check_host)
    """A name (``localhost``) or an IP literal, IPv6 without brackets (``::1``)."""
    port: int = attrs.field(validator=_check_port)
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
                raise ValueError(f"put an IPv6 address in brackets, as [{host}]:{port}")
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


def _to_addresses(value: Iterable[Address]) -> tuple[Address, ...]:
    return tuple(value)


def _check_addresses(_: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    for address in value:
        if not isinstance(address, UnixAddress | TcpAddress):
            raise TypeError(f"expected a UnixAddress or TcpAddress, not {address!r}")
    # ``sock`` and ``./sock`` are one file: the second would find the first live.
    keys = [
        os.path.normpath(a.path) if isinstance(a, UnixAddress) and not a.is_abstract else a
        for a in value
        if not (isinstance(a, TcpAddress) and a.port == 0)  # each gets a port of its own
    ]
    if len(set(keys)) != len(keys):
        shown = ", ".join(map(str, value))
        raise ValueError(f"each address may be given only once, got {shown}")


def _check_backlog(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | None):
        raise TypeError(f"backlog must be an int or None, not {value!r}")
    if value is not None and not 1 <= value <= MAX_BACKLOG:
        raise ValueError(f"backlog must be between 1 and {MAX_BACKLOG}, not {value!r}")


def _check_mode(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"socket_mode must be an int, not {value!r}")
    if not 0 <= value <= 0o777:
        raise ValueError(f"socket_mode must be permission bits 0o000 to 0o777, not {value!r}")


def _check_id(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"user and group ids must be ints, not {value!r}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"user and group ids are 0 to {MAX_ID}, not {value!r}")


def _to_ids(value: Iterable[int]) -> frozenset[int]:
    return frozenset(value)


def _check_optional_id(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_id(value)


def _check_ids(_: object, attribute: attrs.Attribute[Any], value: frozenset[object]) -> None:
    for item in value:
        _check_id(item)


DEFAULT_ADDRESSES: Final[tuple[Address, ...]] = (
    UnixAddress(DEFAULT_UNIX_PATH),
    TcpAddress(DEFAULT_TCP_HOST, DEFAULT_TCP_PORT),
)


@attrs.frozen
class ListenFd:
    """A listening socket this process inherited, from systemd or a parent process."""

    fd: int = attrs.field(validator=attrs.validators.and_(
        attrs.validators.instance_of(int), attrs.validators.ge(0),
        attrs.validators.le(MAX_FD),
    ))  # fmt: skip
    """The descriptor number."""
    name: str | None = None
    """systemd's ``FileDescriptorName=``, shown in logs."""


def _to_listen_fds(value: Iterable[ListenFd | int]) -> tuple[ListenFd, ...]:
    return tuple(item if isinstance(item, ListenFd) else ListenFd(item) for item in value)


def _check_listen_fds(_: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    numbers = [item.fd for item in value]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"each fd may be given only once, got {numbers}")


def _check_tls_file(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{attribute.name} must be a file path or None, not {value!r}")


#: A TLS handshake takes a few round trips; a client that has not finished in
#: this long is not going to, and holds a slot meanwhile.
DEFAULT_TLS_HANDSHAKE_TIMEOUT: Final = 10.0


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Everything ``serve`` needs to know; change one field with ``attrs.evolve``."""

    addresses: tuple[Address, ...] = attrs.field(
        default=DEFAULT_ADDRESSES, converter=_to_addresses, validator=_check_addresses
    )
    """Where to listen, in order; the default is the book's socket file and port.
    Empty when the server only serves ``listen_fds``."""
    listen_fds: tuple[ListenFd, ...] = attrs.field(
        default=(), converter=_to_listen_fds, validator=_check_listen_fds
    )
    """Listening sockets inherited from systemd or a parent, served as they are: the
    server never binds, locks or removes their files."""
    once: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Read one byte per connection, reply and close, exactly as the book's server."""
    max_clients: int = attrs.field(default=DEFAULT_MAX_CLIENTS, validator=_check_count)
    """Clients served at once; the rest wait in the kernel's listen queue, never refused."""
    delay: float = attrs.field(default=0.0, validator=_check_finite_seconds)
    """Simulated work before each reply, to watch clients queue."""
    idle_timeout: float = attrs.field(
        default=DEFAULT_IDLE_TIMEOUT, validator=_check_positive_seconds
    )
    """Drop a client that neither sends nor reads for this long (``math.inf``: never)."""
    grace: float = attrs.field(default=DEFAULT_GRACE, validator=_check_seconds)
    """On shutdown, how long active clients may finish before they are cancelled."""
    backlog: int | None = attrs.field(default=None, validator=_check_backlog)
    """Listen queue length; ``None`` asks for the most the kernel allows, as Trio does."""
    socket_mode: int = attrs.field(default=DEFAULT_SOCKET_MODE, validator=_check_mode)
    """Permission bits of each Unix socket file; it never exists with wider ones."""
    socket_group: int | None = attrs.field(default=None, validator=_check_optional_id)
    """Group id to give each Unix socket file (with a mode like ``0o660``, its members
    may connect); ``None`` keeps the server's own group."""
    allow_uids: frozenset[int] = attrs.field(
        default=frozenset(), converter=_to_ids, validator=_check_ids
    )
    """Unix peers whose user id is in here are served.  With ``allow_gids``, empty
    means no check beyond the file's mode; abstract names then serve the
    server's own user only."""
    allow_gids: frozenset[int] = attrs.field(
        default=frozenset(), converter=_to_ids, validator=_check_ids
    )
    """Unix peers with one of these groups, primary or supplementary, are served."""
    tls_cert: str | None = attrs.field(default=None, validator=_check_tls_file)
    """PEM certificate chain: with ``tls_key``, TCP listeners speak TLS (Unix ones never)."""
    tls_key: str | None = attrs.field(default=None, validator=_check_tls_file)
    """PEM private key of ``tls_cert``."""
    tls_handshake_timeout: float = attrs.field(
        default=DEFAULT_TLS_HANDSHAKE_TIMEOUT, validator=_check_positive_seconds
    )
    """A TLS client that has not finished its handshake in this long is dropped."""

    def __attrs_post_init__(self) -> None:
        if not self.addresses and not self.listen_fds:
            raise ValueError("a server needs at least one address or fd to listen on")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key, or neither")


def _check_char(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"char must be a str, not {value!r}")
    if len(value) != 1 or ord(value) > 0xFF:
        raise ValueError(f"char must be one character that is one byte (Latin-1), not {value!r}")


def _check_server_address(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, UnixAddress | TcpAddress):
        raise TypeError(f"address must be a UnixAddress or TcpAddress, not {value!r}")
    if isinstance(value, TcpAddress) and value.port == 0:
        raise ValueError(f"a client needs the server's real port, not 0, in {value}")


@attrs.frozen(kw_only=True)
class ClientConfig:
    """What the one-shot client sends, and where."""

    address: Address = attrs.field(
        default=UnixAddress(DEFAULT_UNIX_PATH), validator=_check_server_address
    )
    """The server's address; the book's client uses the socket file ``server_socket``."""
    char: str = attrs.field(default="A", validator=_check_char)
    """The character to send: one character that is one byte in Latin-1."""
    timeout: float = attrs.field(default=DEFAULT_CLIENT_TIMEOUT, validator=_check_positive_seconds)
    """Give up if connecting and getting the reply take longer than this."""
    wait: float = attrs.field(default=0.0, validator=_check_seconds)
    """Keep retrying, with backoff, this long while the server is not there yet."""
    tls: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Speak TLS to a TCP server, checking its certificate and host name."""
    tls_ca: str | None = attrs.field(default=None, validator=_check_tls_file)
    """PEM file of the CAs to trust; ``None`` trusts the system's."""

    def __attrs_post_init__(self) -> None:
        if self.tls and not isinstance(self.address, TcpAddress):
            raise ValueError("TLS is for TCP servers; a Unix socket needs none")
