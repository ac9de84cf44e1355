"""``proxy_header.parse`` against HAProxy's spec: headers built here from the spec's
layouts, every prefix of them, what follows them, and bytes that are no header."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sock.config.addresses import TcpAddress, UnixAddress
from trio_sock.proxy_header import ProxyHeader, ProxyHeaderError, parse

if TYPE_CHECKING:
    import ipaddress

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
payload = st.binary(max_size=64)
tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=20)), max_size=3).map(
    lambda items: b"".join(struct.pack("!BH", kind, len(v)) + v for kind, v in items)
)


def v1(family: str, src: object, dst: object, sport: int, dport: int) -> bytes:
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(command: int, family: int, block: bytes) -> bytes:
    return SIGNATURE + struct.pack("!BBH", 0x20 | command, (family << 4) | 0x1, len(block)) + block


def addresses(
    src: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
    sport: int,
    dport: int,
) -> ProxyHeader:
    return ProxyHeader(TcpAddress(str(src), sport), TcpAddress(str(dst), dport))


def assert_parses(header: bytes, expected: ProxyHeader, after: bytes) -> None:
    """The header whole, with bytes after it, and every prefix of it."""
    assert parse(header + after) == (expected, len(header))
    for cut in range(len(header)):
        assert parse(header[:cut]) is None, cut


@given(ipv4, ipv4, ports, ports, payload)
def test_v1_tcp4(
    src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, sp: int, dp: int, after: bytes
) -> None:
    assert_parses(v1("TCP4", src, dst, sp, dp), addresses(src, dst, sp, dp), after)


@given(ipv6, ipv6, ports, ports, payload)
def test_v1_tcp6(
    src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, sp: int, dp: int, after: bytes
) -> None:
    assert_parses(v1("TCP6", src, dst, sp, dp), addresses(src, dst, sp, dp), after)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=90), payload)
def test_v1_unknown_says_nothing_of_the_client(rest: str, after: bytes) -> None:
    # Whatever follows UNKNOWN on its line is ignored (spec, 2.1).
    line = f"PROXY UNKNOWN {rest}" if rest else "PROXY UNKNOWN"
    assert_parses(f"{line}\r\n".encode(), ProxyHeader(None, None), after)


@given(ipv4, ipv4, ports, ports, tlvs, payload)
def test_v2_inet(
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
    sp: int,
    dp: int,
    tlv: bytes,
    after: bytes,
) -> None:
    block = struct.pack("!4s4sHH", src.packed, dst.packed, sp, dp) + tlv
    assert_parses(v2(0x1, 0x1, block), addresses(src, dst, sp, dp), after)


@given(ipv6, ipv6, ports, ports, tlvs, payload)
def test_v2_inet6(
    src: ipaddress.IPv6Address,
    dst: ipaddress.IPv6Address,
    sp: int,
    dp: int,
    tlv: bytes,
    after: bytes,
) -> None:
    block = struct.pack("!16s16sHH", src.packed, dst.packed, sp, dp) + tlv
    assert_parses(v2(0x1, 0x2, block), addresses(src, dst, sp, dp), after)


def test_v2_unix_paths_and_abstract_names() -> None:
    block = struct.pack("!108s108s", b"/run/client.sock", b"\0balancer")
    expected = ProxyHeader(UnixAddress("/run/client.sock"), UnixAddress("@balancer"))
    assert_parses(v2(0x1, 0x3, block), expected, b"A")


@given(st.integers(0, 3), tlvs, payload)
def test_v2_local_is_the_balancer_itself(family: int, block: bytes, after: bytes) -> None:
    assert_parses(v2(0x0, family, block), ProxyHeader(None, None), after)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
        (b"A", "no PROXY protocol header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "must end with CRLF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "malformed"),
        (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "not an IPv4 address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not an IPv4 address"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not an IPv6 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "not a port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "not a port"),
        (b"PROXY UNKNOWN " + b"x" * 100, "longer than 107"),
        (b"\r\n\r\n\x00\r\nQUIX\n", "malformed PROXY v2 signature"),
        (SIGNATURE + b"\x11\x11\x00\x00", "version 1, not 2"),
        (SIGNATURE + b"\x22\x11\x00\x00", "unknown command 2"),
        (SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "other than a stream"),
        (SIGNATURE + b"\x21\x41\x00\x00", "other than a stream"),
        (SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "too short for its addresses"),
    ],
)
def test_what_is_no_header_is_refused_saying_why(data: bytes, fragment: str) -> None:
    with pytest.raises(ProxyHeaderError, match=fragment):
        parse(data)


@given(st.binary(max_size=300))
def test_any_bytes_are_a_header_more_to_read_or_a_clear_refusal(data: bytes) -> None:
    try:
        found = parse(data)
    except ProxyHeaderError:
        return
    if found is not None:
        header, size = found
        assert 0 < size <= len(data)
        assert parse(data[:size]) == (header, size)
