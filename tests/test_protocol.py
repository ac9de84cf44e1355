"""The protocol is pure: tested with plain synchronous functions, no sockets."""

from hypothesis import given
from hypothesis import strategies as st

from trio_sock.protocol import increment


def test_the_books_examples_come_back_incremented() -> None:
    assert increment(b"A") == b"B"
    assert increment(b"Z") == b"["
    assert increment(b"\xff") == b"\x00"


def test_every_byte_value_maps_to_its_successor_modulo_256() -> None:
    every_byte = bytes(range(256))
    assert increment(every_byte) == bytes(range(1, 256)) + b"\x00"


def test_nothing_in_gives_nothing_out() -> None:
    assert increment(b"") == b""


@given(st.binary(max_size=4096))
def test_any_bytes_keep_their_length_and_order_each_plus_one(data: bytes) -> None:
    reply = increment(data)
    assert len(reply) == len(data)
    assert all(out == (byte + 1) % 256 for byte, out in zip(data, reply, strict=True))
