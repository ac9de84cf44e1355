"""The ready line: ``server waiting on ADDRESS...``, the one line a server prints on stdout.

It is a protocol, not prose: tests, benchmarks and a ``--workers`` parent wait
for it to know that every listener accepts, so it is written here once.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

    from trio_sock.config.addresses import Address

#: What the line starts with; the addresses follow, one shell word each.
READY_PREFIX: Final = "server waiting on "


def ready_line(addresses: Iterable[Address]) -> str:
    """The ready line for ``addresses``, without its newline."""
    return READY_PREFIX + " ".join(map(_word, addresses))


def is_ready_line(line: bytes) -> bool:
    """Whether a line a server printed is its ready line."""
    return line.startswith(READY_PREFIX.encode())


def ready_words(line: str) -> list[str]:
    """The addresses a ready line lists, as the words they were printed as."""
    if not line.startswith(READY_PREFIX):
        raise ValueError(f"not a ready line: {line!r}")
    return shlex.split(line.removeprefix(READY_PREFIX))


def _word(address: Address) -> str:
    """An address as the ready line lists it: quoted as a shell word only if it must be,
    so that a path with spaces stays one word and everything else reads as is.

    A byte that is not UTF-8 shows as ``\\xNN`` (``UnixAddress.display``), and a
    character stdout's encoding lacks as ``\\xNN``/``\\uNNNN``: printing the line never
    fails, whatever the locale."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    text = str(address).encode(encoding, "backslashreplace").decode(encoding)
    return shlex.quote(text) if any(c.isspace() or c in "'\"\\" for c in text) else text
