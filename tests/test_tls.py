"""TLS on TCP listeners: in-process through the library, from the outside through the CLI,
and with a third-party TLS client (socat).

Certificates come from ``trustme``: one CA the tests trust, a server certificate it
signs for ``127.0.0.1`` and ``localhost``, a certificate for another host name, and a
second CA that signed nothing here.  Handshakes that stall run on ``autojump_clock``,
so the handshake timeout passes in virtual time.  Nothing sleeps to synchronise:
tests wait for a reply, for the end of a connection, for every task to block, or for
a process to exit.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import pytest
import trio
import trio.testing
import trustme

from tests.helpers import (
    CLIENT_TIMEOUT,
    EVENT_TIMEOUT,
    FAIL_TIMEOUT,
    IO_TIMEOUT,
    SUCCESS,
    Processes,
    assert_no_traceback,
    assert_user_error,
    lock_of,
    one_line,
    run_cli,
    run_client,
    start_in,
    unprivileged,
)
from trio_sock import (
    ClientConfig,
    ClientTimeoutError,
    ConnectError,
    ListenError,
    Server,
    ServerConfig,
    TcpAddress,
    TrioSockError,
    UnixAddress,
    increment,
    send_char,
    serve,
)
from trio_sock.server.fast import RECEIVE_SIZE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

#: A handshake timeout that is not the default (10 s), so tests see it was obeyed.
HANDSHAKE_TIMEOUT: Final = 7.0
#: The same, in real seconds, for the CLI: short enough to keep the suite fast.
CLI_HANDSHAKE_TIMEOUT: Final = 0.5
#: Bytes a stream test sends over TLS: several TLS records' worth many times over.
STREAM_SIZE: Final = 4 * 1024 * 1024
#: The prefix of every departure reason for a handshake that went wrong.
HANDSHAKE_FAILED: Final = "tls handshake failed: "
HANDSHAKE_TIMEOUT_REASON: Final = "tls handshake timeout"


# --- certificates ------------------------------------------------------------------------------


@attrs.frozen
class Pki:
    """PEM files made by trustme, and the CA that the tests trust."""

    trusted: trustme.CA
    ca: Path
    """The trusted CA's certificate: what ``--tls-ca`` is given."""
    cert: Path
    """The server's certificate chain, for ``127.0.0.1`` and ``localhost``."""
    key: Path
    wrong_name_cert: Path
    """Signed by the trusted CA, but for another host name only."""
    wrong_name_key: Path
    other_ca: Path
    """A CA that signed none of these certificates."""
    not_pem: Path
    """A text file that is no PEM at all."""

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts ``ca`` and checks host names, as a careful client does."""
        context = ssl.create_default_context()
        self.trusted.configure_trust(context)
        return context


def write_leaf(leaf: trustme.LeafCert, directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``leaf``'s chain and key as ``NAME.pem`` and ``NAME.key``; return both paths."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    for index, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(cert, append=index > 0)
    leaf.private_key_pem.write_to_path(key)
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    trusted, other = trustme.CA(), trustme.CA()
    trusted.cert_pem.write_to_path(directory / "ca.pem")
    other.cert_pem.write_to_path(directory / "other-ca.pem")
    cert, key = write_leaf(trusted.issue_cert("127.0.0.1", "localhost"), directory, "server")
    wrong_cert, wrong_key = write_leaf(trusted.issue_cert("elsewhere.test"), directory, "wrong")
    not_pem = directory / "not.pem"
    not_pem.write_text("this is not a certificate\n")
    return Pki(
        trusted=trusted,
        ca=directory / "ca.pem",
        cert=cert,
        key=key,
        wrong_name_cert=wrong_cert,
        wrong_name_key=wrong_key,
        other_ca=directory / "other-ca.pem",
        not_pem=not_pem,
    )


def client_hello(context: ssl.SSLContext, hostname: str) -> bytes:
    """The first flight a client with ``context`` sends: its ClientHello record(s)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello.startswith(b"\x16\x03"), hello[:8]  # a handshake record
    return hello


# --- in-process servers and clients ------------------------------------------------------------


