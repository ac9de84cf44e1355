"""``--trace``: the chapter's socket calls, one line each on stderr, as they are made.

Trio hides the calls the chapter teaches (``socket``, ``bind``, ``listen``,
``accept``, ``connect``, ``read``, ``write``, ``close``).  Under ``--trace`` the
code that makes them says so, in strace's shape and the chapter's words::

    socket(AF_UNIX, SOCK_STREAM) = fd 3
    connect(fd 3, "server_socket") = -1 ENOENT (No such file or directory)

Each line is written after the call returns, with the descriptor numbers the
kernel gave: nothing is printed that was not done.  Without ``--trace`` no
``Tracer`` exists, and the code that would use one takes its usual path.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

#: How strace writes the bytes it cannot show as themselves.
_ESCAPES: Final = {
    ord("\t"): "\\t",
    ord("\n"): "\\n",
    ord("\v"): "\\v",
    ord("\f"): "\\f",
    ord("\r"): "\\r",
    ord('"'): '\\"',
    ord("\\"): "\\\\",
}
_SHUT_NAMES: Final = {
    socket.SHUT_RD: "SHUT_RD",
    socket.SHUT_WR: "SHUT_WR",
    socket.SHUT_RDWR: "SHUT_RDWR",
}
#: Trio's own ``receive_some`` default.
RECEIVE_SIZE: Final = 65536


def quoted(data: bytes | bytearray | memoryview) -> str:
    """``data`` as strace shows it: in double quotes, escapes for what is not printable."""
    return '"' + "".join(_quoted_byte(b) for b in bytes(data)) + '"'


def _quoted_byte(b: int) -> str:
    if b in _ESCAPES:
        return _ESCAPES[b]
    return chr(b) if 0x20 <= b < 0x7F else f"\\{b:o}"


def address_text(family: int, sockaddr: object) -> str:
    """A socket address as a call's argument: a quoted path (``@"name"`` if abstract),
    or ``{AF_INET, "HOST", port N}``."""
    if family == socket.AF_UNIX:
        path = sockaddr if isinstance(sockaddr, bytes) else os.fsencode(str(sockaddr))
        return "@" + quoted(path[1:]) if path.startswith(b"\0") else quoted(path)
    assert isinstance(sockaddr, tuple)
    return f'{{{family_name(family)}, "{sockaddr[0]}", port {sockaddr[1]}}}'


def family_name(family: int) -> str:
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return str(family)


def failure(exc: OSError) -> str:
    """A failed call's result, as strace shows it: ``-1 ENOENT (No such file or directory)``."""
    number = exc.errno or 0
    name = errno.errorcode.get(number, str(number))
    return f"-1 {name} ({exc.strerror or os.strerror(number)})"


def new_socket(family: int, tracer: Tracer | None) -> socket.socket:
    """A stream socket of ``family``: a plain one, or under ``--trace`` a traced one."""
    if tracer is None:
        return socket.socket(family, socket.SOCK_STREAM)
    return tracer.open_socket(family)


class Tracer:
    """Writes one line per socket call: ``CALL = RESULT``.

    Args:
        out: Where the lines go; standard error unless told.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out

    def __call__(self, call: str, result: object) -> None:
        self._write(f"{call} = {result}")

    def failed(self, call: str, exc: OSError) -> None:
        self(call, failure(exc))

    def note(self, text: str) -> None:
        """A line that is no call, such as what the kernel says of a queue: ``# text``."""
        self._write(f"# {text}")

    def _write(self, line: str) -> None:
        print(line, file=self._out or sys.stderr, flush=True)

    def open_socket(self, family: int, kind: int = socket.SOCK_STREAM) -> TracedSocket:
        """``socket(family, kind)``, made and traced; its own calls are traced too."""
        sock = TracedSocket(family, kind)
        sock._trace = self
        self(
            f"socket({family_name(family)}, {socket.SocketKind(kind).name})", f"fd {sock.fileno()}"
        )
        return sock


_T = TypeVar("_T")


def _zero(_: object) -> int:
    """What a call that returns nothing returned, as strace shows it."""
    return 0


