"""Every rule a configuration value must follow, each written once.

A rule is a function of the value that returns nothing and raises ``TypeError``
(wrong kind of value) or ``ValueError`` (right kind, wrong value) with a message
that reads after the value's name: ``"must be 0 or more seconds, not -1"``.
The attrs classes use them through ``field_rule``, which puts the field's name
in front; the command line's argparse types (``trio_sock.cli.options``) turn
text into a value and call the same rule, so a limit or a message is never
written twice.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Final

from .defaults import MAX_BACKLOG, MAX_FD, MAX_ID

if TYPE_CHECKING:
    from collections.abc import Callable

    import attrs

    Rule = Callable[[Any], None]


def field_rule(rule: Rule) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """An attrs validator that applies ``rule``, the field's name heading its message."""

    def validate(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        try:
            rule(value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{attribute.name} {exc}") from None

    return validate


def optional(rule: Rule) -> Rule:
    """``rule``, or ``None``."""

    def check(value: object) -> None:
        if value is not None:
            rule(value)

    return check


def _number(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"must be a number of seconds, not {value!r}")


def seconds(value: float) -> None:
    """A duration: 0 or more seconds, ``math.inf`` for ever."""
    _number(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"must be 0 or more seconds, not {value!r}")


def finite_seconds(value: float) -> None:
    """A duration that ends."""
    seconds(value)
    if math.isinf(value):
        raise ValueError(f"must be a finite number of seconds, not {value!r}")


def positive_seconds(value: float) -> None:
    """A duration longer than nothing (a timeout of 0 would end everything at once)."""
    seconds(value)
    if value == 0:
        raise ValueError(f"must be more than 0 seconds, not {value!r}")


def _int(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be a whole number, not {value!r}")


def count(value: int) -> None:
    """A number of things: 1 or more."""
    _int(value)
    if value < 1:
        raise ValueError(f"must be 1 or more, not {value!r}")


def count_up_to(limit: int) -> Rule:
    """A number of things from 1 to ``limit``."""

    def check(value: int) -> None:
        count(value)
        if value > limit:
            raise ValueError(f"must be at most {limit}, not {value!r}")

    return check


#: A listen queue: Linux keeps its length in 16 bits.
backlog: Final = count_up_to(MAX_BACKLOG)


def mode(value: int) -> None:
    """Permission bits of a file, 0o000 to 0o777."""
    _int(value)
    if not 0 <= value <= 0o777:
        raise ValueError(f"must be permission bits 000 to 777 in octal, not {oct(value)}")


def account_id(value: int) -> None:
    """A user or group id."""
    _int(value)
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"must be a user or group id of 0 to {MAX_ID}, not {value!r}")


def descriptor(value: int) -> None:
    """A file descriptor number."""
    _int(value)
    if not 0 <= value <= MAX_FD:
        raise ValueError(f"must be a descriptor of 0 to {MAX_FD}, not {value!r}")


def port(value: int) -> None:
    """A TCP port; 0 asks the kernel for a free one."""
    _int(value)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port of 0 to 65535, not {value!r}")


def host(value: str) -> None:
    """A host name or an IP literal, IPv6 without its brackets."""
    if not isinstance(value, str):
        raise TypeError(f"must be a host name or IP address, not {value!r}")
    if not value or any(c.isspace() for c in value) or "[" in value or "]" in value:
        raise ValueError(f"must be a name or an IP address without brackets, not {value!r}")


#: What ``os.fsdecode`` (surrogateescape) makes of the bytes 0x80 to 0xFF where they
#: are not UTF-8: a Linux path may hold them, so a path may hold these characters.
_ESCAPED_BYTES: Final = range(0xDC80, 0xDD00)


def unix_path(value: str) -> None:
    """A socket file's path, or ``@NAME``: any bytes the kernel takes but control characters."""
    if not isinstance(value, str):
        raise TypeError(f"must be a Unix socket path (a str), not {value!r}")
    if value in ("", "@"):
        raise ValueError(f"must be a Unix socket path that is not empty, not {value!r}")
    try:
        os.fsencode(value)
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"must be bytes the file system encoding can hold; {value!r}"
            f" cannot be a file name ({exc.reason})"
        ) from None
    if any(not c.isprintable() and ord(c) not in _ESCAPED_BYTES for c in value):
        # A newline would split the ready line and every log line that names it.
        raise ValueError(f"must not contain control characters, not {value!r}")


def file_path(value: str) -> None:
    """A file named on the command line: a PEM certificate, key or CA bundle."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"must be a file path, not {value!r}")


def char(value: str) -> None:
    """What the one-shot client sends: one character that is one byte in Latin-1."""
    if not isinstance(value, str):
        raise TypeError(f"must be a str, not {value!r}")
    if len(value) != 1 or ord(value) > 0xFF:
        raise ValueError(f"must be one character that is one byte (Latin-1), not {value!r}")
