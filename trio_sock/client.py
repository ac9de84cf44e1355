"""The chapter's client: connect, send a character, read back its successor.

Every OS error is translated here, once, into an error whose message names the
address, says what went wrong and what to do (``start one with: ...``).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import stat
from typing import TYPE_CHECKING, Final, Literal, TypeVar, overload

import trio

from trio_sock.config.addresses import Address, TcpAddress, UnixAddress
from trio_sock.config.defaults import DEFAULT_TCP_HOST, DEFAULT_TCP_PORT, DEFAULT_UNIX_PATH
from trio_sock.errors import ClientTimeoutError, ConnectError, ProtocolError, why_broken
from trio_sock.tls import client_context
from trio_sock.trace import TracedStream, Tracer, new_socket

if TYPE_CHECKING:
    from trio_sock.config.client import ClientConfig

_log = logging.getLogger("trio_sock.client")

#: With ``--wait``, the first retry comes this soon: a server that is starting
#: binds in milliseconds.
FIRST_RETRY_PAUSE: Final = 0.02
#: Retries back off up to this pause, so a long wait costs a few attempts a second.
MAX_RETRY_PAUSE: Final = 0.5
#: A Unix server whose listen queue is full answers EAGAIN instead of queueing
#: us: it is busy, not gone.  Knock again this soon, within the timeout.
QUEUE_FULL_PAUSE: Final = 0.01

#: What TLS runs over: a plain stream, or under --trace one whose calls are traced.
PlainStream = TypeVar("PlainStream", trio.SocketStream, TracedStream)

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH:
# a trusted certificate for another name, which no --tls-ca can fix.
_NAME_MISMATCH: Final = frozenset({62, 64})
# These mean "no server there yet": worth retrying while --wait lasts.
_NOT_THERE_YET: Final = frozenset({errno.ENOENT, errno.ECONNREFUSED})


def start_command(address: Address) -> str:
    """The command that starts a server a client with ``address`` would reach."""
    command = "python -m trio_sock server"
    if address == UnixAddress(DEFAULT_UNIX_PATH) or address == TcpAddress(
        DEFAULT_TCP_HOST, DEFAULT_TCP_PORT
    ):
        return command
    if isinstance(address, UnixAddress):
        import shlex  # only for this hint, after a failure

        return f"{command} --unix {shlex.quote(address.path)}"
    return f"{command} --tcp {str(address).removeprefix('tcp:')}"


def _connect_error(address: Address, exc: OSError) -> ConnectError:
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        hint = "check the host name"
    elif isinstance(address, UnixAddress) and (too_long := _too_long(address)):
        hint = too_long  # no server could listen there either: suggest none
    elif isinstance(address, UnixAddress) and not address.is_abstract and _not_a_socket(address):
        hint = "that path is not a socket; give the server's socket file with --unix"
    elif exc.errno in _NOT_THERE_YET:
        hint = f"is the server running? start one with: {start_command(address)}"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "the socket file's permissions keep you out (the server's --socket-mode)"
    else:
        hint = f"is the server running? start one with: {start_command(address)}"
    return ConnectError(f"{address}: {reason}; {hint}", errno=exc.errno)


def _too_long(address: UnixAddress) -> str:
    """What to say if ``address`` is longer than the kernel's limit; "" if it fits."""
    from trio_sock.listen.unix import SUN_PATH_MAX  # only after a failure

    name = address.path[1:] if address.is_abstract else address.path
    size = len(os.fsencode(name))
    if size <= SUN_PATH_MAX:
        return ""
    return (
        f"the path is {size} bytes, longer than the {SUN_PATH_MAX} a Unix socket address"
        " can hold; use a shorter path"
    )


def _not_a_socket(address: UnixAddress) -> bool:
    try:
        return not stat.S_ISSOCK(os.stat(address.path).st_mode)
    except OSError:
        return False


async def _connect(
    family: int, sockaddr: str | tuple[object, ...], trace: Tracer | None = None
) -> socket.socket:
    sock = new_socket(family, trace)
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.connect(sockaddr)  # traced by the socket itself under --trace
            except BlockingIOError as exc:
                if exc.errno != errno.EINPROGRESS:
                    await trio.sleep(QUEUE_FULL_PAUSE)
                    continue
            else:
                return sock
            # TCP: the handshake is under way; writable means it is decided.
            await trio.lowlevel.wait_writable(sock)
            failure = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if trace is not None:
                outcome = failure and f"{errno.errorcode.get(failure)} ({os.strerror(failure)})"
                trace(f"getsockopt(fd {sock.fileno()}, SO_ERROR)", outcome)
            if failure:
                raise OSError(failure, os.strerror(failure))
            return sock
    except BaseException:
        sock.close()  # traced by the socket itself under --trace
        raise


