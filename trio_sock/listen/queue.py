"""How many connections wait in a listener's queue: what the kernel says, per family.

``--max-clients`` is backpressure: while every slot is taken, connections wait
in the kernel's listen queue.  Under ``--trace`` the server says how many.
"""

from __future__ import annotations

import socket
import struct
from typing import Final

from trio_sock.listen import unix_diag

#: struct tcp_info: 8 one-byte fields, then u32s; for a listening socket the kernel
#: puts the accept queue's length in ``tcpi_unacked``, the fifth u32.
_TCP_INFO_SIZE: Final = 104
_UNACKED_AT: Final = 8 + 4 * 4


def queued(listener: socket.socket) -> int:
    """Connections the kernel holds for ``listener``, not yet accepted.

    Raises:
        OSError: the kernel would not say (no netlink for sock_diag, say).
    """
    if listener.family == socket.AF_UNIX:
        return unix_diag.queued_connections(listener)
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    waiting: int = struct.unpack_from("=I", info, _UNACKED_AT)[0]
    return waiting
