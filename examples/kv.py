"""kv: a key-value store as a sans-I/O line protocol, h11-style: no I/O in it at all.

Each line is one command; each gets one line back:

    SET key value   ->  OK
    GET key         ->  VALUE value    or  NOT_FOUND
    DEL key         ->  DELETED        or  NOT_FOUND
    QUIT            ->  BYE, and the server closes the connection
    anything else   ->  ERROR and why

``KV`` is pure: bytes in, bytes out, so it is tested with plain synchronous
calls (``tests/test_examples_kv.py``), and trio_sock serves it on its fast path:

    python -m trio_sock server --handler kv:KV
    nc -U server_socket            # SET a 1, GET a, DEL a, QUIT

Every client of one server process shares one store (``STORE``); with
``--workers N`` each worker has its own.
"""

from __future__ import annotations

from typing import Final

#: The store every ``KV`` of this process shares, unless given its own.
STORE: Final[dict[bytes, bytes]] = {}
#: A client that sends this much without a newline is talking nonsense: cut it off,
#: rather than buffer without end.
MAX_LINE: Final = 64 * 1024


class KV:
    """One client's conversation: the bytes of a partial line, and whether it said QUIT."""

    def __init__(self, store: dict[bytes, bytes] | None = None) -> None:
        self.store = STORE if store is None else store
        self.done = False
        self._buffer = b""

    def data_received(self, data: bytes) -> bytes:
        """Replies to every whole line in ``data`` (and what came before it)."""
        self._buffer += data
        replies = []
        while not self.done and b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            replies.append(self.command(line.rstrip(b"\r")))
        if len(self._buffer) > MAX_LINE:
            self.done = True
            replies.append(b"ERROR line too long")
        return b"".join(reply + b"\n" for reply in replies)

    def eof_received(self) -> bytes:
        """A last command without its newline still counts."""
        if self._buffer and not self.done:
            line, self._buffer = self._buffer, b""
            return self.command(line.rstrip(b"\r")) + b"\n"
        return b""

    def command(self, line: bytes) -> bytes:
        """The reply to one command line."""
        verb, _, rest = line.strip().partition(b" ")
        key, _, value = rest.strip().partition(b" ")
        match verb.upper(), bool(key), bool(value):
            case b"SET", True, True:
                self.store[key] = value.strip()
                return b"OK"
            case b"GET", True, False:
                return b"VALUE " + self.store[key] if key in self.store else b"NOT_FOUND"
            case b"DEL", True, False:
                return b"DELETED" if self.store.pop(key, None) is not None else b"NOT_FOUND"
            case b"QUIT", False, False:
                self.done = True
                return b"BYE"
            case _:
                return b"ERROR expected SET key value, GET key, DEL key or QUIT"
