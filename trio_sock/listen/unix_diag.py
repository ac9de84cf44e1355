"""Which Unix socket files have a listening socket on them, asked of the kernel (sock_diag).

Connecting to a socket to see whether anything listens there is felt by the
listener: the book's server1.c reads EOF from the probe, writes, and dies of
SIGPIPE.  The kernel can answer without that: a ``NETLINK_SOCK_DIAG`` dump of
every listening Unix socket, with ``UDIAG_SHOW_VFS``, gives the device and inode
of the file each one is bound to.  (``/proc/net/unix`` cannot: it shows the name
at bind time, and a socket bound under a temporary name and renamed, as
trio_sock's are, is listed under the old name.)

The answer covers this network namespace only, and the kernel reports inode
numbers in 32 bits; ``listen.unix`` connects to a socket the kernel does not list,
so a server elsewhere is still found (the connect cannot hurt a socket nothing
here listens on).  Parsing is pure, so it is tested with crafted bytes.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from typing import Final

# From <linux/netlink.h>, <linux/sock_diag.h>, <linux/unix_diag.h>: kernel ABI, fixed.
NETLINK_SOCK_DIAG: Final = 4
SOCK_DIAG_BY_FAMILY: Final = 20
_NLM_F_REQUEST: Final = 0x1
_NLM_F_DUMP: Final = 0x300
_NLMSG_ERROR: Final = 2
_NLMSG_DONE: Final = 3
#: Unix sockets reuse TCP's state numbers; 10 is TCP_LISTEN.
_TCP_LISTEN: Final = 10
_UDIAG_SHOW_VFS: Final = 0x2
_UDIAG_SHOW_PEER: Final = 0x4
_UDIAG_SHOW_RQLEN: Final = 0x10
UNIX_DIAG_VFS: Final = 1
UNIX_DIAG_PEER: Final = 2
UNIX_DIAG_RQLEN: Final = 4
#: Ask for one socket by inode, whatever its cookie (INET_DIAG_NOCOOKIE).
_NO_COOKIE: Final = 0xFFFFFFFF
#: struct nlmsghdr: length, type, flags, sequence, port id.
HEADER: Final = struct.Struct("=IHHII")
#: struct unix_diag_req: family, protocol, pad, states, ino, show, cookie[2].
_REQUEST: Final = struct.Struct("=BBHIIIII")
#: struct unix_diag_msg: family, type, state, pad, ino, cookie[2]; attributes follow.
MESSAGE: Final = struct.Struct("=BBBBIII")
#: struct rtattr: length (header included), type.
ATTRIBUTE: Final = struct.Struct("=HH")
#: struct unix_diag_vfs: the bound file's inode, then its device (kernel dev_t).
VFS: Final = struct.Struct("=II")
#: The kernel answers a dump at once, from memory; a second means it is not going to.
TIMEOUT: Final = 1.0
#: Any sequence number: each dump has a socket of its own, so no answer is someone else's.
_SEQUENCE: Final = 1
#: Room for many answers per read; the kernel never sends a dump part larger.
_READ_SIZE: Final = 1 << 16


class UnixDiagError(Exception):
    """The kernel's answer was not what ``sock_diag`` promises: do not trust it."""


def _align(size: int) -> int:
    return (size + 3) & ~3  # netlink messages and attributes are padded to 4 bytes


def request(sequence: int = _SEQUENCE) -> bytes:
    """The dump request: every listening Unix socket, with its file's inode and device."""
    body = _REQUEST.pack(socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, 0, _UDIAG_SHOW_VFS, 0, 0)
    flags = _NLM_F_REQUEST | _NLM_F_DUMP
    return HEADER.pack(HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, flags, sequence, 0) + body


def parse(data: bytes, found: set[tuple[int, int]]) -> bool:
    """Add each ``(kernel device, inode)`` in one read of the dump to ``found``.

    Returns:
        True once the dump's last message (``NLMSG_DONE``) was in ``data``.

    Raises:
        OSError: the kernel refused the request (its errno).
        UnixDiagError: ``data`` is not a well-formed answer.
    """
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            raise UnixDiagError(f"a truncated netlink header at byte {offset}")
        length, kind, _, _, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size or offset + length > len(data):
            raise UnixDiagError(f"a netlink message of length {length} at byte {offset}")
        body = data[offset + HEADER.size : offset + length]
        if kind in (_NLMSG_ERROR, _NLMSG_DONE):
            error = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
            if error:
                raise OSError(error, os.strerror(error))
            if kind == _NLMSG_DONE:
                return True
        elif kind == SOCK_DIAG_BY_FAMILY:
            _parse_socket(body, found)
        else:
            raise UnixDiagError(f"a netlink message of unexpected type {kind}")
        offset += _align(length)
    return False


def _parse_socket(body: bytes, found: set[tuple[int, int]]) -> None:
    vfs = _attributes(body).get(UNIX_DIAG_VFS)
    if vfs is not None:
        if len(vfs) < VFS.size:
            raise UnixDiagError(f"a UNIX_DIAG_VFS attribute of {len(vfs)} bytes")
        inode, device = VFS.unpack_from(vfs)
        found.add((device, inode))


