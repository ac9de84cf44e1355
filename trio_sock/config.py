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
#: Each worker is a whole Python process (tens of MB); far more than any machine
#: has CPUs to run them, so a larger number is a typo, not a plan.
MAX_WORKERS: Final = 256


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


def _check_workers(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    _check_count(_, attribute, value)
    if value > MAX_WORKERS:
        raise ValueError(f"{attribute.name} must be at most {MAX_WORKERS}, not {value!r}")


#: What ``os.fsdecode`` (surrogateescape) makes of the bytes 0x80 to 0xFF where they
#: are not UTF-8: a Linux path may hold them, so a path may hold these characters.
_ESCAPED_BYTES: Final = range(0xDC80, 0xDD00)


def _check_unix_path(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"a Unix socket path must be a str, not {value!r}")
    if value in ("", "@"):
        raise ValueError(f"a Unix socket path must not be empty, got {value!r}")
    try:
        os.fsencode(value)
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"a Unix socket path must be bytes the file system encoding can hold; {value!r}"
            f" cannot be a file name ({exc.reason})"
        ) from None
    if any(not c.isprintable() and ord(c) not in _ESCAPED_BYTES for c in value):
        # A newline would split the ready line and every log line that names it.
        raise ValueError(f"a Unix socket path must not contain control characters, got {value!r}")


@attrs.frozen
class UnixAddress:
    """A Unix-domain stream socket: a file path, or ``@NAME`` in Linux's abstract namespace."""

    path: str = attrs.field(validator=_check_unix_path)
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


def _check_tls_file(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{attribute.name} must be a file path or None, not {value!r}")


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


# The server's configuration is built on first use, from ``server_config``: a
# one-shot client never needs it, and building its attrs classes would be a
# twentieth of the client's start-up.
_SERVER_NAMES: Final = frozenset(
    {"DEFAULT_ADDRESSES", "DEFAULT_TLS_HANDSHAKE_TIMEOUT", "ListenFd", "ServerConfig"}
)

if TYPE_CHECKING:
    from .server_config import DEFAULT_ADDRESSES as DEFAULT_ADDRESSES
    from .server_config import DEFAULT_TLS_HANDSHAKE_TIMEOUT as DEFAULT_TLS_HANDSHAKE_TIMEOUT
    from .server_config import ListenFd as ListenFd
    from .server_config import ServerConfig as ServerConfig


def __getattr__(name: str) -> object:
    if name in _SERVER_NAMES:
        from . import server_config

        return getattr(server_config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
