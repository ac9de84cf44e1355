"""The command line's value types: argparse reads text, config's rules check the value.

Each type turns the text into a value (an error here is about the form:
"expected a number of seconds") and then calls the rule in ``config.rules``
that the attrs classes use too, so a limit and its message are written once.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from trio_sock.config import defaults, rules
from trio_sock.config.addresses import TcpAddress, UnixAddress, connectable
from trio_sock.server.handlers import check_handler_spec

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


def _argument_type(
    name: str, read: Callable[[str], T], rule: Callable[[T], None] | None = None
) -> Callable[[str], T]:
    """An argparse type: ``read`` turns the text into a value, then config's ``rule`` checks it.

    Either one's ``ValueError`` becomes argparse's usage error, message intact:
    the limits and their messages are the config's own (``config.rules``).
    """

    def convert(text: str) -> T:
        try:
            value = read(text)
            if rule is not None:
                rule(value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    convert.__name__ = name
    return convert


def _read_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None


def _read_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _read_octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError(f"expected octal permission bits such as 600, got {text!r}") from None


def _read_account(kind: str, lookup: Callable[[str], int]) -> Callable[[str], int]:
    """A user or group as a number (checked by ``rules.account_id``), or a name looked up."""

    def read(text: str) -> int:
        if text.isascii() and text.isdigit():
            return _read_int(text)
        try:
            return lookup(text)
        except KeyError:
            raise ValueError(f"no such {kind} {text!r}") from None

    return read


def _uid_of(name: str) -> int:
    import pwd  # only the server's --allow-uid reads it

    return pwd.getpwnam(name).pw_uid


def _gid_of(name: str) -> int:
    import grp  # only the server's --allow-gid and --socket-group read it

    return grp.getgrnam(name).gr_gid


def _inherited_descriptor(value: int) -> None:
    """An fd handed to us: 0 to 2 are our stdio, never a listener."""
    rules.descriptor(value)
    if value < 3:
        raise ValueError(f"must not be 0 to 2, which are stdin, stdout and stderr, not {value}")


def _read_char(text: str) -> str:
    if len(text) == 1 and 0xDC80 <= ord(text) <= 0xDCFF:
        # A byte that is not UTF-8 reaches argv as a lone surrogate
        # (surrogateescape): it was one byte on the command line, so it is that byte.
        return chr(ord(text) - 0xDC00)
    return text


seconds = _argument_type("seconds", _read_seconds, rules.seconds)


positive_seconds = _argument_type("positive seconds", _read_seconds, rules.positive_seconds)


finite_seconds = _argument_type("finite seconds", _read_seconds, rules.finite_seconds)


positive_int = _argument_type("positive int", _read_int, rules.count)


backlog = _argument_type("backlog", _read_int, rules.backlog)


workers = _argument_type("workers", _read_int, rules.count_up_to(defaults.MAX_WORKERS))


octal_mode = _argument_type("octal mode", _read_octal, rules.mode)


unix_address = _argument_type("unix path", UnixAddress)


tcp_address = _argument_type("tcp address", TcpAddress.parse)


metrics_address = _argument_type(
    "metrics address", partial(TcpAddress.parse, default_host=defaults.DEFAULT_METRICS_HOST)
)


server_tcp_address = _argument_type("server tcp address", TcpAddress.parse, connectable)


one_char = _argument_type("char", _read_char, rules.char)


user_id = _argument_type("user", _read_account("user", _uid_of), rules.account_id)


group_id = _argument_type("group", _read_account("group", _gid_of), rules.account_id)


descriptor = _argument_type("descriptor", _read_int, _inherited_descriptor)
handler_spec = _argument_type("handler", str, check_handler_spec)
