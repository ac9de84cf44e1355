"""The increment protocol: every byte comes back as its successor, modulo 256.

Pure code, no I/O (the h11 way): the server, the client, the tests and any
other transport share these few lines and can test them synchronously.
"""

from typing import Final, overload

#: Bytes read by the ``--once`` server, exactly as the book's server reads one ``char``.
ONCE_SIZE: Final = 1

# bytes.translate walks a 256-entry table in C: one pass, no Python per byte,
# which keeps the server's per-chunk cost flat however large the chunk.
_INCREMENT: Final = bytes((value + 1) % 256 for value in range(256))


@overload
def increment(data: bytes) -> bytes: ...
@overload
def increment(data: bytearray) -> bytearray: ...
def increment(data: bytes | bytearray) -> bytes | bytearray:
    """Return the reply to ``data``: each byte plus one, modulo 256.

    Args:
        data: Bytes received from a client, any length (empty gives empty).

    Returns:
        Bytes of the same length and order (and type): ``b"A"`` gives ``b"B"``,
        ``b"Z"`` gives ``b"["`` and ``b"\\xff"`` gives ``b"\\x00"``.
    """
    return data.translate(_INCREMENT)


class Increment:
    """The increment protocol as a sans-I/O class: the server's default handler.

    The shape every sans-I/O handler has (see ``trio_sock.server.handlers``):
    the server makes one per client and calls ``data_received`` with each chunk
    it reads, sending back what it returns.  No state, no I/O.
    """

    __slots__ = ()

    #: Never done: the client says when it is finished, with its EOF.
    done: Final = False

    def data_received(self, data: bytes) -> bytes:
        """Each byte plus one, modulo 256."""
        return data.translate(_INCREMENT)

    def eof_received(self) -> bytes:
        """Nothing more to say once the client is finished."""
        return b""