@pytest.fixture
def tls_config(short_tmp: Path, pki: Pki) -> ServerConfig:
    """A Unix socket in ``short_tmp`` and TLS on a free loopback TCP port."""
    return ServerConfig(
        addresses=(UnixAddress(str(short_tmp / "sock")), TcpAddress("127.0.0.1", 0)),
        grace=1.0,
        tls_cert=str(pki.cert),
        tls_key=str(pki.key),
    )


@pytest.fixture
async def tls_server(nursery: trio.Nursery, tls_config: ServerConfig) -> Server:
    """A TLS server running in the test's nursery; cancelled when the test ends."""
    return await start_in(nursery, tls_config)


@pytest.fixture(autouse=True)
def logging_as_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """``trio_sock``'s logger as it is before the CLI configures it.

    A test that runs the CLI in-process leaves propagation off and a handler on a
    stderr that is closed by now; undone for each test here, so that records reach
    ``caplog`` and nothing else.
    """
    root = logging.getLogger("trio_sock")
    monkeypatch.setattr(root, "propagate", True)
    monkeypatch.setattr(root, "handlers", [])


@pytest.fixture
def clients_log(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    """The departure records (``trio_sock.clients``) logged so far."""
    caplog.set_level(logging.INFO, logger="trio_sock")
    return lambda: [r for r in caplog.records if r.name == "trio_sock.clients"]


def reason_of(record: logging.LogRecord) -> str:
    reason = record.__dict__["reason"]
    assert isinstance(reason, str), record
    return reason


def tcp_of(server: Server) -> TcpAddress:
    return next(a for a in server.addresses if isinstance(a, TcpAddress))


def unix_of(server: Server) -> UnixAddress:
    return next(a for a in server.addresses if isinstance(a, UnixAddress))


async def open_tls(
    address: TcpAddress, context: ssl.SSLContext, hostname: str | None = None
) -> trio.SSLStream[trio.SocketStream]:
    """A TLS stream to ``address`` whose handshake is done."""
    plain = await trio.open_tcp_stream(address.host, address.port)
    stream = trio.SSLStream(plain, context, server_hostname=hostname or address.host)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(plain)
        raise
    return stream


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def roundtrip(stream: trio.abc.Stream, data: bytes) -> bytes:
    await stream.send_all(data)
    return await receive_exactly(stream, len(data))


async def receive_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server sends until it ends the connection, by EOF or by a reset."""
    data = bytearray()
    with contextlib.suppress(trio.BrokenResourceError):
        while chunk := await stream.receive_some(RECEIVE_SIZE):
            data += chunk
    return bytes(data)


def reset_on_close(stream: trio.SocketStream) -> None:
    """Linger 0: closing sends a reset instead of a FIN."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --- serving over TLS --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_tls_client_gets_each_character_back_incremented(
    tls_server: Server, pki: Pki, host: str
) -> None:
    address = TcpAddress(host, tcp_of(tls_server).port)
    for char, expected in [("A", "B"), ("Z", "["), ("\xff", "\x00"), ("\x00", "\x01")]:
        config = ClientConfig(address=address, char=char, tls=True, tls_ca=str(pki.ca))
        assert await send_char(config) == expected


async def test_all_256_byte_values_come_back_in_order_over_tls(
    tls_server: Server, pki: Pki
) -> None:
    stream = await open_tls(tcp_of(tls_server), pki.client_context())
    async with stream:
        assert await roundtrip(stream, bytes(range(256))) == increment(bytes(range(256)))


