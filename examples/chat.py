"""chat: every line a client sends goes to every other client.

The book's select server served many clients from one process by looking at
every socket in turn.  Here each client has its own task, as always with
trio_sock, and the clients share one ``Room``: each has a memory channel of
lines to send it, and a task of its own that sends them.

The rule for a slow reader: a client whose channel already holds
``BACKLOG`` lines it has not taken is disconnected (told why, if it can
still be told), so one client that stops reading never slows the others
and never makes the server buffer without end.

    python -m trio_sock server --handler chat:handle
    nc -U server_socket            # in two terminals: type in one, read in the other

The room lives in one process: with ``--workers N``, clients of different
workers are in different rooms.
"""

from typing import Final

import attrs
import trio

import trio_sock

#: Lines waiting for one client before it counts as too slow, and is disconnected.
BACKLOG: Final = 100
#: A line longer than this is cut: no client can make the others hold megabytes.
MAX_LINE: Final = 4096


@attrs.define
class Room:
    """Everyone connected, each with the channel of lines on its way to it."""

    members: dict[int, trio.MemorySendChannel[bytes]] = attrs.field(factory=dict)
    _next: int = 0

    def join(self) -> tuple[int, trio.MemoryReceiveChannel[bytes]]:
        send, receive = trio.open_memory_channel[bytes](BACKLOG)
        self._next += 1
        self.members[self._next] = send
        return self._next, receive

    def leave(self, member: int) -> None:
        channel = self.members.pop(member, None)
        if channel is not None:
            channel.close()

    def say(self, speaker: int, line: bytes) -> None:
        """Give ``line`` to everyone but ``speaker``; drop whoever cannot keep up."""
        for member, channel in list(self.members.items()):
            if member == speaker:
                continue
            try:
                channel.send_nowait(line)
            except trio.WouldBlock:
                self.leave(member)  # its sender sees the channel closed, and hangs up


ROOM: Final = Room()


async def handle(conn: trio_sock.Connection) -> None:
    member, inbox = ROOM.join()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_deliver, conn, member, inbox, nursery.cancel_scope)
            await _listen(conn, member)
            nursery.cancel_scope.cancel()  # the client left: stop delivering to it
    finally:
        ROOM.leave(member)


async def _listen(conn: trio_sock.Connection, member: int) -> None:
    """Pass on each whole line the client sends, with who said it."""
    partial = b""
    async for data in conn:
        partial += data
        *lines, partial = partial.split(b"\n")
        for line in lines:
            ROOM.say(member, b"%d: %s\n" % (member, line[:MAX_LINE]))
        partial = partial[-MAX_LINE:]


async def _deliver(
    conn: trio_sock.Connection,
    member: int,
    inbox: trio.MemoryReceiveChannel[bytes],
    listening: trio.CancelScope,
) -> None:
    """Send the client the others' lines; if the room dropped it as too slow, hang up."""
    async for line in inbox:
        if member not in ROOM.members:
            break  # dropped: what is still queued for it will never be read
        await conn.send_all(line)
    # The room closed our channel: this client was too slow to keep up.
    with trio.move_on_after(1):
        await conn.send_all(b"* too slow: disconnected\n")
    listening.cancel()