def _attributes(body: bytes) -> dict[int, bytes]:
    """A unix_diag_msg's attributes by type."""
    if len(body) < MESSAGE.size:
        raise UnixDiagError(f"a unix_diag_msg of {len(body)} bytes")
    found = {}
    offset = MESSAGE.size
    while offset + ATTRIBUTE.size <= len(body):
        length, kind = ATTRIBUTE.unpack_from(body, offset)
        if length < ATTRIBUTE.size or offset + length > len(body):
            raise UnixDiagError(f"an attribute of length {length} in a unix_diag_msg")
        found[kind] = body[offset + ATTRIBUTE.size : offset + length]
        offset += _align(length)
    return found


def file_key(found: os.stat_result) -> tuple[int, int]:
    """A file's ``lstat`` as ``parse`` reports sockets: the kernel's own dev_t encoding
    (``major << 20 | minor``, not userspace's), and the inode's low 32 bits."""
    return (os.major(found.st_dev) << 20 | os.minor(found.st_dev), found.st_ino & 0xFFFFFFFF)


def listening_files() -> set[tuple[int, int]]:
    """Ask the kernel for the ``(device, inode)`` key of every listening Unix socket's file.

    Synchronous and bounded: a local exchange with the kernel, given ``TIMEOUT``
    seconds in all.  Compare with ``file_key``.

    Raises:
        OSError: netlink is unavailable or refused (EPERM in some sandboxes,
            EAFNOSUPPORT, ENOENT without the unix_diag module), or too slow.
        UnixDiagError: the answer was malformed.
    """
    deadline = time.monotonic() + TIMEOUT
    found: set[tuple[int, int]] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(TIMEOUT)
        diag.send(request())
        while not parse(diag.recv(_READ_SIZE), found):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the kernel's list of listening Unix sockets never ended")
            diag.settimeout(remaining)
    return found


# --- how much a connected socket's peer has not read yet ---------------------------------


#: One netlink socket per process for the questions the idle reaper asks, which
#: come one at a time from Trio's thread and are answered at once.
def unread_by_peer(sock: socket.socket) -> int:
    """Bytes this connected Unix stream socket sent that its peer has not read yet.

    Exact to the byte, unlike ``SIOCOUTQ``, which counts the kernel's buffers:
    on a Unix socket those are freed only once the reader has taken a whole
    one (up to 32 KiB), so a client reading 4 KiB at a time shows no progress
    there for seconds.  Two local questions to the kernel (our socket's peer,
    then that peer's receive queue); asked only by a task about to wait for
    room to send, the case where the client is already the slower side.

    Raises:
        OSError: netlink is unavailable or refused, or the socket has no peer.
        UnixDiagError: the answer was malformed.
    """
    peer = _ask(os.fstat(sock.fileno()).st_ino, _UDIAG_SHOW_PEER).get(UNIX_DIAG_PEER)
    if peer is None or len(peer) < 4:
        raise OSError(errno.ENOTCONN, "the socket has no peer")
    (peer_inode,) = struct.unpack_from("=I", peer)
    queue = _ask(peer_inode, _UDIAG_SHOW_RQLEN).get(UNIX_DIAG_RQLEN)
    if queue is None or len(queue) < 8:
        raise UnixDiagError("no UNIX_DIAG_RQLEN in the kernel's answer")
    unread: int = struct.unpack_from("=I", queue)[0]
    return unread


def queued_connections(listener: socket.socket) -> int:
    """Connections waiting in a listening Unix socket's queue, not yet accepted: the
    Recv-Q that ``ss -lx`` shows.

    Raises:
        OSError: netlink is unavailable or refused.
        UnixDiagError: the answer was malformed.
    """
    queue = _ask(os.fstat(listener.fileno()).st_ino, _UDIAG_SHOW_RQLEN).get(UNIX_DIAG_RQLEN)
    if queue is None or len(queue) < 8:
        raise UnixDiagError("no UNIX_DIAG_RQLEN in the kernel's answer")
    waiting: int = struct.unpack_from("=I", queue)[0]
    return waiting


def _ask(inode: int, show: int) -> dict[int, bytes]:
    """The attributes the kernel gives for the Unix socket with this inode."""
    body = _REQUEST.pack(
        socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode & 0xFFFFFFFF, show, _NO_COOKIE, _NO_COOKIE
    )
    # A socket per question (a few microseconds next to the kernel's walk)
    # rather than one kept open for the life of the process.
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as asker:
        asker.settimeout(TIMEOUT)
        asker.send(
            HEADER.pack(HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 0, 0) + body
        )
        data = asker.recv(_READ_SIZE)
    if len(data) < HEADER.size:
        raise UnixDiagError("a truncated netlink answer")
    length, kind, _, _, _ = HEADER.unpack_from(data)
    body = data[HEADER.size : length]
    if kind == _NLMSG_ERROR:
        error = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
        raise OSError(error, os.strerror(error))
    if kind != SOCK_DIAG_BY_FAMILY:
        raise UnixDiagError(f"a netlink message of unexpected type {kind}")
    return _attributes(body)