class TracedSocket(socket.socket):
    """A socket whose bind, listen, connect, reads, writes, shutdown and close are traced.

    The server's own code runs unchanged on it (``WatchedStream``, the
    departure's close): each call goes to the kernel as usual, then its line is
    written.  Made only under ``--trace``, from an accepted or connected socket.
    """

    __slots__ = ("_trace",)
    _trace: Tracer

    @classmethod
    def adopt(cls, sock: socket.socket, tracer: Tracer) -> TracedSocket:
        """The same descriptor (and blocking mode) as ``sock``, which is detached."""
        timeout = sock.gettimeout()
        traced = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        traced.settimeout(timeout)
        traced._trace = tracer
        return traced

    def _made(
        self, call: str, method: Callable[..., _T], *args: object, shown: Callable[[_T], object]
    ) -> _T:
        """``method(*args)``, then its line: ``call = shown(result)``, or its error."""
        try:
            result = method(*args)
        except OSError as exc:
            self._trace.failed(call, exc)
            raise
        self._trace(call, shown(result))
        return result

    def bind(self, address: str | bytes | tuple[Any, ...]) -> None:  # type: ignore[override]
        call = f"bind(fd {self.fileno()}, {address_text(self.family, address)})"
        self._made(call, super().bind, address, shown=_zero)

    def listen(self, backlog: int = socket.SOMAXCONN) -> None:
        self._made(f"listen(fd {self.fileno()}, {backlog})", super().listen, backlog, shown=_zero)

    def connect(self, address: str | bytes | tuple[Any, ...]) -> None:  # type: ignore[override]
        call = f"connect(fd {self.fileno()}, {address_text(self.family, address)})"
        self._made(call, super().connect, address, shown=_zero)

    def recv(self, size: int, flags: int = 0) -> bytes:
        return self._made(
            f"read(fd {self.fileno()}, {size})", super().recv, size, flags, shown=quoted
        )

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:  # type: ignore[override]
        call = f"write(fd {self.fileno()}, {quoted(data)})"
        return self._made(call, super().send, data, flags, shown=str)

    def shutdown(self, how: int) -> None:
        call = f"shutdown(fd {self.fileno()}, {_SHUT_NAMES.get(how, how)})"
        self._made(call, super().shutdown, how, shown=_zero)

    def close(self) -> None:
        fd = self.fileno()
        super().close()
        if fd != -1:
            self._trace(f"close(fd {fd})", 0)


def traced_accept(
    listener: socket.socket, tracer: Tracer
) -> Callable[[], tuple[socket.socket, Any]]:
    """``listener.accept`` that traces each call and returns a ``TracedSocket``.

    ``accept(fd 6) = fd 9``: the named socket's descriptor, and the new one the
    kernel made for this client, which is a different socket.
    """

    def accept() -> tuple[socket.socket, Any]:
        call = f"accept(fd {listener.fileno()})"
        try:
            conn, peer = listener.accept()
        except OSError as exc:
            tracer.failed(call, exc)
            raise
        tracer(call, f"fd {conn.fileno()}")
        return TracedSocket.adopt(conn, tracer), peer

    return accept


class TracedStream(trio.abc.HalfCloseableStream):
    """A connected socket as a Trio stream whose every system call is traced (the client's).

    Each call is tried first, as the server's own streams do, so a call that
    would block shows as ``-1 EAGAIN`` before the wait and the call that then
    succeeds.  Speed is not its point; the calls are.

    Error handling:
        An OS error (a reset, a broken pipe) raises ``trio.BrokenResourceError``;
        a closed stream raises ``trio.ClosedResourceError``.
    """

    def __init__(self, sock: socket.socket, tracer: Tracer) -> None:
        sock.setblocking(False)
        self.socket = TracedSocket.adopt(sock, tracer)

    def _check_open(self) -> None:
        if self.socket.fileno() == -1:
            raise trio.ClosedResourceError("this stream was closed")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        with memoryview(data) as view:
            while view:
                self._check_open()
                try:
                    view = view[self.socket.send(view) :]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.socket)
                except OSError as exc:
                    raise trio.BrokenResourceError(exc.strerror or str(exc)) from exc
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._check_open()
            try:
                data = self.socket.recv(RECEIVE_SIZE if max_bytes is None else max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.socket)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(exc.strerror or str(exc)) from exc
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self.socket)

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise trio.BrokenResourceError(exc.strerror or str(exc)) from exc

    async def aclose(self) -> None:
        if self.socket.fileno() != -1:
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
        await trio.lowlevel.checkpoint()
