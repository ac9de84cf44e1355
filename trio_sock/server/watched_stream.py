"""A client's socket as a Trio stream, every byte moved a sign of life.

The idle timeout promises to drop a client that "neither sends nor reads" for
so long.  A deadline moved after each whole ``receive_some`` or ``send_all``
breaks that promise wherever one call spans many system calls: a 64 KiB reply
to a client that reads 4 KiB at a time, or a 16 KiB TLS record arriving 300
bytes at a time, looks idle although bytes move all along.  So this stream
notes the time after every ``recv`` and ``send`` that moved a byte
(``Tally.alive``), and ``reaper.reap_idle`` (the same task that watches the
fast path's clients) drops those whose last sign of life is too old: their
pending call raises ``trio.ClosedResourceError``, and so does every call after.

It behaves as ``trio.SocketStream`` (it passes Trio's own stream conformance
checks, every call a checkpoint), but tries each system call before waiting,
as ``fast`` does, and owns no Trio socket object.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Final

import trio

from trio_sock.server.reaper import unsent_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio_sock.server.stats import Tally

#: Trio's own ``receive_some`` default: one read drains most socket buffers.
RECEIVE_SIZE: Final = 65536

# These mean the socket itself was closed under us, not that the peer went away.
_CLOSED_ERRNOS: Final = frozenset({errno.EBADF, errno.ENOTSOCK})


class WatchedStream(trio.abc.HalfCloseableStream):
    """A connected, non-blocking socket as a half-closeable stream that keeps a ``Tally``.

    Args:
        sock: The client's socket, non-blocking.  ``aclose`` closes it.
        tally: The client's figures: ``alive`` moves with every byte either way,
            and, with ``count``, ``received``/``sent`` add up the bytes moved.
        clock: Trio's clock.
        count: Count bytes in ``tally``; off when a layer above (TLS) counts the
            bytes its user sees instead of the bytes on the wire.

    Error handling:
        An OS error on the socket (a reset, a broken pipe) raises
        ``trio.BrokenResourceError`` from it.  A client dropped as idle, or a
        stream closed by ``aclose``, raises ``trio.ClosedResourceError``, in the
        call that was waiting and in every call after.
    """

    # No instance dict: an idle client costs its stream's fields and nothing more.
    __slots__ = (
        "_clock",
        "_closed",
        "_count",
        "_eof_sent",
        "_receiving",
        "_sending",
        "_tally",
        "socket",
    )

    def __init__(
        self,
        sock: socket.socket,
        tally: Tally,
        clock: Callable[[], float],
        *,
        count: bool = True,
    ) -> None:
        self.socket = sock
        self._tally = tally
        self._clock = clock
        self._count = count
        self._closed = False
        self._eof_sent = False
        self._sending = False
        self._receiving = False

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._tally.idle:
            raise trio.ClosedResourceError("the client was dropped for idleness")

    async def _wait_writable(self) -> None:
        """Wait for room to send; the reaper's drop raises ClosedResourceError."""
        tally = self._tally
        tally.unsent = unsent_bytes(self.socket)  # the client taking bytes is a sign of life
        try:
            await trio.lowlevel.wait_writable(self.socket)
        finally:
            tally.unsent = None
        self._check_open()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_open()
            if self._eof_sent:
                raise trio.ClosedResourceError("cannot send after sending EOF")
            sent = self._send(data)
            if sent == len(data):  # all of it at once, the usual case: one schedule point
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            with memoryview(data) as view:
                view = view[sent:]
                while view:
                    await self._wait_writable()
                    view = view[self._send(view) :]
        finally:
            self._sending = False

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        """How much of ``data`` the socket took (0 for now, if none).

        EAGAIN is caught here, not around an ``await``: an exception handled
        across a wait keeps its traceback, and its frames, alive meanwhile.
        """
        try:
            sent = self.socket.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._translate(exc) from exc
        self._moved(sent, sending=True)
        return sent

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check_open()
            await self._wait_writable()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            self._check_open()
            if self._eof_sent:
                return
            self._eof_sent = True
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError as exc:
                raise self._translate(exc) from exc
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError(f"max_bytes must be 1 or more, not {max_bytes!r}")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            # A cancel point that does not yield: the yield comes below, once.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_open()
            data = self._receive(max_bytes)
            if data is not None:  # there already: the schedule point, losing nothing
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            while data is None:  # the wait is the checkpoint
                await trio.lowlevel.wait_readable(self.socket)
                self._check_open()
                data = self._receive(max_bytes)
            return data
        finally:
            self._receiving = False

    def _receive(self, max_bytes: int) -> bytes | None:
        """What the socket holds (``b""`` at EOF), or None if nothing yet (see ``_send``)."""
        try:
            data = self.socket.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise self._translate(exc) from exc
        self._moved(len(data), sending=False)
        if not data:
            self._tally.finished = True
        return data

    def _moved(self, size: int, *, sending: bool) -> None:
        tally = self._tally
        tally.alive = self._clock()
        if self._count:
            if sending:
                tally.sent += size
            else:
                tally.received += size

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self.socket.fileno() != -1:
                # Wakes a task blocked on this socket with ClosedResourceError.
                trio.lowlevel.notify_closing(self.socket)
                self.socket.close()
        await trio.lowlevel.checkpoint()

    def _translate(self, exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
        if exc.errno in _CLOSED_ERRNOS or self.socket.fileno() == -1:
            return trio.ClosedResourceError("this stream was closed")
        return trio.BrokenResourceError(f"socket connection broken: {exc.strerror or exc}")
