"""Who is on the other end of a Unix connection, and whether they may be served.

The kernel tells a Unix socket the pid, uid and gid of the process that
connected (``SO_PEERCRED``, taken at ``connect()`` time, so the peer cannot lie).
TCP peers have no such thing; these checks apply to Unix listeners only.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from typing import TYPE_CHECKING, Final

import attrs

from trio_sock.config.addresses import Address, UnixAddress

if TYPE_CHECKING:
    from trio_sock.config.server import ServerConfig

# struct ucred from <sys/socket.h>: pid_t, uid_t, gid_t.
_UCRED: Final = struct.Struct("iII")
# Linux 4.13+: the peer's supplementary groups; not in Python's socket module.
_SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)
# Python's getsockopt() takes at most 1024 bytes: 256 gids.  A peer in more
# groups than that (unheard of) is judged by its primary group alone.
_MAX_GROUPS: Final = 256


@attrs.frozen
class PeerCredentials:
    """The process at the other end of a Unix connection, as it was at ``connect()``."""

    pid: int
    uid: int
    gid: int

    @classmethod
    def of(cls, conn: socket.socket) -> PeerCredentials:
        """Ask the kernel who connected ``conn`` (a connected AF_UNIX socket)."""
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        return cls(*_UCRED.unpack(raw))

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


def _groups_of(conn: socket.socket) -> frozenset[int]:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * _MAX_GROUPS)
    except OSError:
        return frozenset()
    return frozenset(array.array("I", raw))


@attrs.frozen
class AccessPolicy:
    """Which Unix peers are served: those whose uid, or one of whose groups, is allowed."""

    uids: frozenset[int] = frozenset()
    """Users served whatever their groups."""
    gids: frozenset[int] = frozenset()
    """Groups (primary or supplementary) whose members are served."""

    @classmethod
    def same_user(cls) -> AccessPolicy:
        """Only the server's own user: the default for abstract names, which have no
        file permissions to keep others out."""
        return cls(uids=frozenset({os.geteuid()}))

    def allows(self, conn: socket.socket, peer: PeerCredentials) -> bool:
        """True if ``peer`` (the credentials of ``conn``) may be served."""
        if peer.uid in self.uids or peer.gid in self.gids:
            return True
        return bool(self.gids) and not self.gids.isdisjoint(_groups_of(conn))


def policy_for(address: Address, config: ServerConfig) -> AccessPolicy | None:
    """The peer policy of one listener; ``None`` means every peer is served.

    ``--allow-uid``/``--allow-gid`` apply to every Unix listener.  Without them, a
    socket file is guarded by its mode (``--socket-mode``), but an abstract name
    has no file and no mode, so it serves the server's own user only.
    """
    if not isinstance(address, UnixAddress):
        return None
    if config.allow_uids or config.allow_gids:
        return AccessPolicy(uids=config.allow_uids, gids=config.allow_gids)
    return AccessPolicy.same_user() if address.is_abstract else None