@overload
async def open_stream(address: Address, *, tls: Literal[False] = False) -> trio.SocketStream: ...
@overload
async def open_stream(
    address: Address, *, tls: Literal[True] | ssl.SSLContext
) -> trio.SSLStream[trio.SocketStream]: ...
async def open_stream(
    address: Address, *, tls: bool | ssl.SSLContext = False
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """Connect to a trio_sock server (or any stream server) at ``address``, for any protocol.

    Use it as ``async with await open_stream(address) as stream``: leaving the
    block closes the connection.

    Args:
        address: The server.
        tls: ``False`` for a plain stream (a ``trio.abc.HalfCloseableStream``);
            ``True`` for TLS trusting the system's CAs, or the ``ssl.SSLContext``
            to use; the server's certificate is checked against ``address.host``.

    Raises:
        ConnectError: nothing accepts there, or the host is unknown (the message
            says how to start a server), or the TLS handshake failed (it says why).
        ValueError: TLS asked of a Unix socket.
    """
    if tls is False:
        return await _open_plain(address)
    if not isinstance(address, TcpAddress):
        raise ValueError(f"TLS is for TCP servers; {address} needs none")
    context = client_context(None) if tls is True else tls
    return await start_tls(await _open_plain(address), address, context)


async def _open_plain(address: Address) -> trio.SocketStream:
    sock = await _connect_to(address)
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def _connect_to(address: Address, trace: Tracer | None = None) -> socket.socket:
    """A socket connected to ``address``, trying each of a host name's addresses.

    Raises:
        ConnectError: nothing accepts there; the message says what to do.
    """
    try:
        if isinstance(address, UnixAddress):
            return await _connect(socket.AF_UNIX, address.sockaddr, trace)
        else:
            targets = await trio.socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_STREAM
            )
            failure: OSError = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
            for family, _, _, _, sockaddr in targets:
                try:
                    return await _connect(family, sockaddr, trace)
                except OSError as exc:
                    failure = exc
            raise failure
    except OSError as exc:
        raise _connect_error(address, exc) from exc


def _closed_early(address: Address, got: int, wanted: int, reason: str) -> str:
    what = "without replying" if got == 0 else f"after {got} of {wanted} reply bytes"
    return f"{address}: the server closed the connection {what} ({reason}); see the server's log"


async def start_tls(
    plain: PlainStream, address: TcpAddress, tls: ssl.SSLContext
) -> trio.SSLStream[PlainStream]:
    """Do the TLS handshake over ``plain``, checking the certificate against ``address.host``.

    Raises:
        ConnectError: the certificate is not trusted or not for this host, or the
            server does not speak TLS.
    """
    stream = trio.SSLStream(plain, tls, server_hostname=address.host)
    try:
        await stream.do_handshake()
    except BaseException as exc:
        plain.socket.close()  # on a timeout too: the caller never sees this socket
        if not isinstance(exc, trio.BrokenResourceError):
            raise
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            if cause.verify_code in _NAME_MISMATCH:
                raise ConnectError(
                    f"{address}: the server's TLS certificate is for another name"
                    f" ({cause.verify_message}); connect with the name it was issued for"
                ) from exc
            raise ConnectError(
                f"{address}: the server's TLS certificate is not trusted"
                f" ({cause.verify_message}); pass the CA that signed it with --tls-ca"
            ) from exc
        reason = getattr(cause, "reason", None) or cause or "connection closed"
        raise ConnectError(
            f"{address}: the TLS handshake failed ({reason}); does the server use --tls-cert?"
        ) from exc
    return stream


async def _over_tls(
    plain: PlainStream, address: Address, tls: ssl.SSLContext | None
) -> trio.abc.Stream:
    if tls is not None and isinstance(address, TcpAddress):
        return await start_tls(plain, address, tls)
    return plain


async def exchange(
    address: Address,
    data: bytes,
    *,
    tls: ssl.SSLContext | None = None,
    trace: Tracer | None = None,
) -> bytes:
    """Send ``data`` and return the server's reply, which has the same length.

    Args:
        address: The server.
        data: What to send.
        tls: Speak TLS (to a TCP server) with this context; see ``tls.client_context``.
        trace: Trace every socket call (``--trace``); see ``trio_sock.trace``.

    Raises:
        ConnectError: the server is not there, or TLS failed.
        ProtocolError: it closed the connection before replying in full.
    """
    if trace is None:
        stream = await _over_tls(await _open_plain(address), address, tls)
    else:
        traced = TracedStream(await _connect_to(address, trace), trace)
        stream = await _over_tls(traced, address, tls)
    reply = bytearray()
    try:
        await stream.send_all(data)
        while len(reply) < len(data):
            chunk = await stream.receive_some(len(data) - len(reply))
            if not chunk:
                break
            reply += chunk
    except trio.BrokenResourceError as exc:
        reason = why_broken(exc)
        raise ProtocolError(_closed_early(address, len(reply), len(data), reason)) from exc
    finally:
        await stream.aclose()
    if len(reply) < len(data):
        raise ProtocolError(_closed_early(address, len(reply), len(data), "end of stream"))
    return bytes(reply)


async def send_char(config: ClientConfig) -> str:
    """The book's client: send ``config.char``, return the character the server sends back.

    With ``config.wait``, a server that is not there yet (no socket file,
    connection refused) is retried with backoff for that long.

    Raises:
        ConnectError: no server, even after waiting.
        ClientTimeoutError: connecting and the reply took longer than ``config.timeout``.
        ProtocolError: the server closed the connection without replying.
    """
    data = config.char.encode("latin-1")
    tls = client_context(config.tls_ca) if config.tls else None
    retry_until = trio.current_time() + config.wait
    pause = FIRST_RETRY_PAUSE
    while True:
        try:
            reply = await _exchange_within(config, data, tls)
        except ConnectError as exc:
            if exc.errno not in _NOT_THERE_YET or trio.current_time() + pause > retry_until:
                raise
            _log.debug("%s; retrying in %.2fs", exc, pause)
            await trio.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_PAUSE)
            continue
        return reply.decode("latin-1")


async def _exchange_within(config: ClientConfig, data: bytes, tls: ssl.SSLContext | None) -> bytes:
    trace = Tracer() if config.trace else None
    with trio.move_on_after(config.timeout):
        return await exchange(config.address, data, tls=tls, trace=trace)
    speaks_tcp = isinstance(config.address, TcpAddress)
    tls_hint = "; if it speaks TLS, add --tls" if speaks_tcp and not config.tls else ""
    raise ClientTimeoutError(
        f"{config.address}: no reply within {config.timeout:g}s; the server may be"
        f" stuck or busy with other clients (see its --max-clients){tls_hint}"
    )
