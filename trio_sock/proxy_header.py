"""The PROXY protocol header a load balancer sends first (HAProxy's spec), read without I/O.

Behind HAProxy or nginx, a connection's peer is the balancer; with the PROXY
protocol the balancer begins each connection with a header naming the real
client.  Version 1 is a line of text, version 2 a binary block; ``parse`` takes
either, from the bytes received so far, and says how long the header was, so
that what follows it (the client's own bytes) reaches the protocol untouched.

Pure code, like ``protocol``: the server does the reading, with its deadline.
Written here rather than taken from a library: the one maintained Python
parser (``proxy-protocol``) brings a dependency and an asyncio server of its
own, and is lenient where a server must not be (an unknown v2 command or
family).  The spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import os
import struct
from typing import Final

import attrs

from trio_sock.config.addresses import TcpAddress, UnixAddress

V1_PREFIX: Final = b"PROXY "
#: A v1 line is at most 107 bytes, its CRLF included (spec, 2.1).
V1_MAX: Final = 107
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: Signature, version and command, family and transport, length.
V2_FIXED: Final = struct.Struct("!12sBBH")
_V2_INET: Final = struct.Struct("!4s4sHH")
_V2_INET6: Final = struct.Struct("!16s16sHH")
_V2_UNIX: Final = struct.Struct("!108s108s")
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_V2_UNSPEC, _V2_INET_FAMILY, _V2_INET6_FAMILY, _V2_UNIX_FAMILY = 0x0, 0x1, 0x2, 0x3
_V2_STREAM_OR_UNSPEC: Final = frozenset({0x0, 0x1})


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY protocol header; the message says what is wrong."""


@attrs.frozen
class ProxyHeader:
    """What a PROXY header says of a connection."""

    source: TcpAddress | UnixAddress | None
    """The real client; ``None`` when the balancer speaks for itself (v2 ``LOCAL``,
    a health check) or does not know (v1 ``UNKNOWN``, v2 ``UNSPEC``)."""
    destination: TcpAddress | UnixAddress | None
    """The address the client connected to, on the balancer; ``None`` as above."""


def parse(data: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    """The header at the start of ``data`` and its length in bytes, or ``None`` if
    ``data`` is the beginning of one and more bytes are needed.

    Raises:
        ProxyHeaderError: ``data`` does not begin with a header (missing, malformed,
            or a v1 line longer than the spec allows).
    """
    data = bytes(data)
    if data[:1] == V2_SIGNATURE[:1]:  # the versions differ from the first byte on
        if not V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]):
            raise ProxyHeaderError("a malformed PROXY v2 signature")
        return _parse_v2(data)
    if not V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
        raise ProxyHeaderError("no PROXY protocol header: the connection must begin with one")
    return _parse_v1(data) if len(data) > len(V1_PREFIX) else None


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end == -1:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"a PROXY v1 line longer than {V1_MAX} bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("a PROXY v1 line must end with CRLF")
        return None
    line = data[:end].decode("ascii", "replace")
    words = line.split(" ")
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(None, None), end + 2
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"a malformed PROXY v1 line: {line!r}")
    version = 4 if words[1] == "TCP4" else 6
    source = TcpAddress(_v1_ip(words[2], version), _v1_port(words[4]))
    destination = TcpAddress(_v1_ip(words[3], version), _v1_port(words[5]))
    return ProxyHeader(source, destination), end + 2


def _v1_ip(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(
            f"not an IPv{version} address in a PROXY v1 line: {text!r}"
        ) from None
    if address.version != version:
        raise ProxyHeaderError(f"not an IPv{version} address in a PROXY v1 line: {text!r}")
    return str(address)


def _v1_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        raise ProxyHeaderError(f"not a port in a PROXY v1 line: {text!r}")
    return int(text)


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    if len(data) < V2_FIXED.size:
        return None
    _, version_command, family_transport, length = V2_FIXED.unpack_from(data)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header of version {version_command >> 4}, not 2")
    command, family, transport = (
        version_command & 0xF,
        family_transport >> 4,
        family_transport & 0xF,
    )
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"PROXY v2 header with an unknown command {command}")
    if family > _V2_UNIX_FAMILY or transport not in _V2_STREAM_OR_UNSPEC:
        raise ProxyHeaderError("PROXY v2 header for something other than a stream socket")
    total = V2_FIXED.size + length
    if len(data) < total:
        return None
    block = data[V2_FIXED.size : total]
    if command == _V2_LOCAL or family == _V2_UNSPEC:
        return ProxyHeader(None, None), total  # the balancer itself, or no address given
    layout = {_V2_INET_FAMILY: _V2_INET, _V2_INET6_FAMILY: _V2_INET6, _V2_UNIX_FAMILY: _V2_UNIX}
    shape = layout[family]
    if length < shape.size:
        raise ProxyHeaderError(f"PROXY v2 header too short for its addresses: {length} bytes")
    if family == _V2_UNIX_FAMILY:
        source_path, destination_path = shape.unpack_from(block)
        return ProxyHeader(_unix(source_path), _unix(destination_path)), total
    source_ip, destination_ip, source_port, destination_port = shape.unpack_from(block)
    source = TcpAddress(str(ipaddress.ip_address(source_ip)), source_port)
    destination = TcpAddress(str(ipaddress.ip_address(destination_ip)), destination_port)
    return ProxyHeader(source, destination), total  # TLVs after the addresses: not needed


def _unix(raw: bytes) -> UnixAddress | None:
    """A v2 Unix address: a NUL-padded path, or an abstract name (a leading NUL);
    ``None`` if empty, or if it is no address trio_sock would accept."""
    if raw[:1] == b"\0":
        name = raw[1:].rstrip(b"\0")
        text = "@" + os.fsdecode(name) if name else ""
    else:
        text = os.fsdecode(raw.split(b"\0", 1)[0])
    try:
        return UnixAddress(text) if text else None
    except (TypeError, ValueError):
        return None