async def test_a_multi_megabyte_stream_comes_back_whole_over_tls_and_ends_at_close_notify(
    tls_server: Server, pki: Pki, clients_log: Callable[[], list[logging.LogRecord]]
) -> None:
    data = bytes(range(256)) * (STREAM_SIZE // 256)
    stream = await open_tls(tcp_of(tls_server), pki.client_context())
    received = bytearray()
    async with stream, trio.open_nursery() as nursery:
        # Sending and receiving at once: the replies would fill the buffers otherwise.
        nursery.start_soon(stream.send_all, data)
        while len(received) < len(data):
            chunk = await stream.receive_some(RECEIVE_SIZE)
            assert chunk, f"EOF after {len(received)} of {len(data)} bytes"
            received += chunk
    assert received == increment(data)
    # TLS has no half-close: the client's close_notify is its EOF.
    await trio.testing.wait_all_tasks_blocked()
    (record,) = clients_log()
    assert reason_of(record) == "eof", record.getMessage()
    assert record.__dict__["bytes_in"] == record.__dict__["bytes_out"] == len(data)


async def test_the_unix_listener_of_a_tls_server_still_speaks_plain_text(
    tls_server: Server,
) -> None:
    stream = await trio.open_unix_socket(unix_of(tls_server).sockaddr)
    async with stream:
        assert await roundtrip(stream, b"hello") == b"ifmmp"
        await stream.send_eof()
        assert await stream.receive_some(1) == b""


async def test_once_mode_over_tls_replies_to_one_byte_then_closes_cleanly(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    tls_config: ServerConfig,
    pki: Pki,
) -> None:
    # The plain server sends EOF right after its reply; over TLS that EOF is a
    # close_notify.  Without one, a client reading to the end waits, then sees a
    # truncated stream.
    server = await start_in(nursery, attrs.evolve(tls_config, once=True))
    stream = await open_tls(tcp_of(server), pki.client_context())
    async with stream:
        await stream.send_all(b"A")
        assert await receive_exactly(stream, 1) == b"B"
        replied = trio.current_time()
        assert await stream.receive_some(1) == b""
        assert trio.current_time() == replied


# --- handshakes that fail or stall -------------------------------------------------------------


async def speak_plain_text(address: TcpAddress, pki: Pki) -> None:
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(b"hello, plain text\n")
        reply = await receive_until_closed(stream)
    assert increment(b"hello") not in reply


async def send_noise(address: TcpAddress, pki: Pki) -> None:
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(bytes(range(256)) * 16)
        await receive_until_closed(stream)


async def send_a_broken_client_hello(address: TcpAddress, pki: Pki) -> None:
    # A well-formed TLS record header around a ClientHello that is all garbage.
    body = b"\x01\x00\x00\x3c" + b"\xee" * 60
    record = b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(record)
        await receive_until_closed(stream)


async def offer_only_tls_1_1(address: TcpAddress, pki: Pki) -> None:
    context = pki.client_context()
    with warnings.catch_warnings():  # the point of this client is to be out of date
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        client_hello(context, address.host)
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL cannot even offer TLS 1.1 ({exc.reason})")
    with pytest.raises(trio.BrokenResourceError):
        await open_tls(address, context)


async def offer_no_cipher_the_server_has(address: TcpAddress, pki: Pki) -> None:
    context = pki.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    # RSA authentication only, and the server's key is ECDSA: nothing can match.
    context.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    with pytest.raises(trio.BrokenResourceError):
        await open_tls(address, context)


async def hang_up_mid_handshake(address: TcpAddress, pki: Pki) -> None:
    hello = client_hello(pki.client_context(), address.host)
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(hello[: len(hello) // 2])
        await trio.testing.wait_all_tasks_blocked()  # the server read it and waits for more


async def reset_mid_handshake(address: TcpAddress, pki: Pki) -> None:
    hello = client_hello(pki.client_context(), address.host)
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(hello[: len(hello) // 2])
    await trio.testing.wait_all_tasks_blocked()  # the server read it and waits for more
    reset_on_close(stream)
    await stream.aclose()


async def distrust_the_certificate(address: TcpAddress, pki: Pki) -> None:
    # The system's CAs never signed a trustme certificate.
    with pytest.raises(trio.BrokenResourceError):
        await open_tls(address, ssl.create_default_context())


#: Each misbehaving client, and a word its departure reason must hold besides the
#: prefix ("" where the words are OpenSSL's own and vary between its versions).
MISBEHAVIOURS: Final = [
    pytest.param(speak_plain_text, "", id="plain-text"),
    pytest.param(send_noise, "", id="noise"),
    pytest.param(send_a_broken_client_hello, "", id="broken-client-hello"),
    pytest.param(offer_only_tls_1_1, "protocol", id="tls-1.1-only"),
    pytest.param(offer_no_cipher_the_server_has, "cipher", id="no-shared-cipher"),
    pytest.param(hang_up_mid_handshake, "", id="eof-mid-handshake"),
    pytest.param(reset_mid_handshake, "reset", id="reset-mid-handshake"),
    pytest.param(distrust_the_certificate, "", id="client-distrusts-the-certificate"),
]


@pytest.mark.parametrize(("misbehave", "word"), MISBEHAVIOURS)
async def test_a_failed_handshake_ends_only_that_client_and_is_logged(
    tls_server: Server,
    pki: Pki,
    clients_log: Callable[[], list[logging.LogRecord]],
    misbehave: Callable[[TcpAddress, Pki], Awaitable[None]],
    word: str,
) -> None:
    address = tcp_of(tls_server)
    good = await open_tls(address, pki.client_context())
    async with good:
        assert await roundtrip(good, b"A") == b"B"
        with trio.fail_after(IO_TIMEOUT):  # a handshake that fails must not wait for the timeout
            await misbehave(address, pki)
            await trio.testing.wait_all_tasks_blocked()
        (record,) = clients_log()
        reason = reason_of(record)
        assert reason.startswith(HANDSHAKE_FAILED), record.getMessage()
        assert len(reason) > len(HANDSHAKE_FAILED), record.getMessage()
        assert word in reason.lower(), record.getMessage()
        assert (record.__dict__["bytes_in"], record.__dict__["bytes_out"]) == (0, 0)
        stats = tls_server.stats()
        assert (stats.accepted, stats.active, stats.dropped_idle) == (2, 1, 0), stats
        assert await roundtrip(good, b"Y") == b"Z"
    fresh = await open_tls(address, pki.client_context())
    async with fresh:
        assert await roundtrip(fresh, b"z") == b"{"


async def test_a_client_that_says_nothing_is_dropped_at_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    tls_config: ServerConfig,
    pki: Pki,
    clients_log: Callable[[], list[logging.LogRecord]],
) -> None:
    config = attrs.evolve(tls_config, tls_handshake_timeout=HANDSHAKE_TIMEOUT, idle_timeout=1000)
    server = await start_in(nursery, config)
    address = tcp_of(server)
    silent = await trio.open_tcp_stream(address.host, address.port)
    began = trio.current_time()
    # Served while the silent client's handshake is pending: it holds no one up.
    good = await open_tls(address, pki.client_context())
    async with good:
        assert await roundtrip(good, b"A") == b"B"
        assert trio.current_time() == began
        async with silent:
            assert await receive_until_closed(silent) == b""
        assert trio.current_time() - began == pytest.approx(HANDSHAKE_TIMEOUT)
        await trio.testing.wait_all_tasks_blocked()
        assert [reason_of(r) for r in clients_log()] == [HANDSHAKE_TIMEOUT_REASON]
        assert await roundtrip(good, b"B") == b"C"
        stats = server.stats()
        assert (stats.accepted, stats.active) == (2, 1), stats


async def test_the_default_handshake_timeout_is_ten_seconds(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    tls_config: ServerConfig,
    clients_log: Callable[[], list[logging.LogRecord]],
) -> None:
    server = await start_in(nursery, attrs.evolve(tls_config, idle_timeout=1000))
    address = tcp_of(server)
    silent = await trio.open_tcp_stream(address.host, address.port)
    began = trio.current_time()
    async with silent:
        assert await receive_until_closed(silent) == b""
    assert trio.current_time() - began == pytest.approx(10)
    await trio.testing.wait_all_tasks_blocked()
    assert [reason_of(r) for r in clients_log()] == [HANDSHAKE_TIMEOUT_REASON]


async def test_a_client_that_trickles_its_handshake_is_dropped_at_the_timeout_all_the_same(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    tls_config: ServerConfig,
    pki: Pki,
    clients_log: Callable[[], list[logging.LogRecord]],
) -> None:
    # One byte a second never looks idle, but the handshake has one deadline in all.
    config = attrs.evolve(tls_config, tls_handshake_timeout=HANDSHAKE_TIMEOUT, idle_timeout=1000)
    server = await start_in(nursery, config)
    address = tcp_of(server)
    hello = client_hello(pki.client_context(), address.host)
    assert len(hello) > 2 * HANDSHAKE_TIMEOUT
    stream = await trio.open_tcp_stream(address.host, address.port)
    began = trio.current_time()

    async def trickle() -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            for byte in hello:
                await stream.send_all(bytes([byte]))
                await trio.sleep(1)

    async with stream, trio.open_nursery() as inner:
        inner.start_soon(trickle)
        assert await receive_until_closed(stream) == b""
        inner.cancel_scope.cancel()
    assert HANDSHAKE_TIMEOUT <= trio.current_time() - began < HANDSHAKE_TIMEOUT + 1
    await trio.testing.wait_all_tasks_blocked()
    assert [reason_of(r) for r in clients_log()] == [HANDSHAKE_TIMEOUT_REASON]


# --- the client checks the server --------------------------------------------------------------


@pytest.mark.parametrize("trust", ["system-store", "another-ca"])
async def test_the_client_refuses_a_server_whose_certificate_it_does_not_trust(
    tls_server: Server, pki: Pki, trust: str
) -> None:
    address = tcp_of(tls_server)
    tls_ca = None if trust == "system-store" else str(pki.other_ca)
    config = ClientConfig(address=address, tls=True, tls_ca=tls_ca, timeout=IO_TIMEOUT)
    with pytest.raises(ConnectError) as caught:
        await send_char(config)
    message = str(caught.value)
    for fragment in (str(address), "certificate", "not trusted", "--tls-ca"):
        assert fragment in message, (fragment, message)


async def test_the_client_refuses_a_certificate_for_another_host_name(
    nursery: trio.Nursery, tls_config: ServerConfig, pki: Pki
) -> None:
    config = attrs.evolve(
        tls_config, tls_cert=str(pki.wrong_name_cert), tls_key=str(pki.wrong_name_key)
    )
    address = tcp_of(await start_in(nursery, config))
    client = ClientConfig(address=address, tls=True, tls_ca=str(pki.ca), timeout=IO_TIMEOUT)
    with pytest.raises(ConnectError) as caught:
        await send_char(client)
    message = str(caught.value)
    for fragment in (str(address), "certificate", "127.0.0.1"):
        assert fragment in message, (fragment, message)


async def test_a_tls_client_fails_clearly_against_a_plain_server(server: Server, pki: Pki) -> None:
    address = tcp_of(server)
    config = ClientConfig(address=address, tls=True, tls_ca=str(pki.ca), timeout=IO_TIMEOUT)
    with pytest.raises(TrioSockError) as caught:
        await send_char(config)
    message = str(caught.value)
    assert str(address) in message, message
    assert "tls" in message.lower(), message


@contextlib.contextmanager
def only_explicit_closes() -> Iterator[None]:
    """No cyclic garbage collection inside: a socket that only the collector would close
    stays open, for the test to see.  At the end, any such socket warns, in this test."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def test_a_tls_client_gives_up_at_its_timeout_when_the_handshake_gets_no_answer(
    autojump_clock: trio.testing.MockClock, pki: Pki
) -> None:
    # A listening socket nobody accepts on: the kernel completes the TCP
    # handshake, and the ClientHello is never answered.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        config = ClientConfig(
            address=TcpAddress("127.0.0.1", port), tls=True, tls_ca=str(pki.ca), timeout=3
        )
        with only_explicit_closes():
            began = trio.current_time()
            with pytest.raises(ClientTimeoutError) as caught:
                await send_char(config)
            assert trio.current_time() - began == pytest.approx(3)
            message = str(caught.value)
            conn = await listeners[0].accept()
            async with conn:
                with trio.move_on_after(IO_TIMEOUT) as waiting:
                    hello = await receive_until_closed(conn)
            assert not waiting.cancelled_caught, "the client gave up but left its socket open"
            assert hello.startswith(b"\x16\x03"), hello[:8]
    assert "add --tls" not in message, message  # it was given already


async def test_a_missing_ca_file_is_a_clear_client_error(pki: Pki, short_tmp: Path) -> None:
    missing = short_tmp / "no-such-ca.pem"
    with socket.socket() as unused:  # never reached: the CA file is read first
        unused.bind(("127.0.0.1", 0))
        address = TcpAddress("127.0.0.1", unused.getsockname()[1])
        config = ClientConfig(address=address, tls=True, tls_ca=str(missing))
        with pytest.raises(ConnectError, match=re.escape(str(missing))):
            await send_char(config)


def test_tls_to_a_unix_socket_is_a_config_error(short_tmp: Path) -> None:
    with pytest.raises(ValueError, match="TLS"):
        ClientConfig(address=UnixAddress(str(short_tmp / "s")), tls=True)


# --- configuration errors ----------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (the kernel just handed it out)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def assert_refused(address: TcpAddress) -> None:
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect((address.host, address.port))


#: (what is wrong, the certificate and key as ``{name}`` of a Pki field or ``@missing``,
#: the file the error must name)
BAD_FILES: Final = [
    pytest.param("@missing", "key", "@missing", id="missing-certificate"),
    pytest.param("cert", "@missing", "@missing", id="missing-key"),
    pytest.param("cert", "wrong_name_key", "wrong_name_key", id="key-of-another-certificate"),
    pytest.param("not_pem", "key", "not_pem", id="certificate-not-pem"),
    pytest.param("cert", "not_pem", "not_pem", id="key-not-pem"),
]


def pki_file(pki: Pki, name: str, directory: Path) -> Path:
    if name == "@missing":
        return directory / "missing.pem"
    path = getattr(pki, name)
    assert isinstance(path, Path)
    return path


@pytest.mark.parametrize(("cert", "key", "named"), BAD_FILES)
async def test_a_bad_certificate_or_key_is_a_listen_error_before_anything_listens(
    pki: Pki, short_tmp: Path, cert: str, key: str, named: str
) -> None:
    sock = short_tmp / "sock"
    tcp = TcpAddress("127.0.0.1", free_port())
    config = ServerConfig(
        addresses=(UnixAddress(str(sock)), tcp),
        tls_cert=str(pki_file(pki, cert, short_tmp)),
        tls_key=str(pki_file(pki, key, short_tmp)),
    )
    expected = re.escape(str(pki_file(pki, named, short_tmp)))
    with pytest.RaisesGroup(pytest.RaisesExc(ListenError, match=expected)):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, config)
    assert leftovers(short_tmp) == []  # neither the socket file nor its lock file
    assert_refused(tcp)


@pytest.mark.parametrize("given", ["tls_cert", "tls_key"])
def test_a_certificate_without_a_key_or_a_key_without_a_certificate_is_a_config_error(
    pki: Pki, given: str
) -> None:
    half: dict[str, Any] = {given: str(pki.cert if given == "tls_cert" else pki.key)}
    with pytest.raises(ValueError, match="key"):
        ServerConfig(addresses=(TcpAddress("127.0.0.1", 0),), **half)


# --- the command line --------------------------------------------------------------------------


def tls_server_args(sock: Path, cert: Path, key: Path, *more: str) -> list[str]:
    return ["--unix", str(sock), "--tcp", "127.0.0.1:0", "--tls-cert", str(cert),
            "--tls-key", str(key), *more]  # fmt: skip


def tcp_option(address: TcpAddress) -> list[str]:
    return ["--tcp", f"{address.host}:{address.port}"]


def assert_client_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    return assert_user_error(result, *fragments, starts_with="oops: client:")


def departure_reasons(log: str) -> list[str]:
    return re.findall(r" left \S+ .* reason=(.*)$", log, flags=re.MULTILINE)


def test_the_cli_serves_tls_on_tcp_and_plain_text_on_the_unix_socket(
    procs: Processes, pki: Pki, short_tmp: Path
) -> None:
    sock = short_tmp / "s"
    server = procs.server(*tls_server_args(sock, pki.cert, pki.key))
    tcp = server.tcp()
    assert (tcp.host, tcp.port != 0) == ("127.0.0.1", True), server.addresses
    result = run_client(*tcp_option(tcp), "--tls", "--tls-ca", str(pki.ca), cwd=short_tmp)
    assert (result.returncode, result.stdout, result.stderr) == (0, SUCCESS, ""), result
    result = run_client("--unix", str(sock), cwd=short_tmp)
    assert (result.returncode, result.stdout, result.stderr) == (0, SUCCESS, ""), result
    with socket.create_connection((tcp.host, tcp.port), timeout=IO_TIMEOUT) as plain:
        plain.sendall(b"hello, plain text\n")
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := plain.recv(4096):
                reply += chunk
    assert increment(b"hello") not in reply
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    log = server.stderr()
    assert_no_traceback(log)
    reasons = departure_reasons(log)
    assert reasons[:2] == ["eof", "eof"], log
    assert len(reasons) == 3, log
    assert reasons[2].startswith(HANDSHAKE_FAILED), log
    assert "accepted=3 active=0" in log, log


def test_the_cli_client_refuses_an_untrusted_server_in_one_line_that_suggests_tls_ca(
    procs: Processes, pki: Pki, short_tmp: Path
) -> None:
    server = procs.server(*tls_server_args(short_tmp / "s", pki.cert, pki.key))
    tcp = server.tcp()
    for trust in ([], ["--tls-ca", str(pki.other_ca)]):
        result = run_client(*tcp_option(tcp), "--tls", *trust, cwd=short_tmp)
        assert_client_error(result, str(tcp), "certificate", "--tls-ca")
    # Refused clients cost the server nothing.
    result = run_client(*tcp_option(tcp), "--tls", "--tls-ca", str(pki.ca), cwd=short_tmp)
    assert (result.returncode, result.stdout) == (0, SUCCESS), result
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert_no_traceback(server.stderr())


def test_the_cli_client_refuses_a_certificate_for_another_host_name(
    procs: Processes, pki: Pki, short_tmp: Path
) -> None:
    args = tls_server_args(short_tmp / "s", pki.wrong_name_cert, pki.wrong_name_key)
    server = procs.server(*args)
    tcp = server.tcp()
    result = run_client(*tcp_option(tcp), "--tls", "--tls-ca", str(pki.ca), cwd=short_tmp)
    assert_client_error(result, str(tcp), "certificate", "127.0.0.1")


def test_a_plain_client_on_the_tls_port_fails_in_one_line_at_the_handshake_timeout(
    procs: Processes, pki: Pki, short_tmp: Path
) -> None:
    timeout = ["--tls-handshake-timeout", str(CLI_HANDSHAKE_TIMEOUT)]
    server = procs.server(*tls_server_args(short_tmp / "s", pki.cert, pki.key, *timeout))
    tcp = server.tcp()
    started = time.monotonic()
    result = run_client(*tcp_option(tcp), cwd=short_tmp)  # one byte: too short to be refused
    elapsed = time.monotonic() - started
    assert_client_error(result, str(tcp))
    assert CLI_HANDSHAKE_TIMEOUT <= elapsed < CLIENT_TIMEOUT / 2, elapsed
    assert server.stop(timeout=EVENT_TIMEOUT) == 0
    assert departure_reasons(server.stderr()) == [HANDSHAKE_TIMEOUT_REASON], server.stderr()


def test_a_tls_cli_client_against_a_plain_server_fails_in_one_line(
    procs: Processes, pki: Pki, short_tmp: Path
) -> None:
    server = procs.server("--unix", str(short_tmp / "s"), "--tcp", "127.0.0.1:0")
    tcp = server.tcp()
    result = run_client(*tcp_option(tcp), "--tls", "--tls-ca", str(pki.ca), cwd=short_tmp)
    line = assert_client_error(result, str(tcp))
    assert "tls" in line.lower(), line


#: Command lines that must end in a usage error; ``{cert}``, ``{key}`` and ``{s}`` are
#: the test certificate, its key and a socket path.  The second item must be in the error line.
BAD_TLS_COMMAND_LINES: Final = [
    pytest.param(("server", "--tls-cert", "{cert}"), "key", id="cert-without-key"),
    pytest.param(("server", "--tls-key", "{key}"), "cert", id="key-without-cert"),
    pytest.param(
        ("server", "--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-handshake-timeout", "x"),
        "--tls-handshake-timeout",
        id="handshake-timeout-x",
    ),
    pytest.param(
        ("server", "--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-handshake-timeout", "-1"),
        "--tls-handshake-timeout",
        id="handshake-timeout-negative",
    ),
    pytest.param(("client", "--unix", "{s}", "--tls"), "TLS", id="client-tls-on-unix"),
]


@pytest.mark.parametrize(("args", "named"), BAD_TLS_COMMAND_LINES)
def test_a_bad_tls_command_line_exits_2_with_usage(
    pki: Pki, short_tmp: Path, args: tuple[str, ...], named: str
) -> None:
    values = {"{cert}": str(pki.cert), "{key}": str(pki.key), "{s}": str(short_tmp / "s")}
    argv = [values.get(arg, arg) for arg in args]
    if argv[0] == "server":  # were it accepted, keep it off the book's defaults
        argv += ["--unix", str(short_tmp / "s"), "--tcp", "127.0.0.1:0"]
    result = run_cli(*argv, cwd=short_tmp, timeout=FAIL_TIMEOUT)
    assert_no_traceback(result.stdout, result.stderr)
    assert (result.returncode, result.stdout) == (2, ""), result
    error, usage = result.stderr.splitlines()
    assert usage.startswith("usage: python -m trio_sock"), result.stderr
    assert "error:" in error, result.stderr
    assert named.lower() in error.lower(), error


def _unreadable(pki: Pki, directory: Path) -> tuple[Path, Path]:
    key = directory / "unreadable.key"
    shutil.copyfile(pki.key, key)
    key.chmod(0)
    return pki.cert, key


@pytest.mark.parametrize(
    "problem", ["missing-certificate", "key-of-another-certificate", "not-pem", "unreadable-key"]
)
def test_a_bad_certificate_or_key_ends_the_cli_server_in_one_line_before_it_listens(
    pki: Pki, short_tmp: Path, problem: str
) -> None:
    sock = short_tmp / "s"
    cert, key = {
        "missing-certificate": lambda: (short_tmp / "missing.pem", pki.key),
        "key-of-another-certificate": lambda: (pki.cert, pki.wrong_name_key),
        "not-pem": lambda: (pki.not_pem, pki.key),
        "unreadable-key": lambda: _unreadable(pki, short_tmp),
    }[problem]()
    named = {"key-of-another-certificate": key, "unreadable-key": key}.get(problem, cert)
    result = run_cli(
        "server", *tls_server_args(sock, cert, key),
        cwd=short_tmp, timeout=FAIL_TIMEOUT, preexec_fn=unprivileged(),
    )  # fmt: skip
    assert_no_traceback(result.stdout, result.stderr)
    assert (result.returncode, result.stdout) == (1, ""), result
    line = one_line(result.stderr)
    assert str(named) in line, line
    assert not sock.exists()
    assert not lock_of(sock).exists()


# --- a third-party TLS client: socat -----------------------------------------------------------


@pytest.fixture(scope="module")
def socat() -> str:
    """The path of a socat that speaks TLS, or a skip that says what is missing."""
    path = shutil.which("socat")
    if path is None:
        pytest.skip("socat is not installed (apt-get install socat): no third-party TLS client")
    version = subprocess.run(
        [path, "-V"], capture_output=True, text=True, timeout=FAIL_TIMEOUT, check=False
    ).stdout
    if "#define WITH_OPENSSL 1" not in version:
        pytest.skip(f"{path} was built without OpenSSL: it has no OPENSSL: address")
    return path


def socat_command(socat: str, address: TcpAddress, ca: Path) -> list[str]:
    # -t: after stdin's EOF, wait this long for the server to end the connection.
    target = f"OPENSSL:{address.host}:{address.port},cafile={ca},verify=1"
    return [socat, "-t", str(IO_TIMEOUT), "-", target]


async def test_socat_as_a_tls_client_gets_every_byte_back_incremented(
    tls_server: Server,
    pki: Pki,
    socat: str,
    clients_log: Callable[[], list[logging.LogRecord]],
) -> None:
    data = bytes(range(256)) * 1024
    with trio.fail_after(CLIENT_TIMEOUT):
        result = await trio.run_process(
            socat_command(socat, tcp_of(tls_server), pki.ca),
            stdin=data,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == increment(data)
    assert result.stderr == b""
    await trio.testing.wait_all_tasks_blocked()
    assert [reason_of(r) for r in clients_log()] == ["eof"]


async def test_socat_with_another_ca_refuses_the_server_which_logs_it_and_serves_on(
    tls_server: Server,
    pki: Pki,
    socat: str,
    clients_log: Callable[[], list[logging.LogRecord]],
) -> None:
    address = tcp_of(tls_server)
    with trio.fail_after(CLIENT_TIMEOUT):
        result = await trio.run_process(
            socat_command(socat, address, pki.other_ca),
            stdin=b"A",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode != 0, result
    assert result.stdout == b""
    await trio.testing.wait_all_tasks_blocked()
    (record,) = clients_log()
    assert reason_of(record).startswith(HANDSHAKE_FAILED), record.getMessage()
    config = ClientConfig(address=address, tls=True, tls_ca=str(pki.ca))
    assert await send_char(config) == "B"
