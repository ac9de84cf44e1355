"""``ClientConfig``: what the one-shot client sends, and where."""

from __future__ import annotations

import attrs

from . import rules
from .addresses import Address, TcpAddress, UnixAddress, connectable
from .defaults import DEFAULT_CLIENT_TIMEOUT, DEFAULT_UNIX_PATH
from .rules import field_rule


@attrs.frozen(kw_only=True)
class ClientConfig:
    """What the one-shot client sends, and where."""

    address: Address = attrs.field(
        default=UnixAddress(DEFAULT_UNIX_PATH), validator=field_rule(connectable)
    )
    """The server's address; the book's client uses the socket file ``server_socket``."""
    char: str = attrs.field(default="A", validator=field_rule(rules.char))
    """The character to send: one character that is one byte in Latin-1."""
    timeout: float = attrs.field(
        default=DEFAULT_CLIENT_TIMEOUT, validator=field_rule(rules.positive_seconds)
    )
    """Give up if connecting and getting the reply take longer than this."""
    wait: float = attrs.field(default=0.0, validator=field_rule(rules.seconds))
    """Keep retrying, with backoff, this long while the server is not there yet."""
    tls: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Speak TLS to a TCP server, checking its certificate and host name."""
    tls_ca: str | None = attrs.field(
        default=None, validator=field_rule(rules.optional(rules.file_path))
    )
    """PEM file of the CAs to trust; ``None`` trusts the system's."""
    trace: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Write each socket call on stderr as it is made (``--trace``), strace-like."""

    def __attrs_post_init__(self) -> None:
        if self.tls and not isinstance(self.address, TcpAddress):
            raise ValueError("TLS is for TCP servers; a Unix socket needs none")
