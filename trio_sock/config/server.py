"""``ServerConfig``, everything ``serve`` needs to know, and ``ListenFd`` for inherited sockets.

Nothing here opens a socket; each class checks its own fields with ``rules``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Final

import attrs

from . import rules
from .addresses import Address, TcpAddress, UnixAddress, from_jsonable, to_jsonable
from .defaults import (
    DEFAULT_GRACE,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_SOCKET_MODE,
    DEFAULT_TCP_HOST,
    DEFAULT_TCP_PORT,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    DEFAULT_UNIX_PATH,
    MAX_WORKERS,
)
from .rules import field_rule

if TYPE_CHECKING:
    from collections.abc import Iterable


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


def _check_ids(_: object, attribute: attrs.Attribute[Any], value: frozenset[object]) -> None:
    for item in value:
        field_rule(rules.account_id)(_, attribute, item)


def _to_ids(value: Iterable[int]) -> frozenset[int]:
    return frozenset(value)


DEFAULT_ADDRESSES: Final[tuple[Address, ...]] = (
    UnixAddress(DEFAULT_UNIX_PATH),
    TcpAddress(DEFAULT_TCP_HOST, DEFAULT_TCP_PORT),
)


@attrs.frozen
class ListenFd:
    """A listening socket this process inherited, from systemd or a parent process."""

    fd: int = attrs.field(validator=field_rule(rules.descriptor))
    """The descriptor number."""
    name: str | None = None
    """systemd's ``FileDescriptorName=``, shown in logs."""
    address: Address | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            attrs.validators.instance_of((UnixAddress, TcpAddress))
        ),
    )
    """The address as the process that bound the socket knows it; ``None`` reads it
    from the socket.  A socket file bound under a temporary name and renamed into
    place (as ``listen.unix`` does) still calls itself by the temporary name, so a
    parent that passes one on says its real name here."""


def _to_listen_fds(value: Iterable[ListenFd | int]) -> tuple[ListenFd, ...]:
    return tuple(item if isinstance(item, ListenFd) else ListenFd(item) for item in value)


def _check_listen_fds(_: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    numbers = [item.fd for item in value]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"each fd may be given only once, got {numbers}")


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
    max_clients: int = attrs.field(default=DEFAULT_MAX_CLIENTS, validator=field_rule(rules.count))
    """Clients served at once; the rest wait in the kernel's listen queue, never refused."""
    delay: float = attrs.field(default=0.0, validator=field_rule(rules.finite_seconds))
    """Simulated work before each reply, to watch clients queue."""
    idle_timeout: float = attrs.field(
        default=DEFAULT_IDLE_TIMEOUT, validator=field_rule(rules.positive_seconds)
    )
    """Drop a client that neither sends nor reads for this long (``math.inf``: never)."""
    grace: float = attrs.field(default=DEFAULT_GRACE, validator=field_rule(rules.seconds))
    """On shutdown, how long active clients may finish before they are cancelled."""
    backlog: int | None = attrs.field(
        default=None, validator=field_rule(rules.optional(rules.backlog))
    )
    """Listen queue length; ``None`` asks for the most the kernel allows, as Trio does."""
    socket_mode: int = attrs.field(default=DEFAULT_SOCKET_MODE, validator=field_rule(rules.mode))
    """Permission bits of each Unix socket file; it never exists with wider ones."""
    socket_group: int | None = attrs.field(
        default=None, validator=field_rule(rules.optional(rules.account_id))
    )
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
    tls_cert: str | None = attrs.field(
        default=None, validator=field_rule(rules.optional(rules.file_path))
    )
    """PEM certificate chain: with ``tls_key``, TCP listeners speak TLS (Unix ones never)."""
    tls_key: str | None = attrs.field(
        default=None, validator=field_rule(rules.optional(rules.file_path))
    )
    """PEM private key of ``tls_cert``."""
    tls_handshake_timeout: float = attrs.field(
        default=DEFAULT_TLS_HANDSHAKE_TIMEOUT, validator=field_rule(rules.positive_seconds)
    )
    """A TLS client that has not finished its handshake in this long is dropped."""
    workers: int = attrs.field(default=1, validator=field_rule(rules.count_up_to(MAX_WORKERS)))
    """Processes that serve the listeners, each with its own ``max_clients``; 1 is a
    single process with no supervisor.  ``serve`` always runs one: more are started
    and restarted by ``workers.supervisor.supervise``."""
    reuse_port: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Open TCP listeners with ``SO_REUSEPORT``: with several workers, each gets a
    socket of its own on the same port and the kernel spreads connections between
    them; with one, other processes of this user that ask for it too may share the port."""
    proxy_protocol: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Every connection begins with a PROXY protocol header (v1 or v2) from a load
    balancer, naming the real client; one without it within 5 s is closed."""
    trace: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Write the socket calls on stderr as they are made (``--trace``): the listeners'
    socket, bind and listen, each client's accept, read, write and close, with the
    kernel's descriptors."""

    def __attrs_post_init__(self) -> None:
        if not self.addresses and not self.listen_fds:
            raise ValueError("a server needs at least one address or fd to listen on")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key, or neither")

    def to_json(self) -> str:
        """Every field as JSON, which ``from_json`` reads back as an equal config.

        How a ``--workers`` parent hands its configuration to each worker: a field
        added to this class travels with the others, with nothing to keep in step.
        """
        # ensure_ascii (the default) writes a lone surrogate as \\udcXX: the text is
        # ASCII, fit for any environment, and reads back as the same path.
        return json.dumps(attrs.asdict(self, recurse=False), default=_to_jsonable)

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        """The config ``to_json`` wrote.

        Raises:
            ValueError, TypeError: ``text`` is not such a config (it is checked as
                any other is).
        """
        fields = json.loads(text, object_hook=_from_jsonable)
        if not isinstance(fields, dict):
            raise TypeError(f"expected a JSON object, not {text!r}")
        return cls(**fields)


def _to_jsonable(value: object) -> object:
    if isinstance(value, UnixAddress | TcpAddress):
        return to_jsonable(value)
    if isinstance(value, ListenFd):
        address = None if value.address is None else to_jsonable(value.address)
        return {"fd": value.fd, "name": value.name, "address": address}
    if isinstance(value, frozenset):
        return sorted(value)
    raise TypeError(f"{value!r} has no JSON form")


def _from_jsonable(value: dict[str, Any]) -> object:
    """Addresses and ``ListenFd``s back from their JSON objects (known by their keys)."""
    if value.keys() in ({"unix"}, {"tcp"}):
        return from_jsonable(value)
    if value.keys() == {"fd", "name", "address"}:
        return ListenFd(value["fd"], value["name"], value["address"])
    return value
