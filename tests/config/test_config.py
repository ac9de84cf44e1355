"""Addresses and configs validate themselves; parsing round-trips."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sock.config.addresses import TcpAddress, UnixAddress, parse_address
from trio_sock.config.client import ClientConfig
from trio_sock.config.server import DEFAULT_ADDRESSES, ServerConfig


def test_a_unix_path_prints_as_unix_colon_path_and_binds_as_given() -> None:
    address = UnixAddress("server_socket")
    assert str(address) == "unix:server_socket"
    assert address.sockaddr == "server_socket"
    assert not address.is_abstract


def test_an_at_name_is_in_the_abstract_namespace() -> None:
    address = UnixAddress("@trio_sock")
    assert address.is_abstract
    assert address.sockaddr == "\0trio_sock"
    assert str(address) == "unix:@trio_sock"


@pytest.mark.parametrize("path", ["", "@", "a\0b", "a\nb", "tab\there"])
def test_an_empty_or_nul_unix_path_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match=repr(path).replace("\\", "\\\\")):
        UnixAddress(path)


def test_a_unix_path_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="b'x'"):
        UnixAddress(b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("9734", "127.0.0.1", 9734),
        ("0", "127.0.0.1", 0),
        ("localhost:80", "localhost", 80),
        ("0.0.0.0:9734", "0.0.0.0", 9734),
        ("[::1]:9734", "::1", 9734),
        ("[::]:0", "::", 0),
    ],
)
def test_tcp_addresses_parse_with_loopback_as_the_default_host(
    text: str, host: str, port: int
) -> None:
    assert TcpAddress.parse(text) == TcpAddress(host, port)


@pytest.mark.parametrize(
    "text", ["", "x", "host:", ":80", "70000", "-1", "::1:80", "[::1]", "[::1]80", "a b:1", "1e3"]
)
def test_malformed_tcp_addresses_are_refused_with_the_text_shown(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        TcpAddress.parse(text)


def test_ipv6_hosts_print_in_brackets() -> None:
    assert str(TcpAddress("::1", 9734)) == "tcp:[::1]:9734"
    assert str(TcpAddress("127.0.0.1", 9734)) == "tcp:127.0.0.1:9734"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:server_socket", UnixAddress("server_socket")),
        ("unix:/tmp/a b", UnixAddress("/tmp/a b")),
        ("@name", UnixAddress("@name")),
        ("./sock", UnixAddress("./sock")),
        ("tcp:127.0.0.1:9734", TcpAddress("127.0.0.1", 9734)),
        ("tcp:[::1]:1", TcpAddress("::1", 1)),
        ("[::1]:1", TcpAddress("::1", 1)),
        ("9734", TcpAddress("127.0.0.1", 9734)),
    ],
)
def test_parse_address_understands_every_form(text: str, expected: object) -> None:
    assert parse_address(text) == expected


_hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
)
_unix_paths = st.text(
    st.characters(exclude_categories=["Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn"]), min_size=1
).filter(lambda path: path != "@" and path.isprintable())


@given(st.builds(TcpAddress, _hosts, st.integers(0, 65535)))
def test_a_printed_tcp_address_parses_back_to_itself(address: TcpAddress) -> None:
    assert parse_address(str(address)) == address


@given(st.builds(UnixAddress, _unix_paths))
def test_a_printed_unix_address_parses_back_to_itself(address: UnixAddress) -> None:
    assert parse_address(str(address)) == address


@given(st.text(max_size=30))
def test_parsing_any_text_either_works_or_says_value_error(text: str) -> None:
    try:
        address = parse_address(text)
    except ValueError as exc:
        message = str(exc)
        assert message
    else:
        assert isinstance(address, UnixAddress | TcpAddress)


def test_the_server_defaults_are_the_contracts() -> None:
    config = ServerConfig()
    assert config.addresses == (UnixAddress("server_socket"), TcpAddress("127.0.0.1", 9734))
    assert config.addresses == DEFAULT_ADDRESSES
    assert not config.once
    assert 1 < config.max_clients < 1024
    assert config.delay == 0
    assert 0 < config.idle_timeout < math.inf
    assert config.grace == 5
    assert config.backlog is None
    assert config.socket_mode == 0o600


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("addresses", (), ValueError),
        ("addresses", ("server_socket",), TypeError),
        ("addresses", (UnixAddress("a"), UnixAddress("a")), ValueError),
        ("once", 1, TypeError),
        ("max_clients", 0, ValueError),
        ("max_clients", 1.5, TypeError),
        ("max_clients", True, TypeError),
        ("delay", -1, ValueError),
        ("delay", math.nan, ValueError),
        ("delay", "1", TypeError),
        ("idle_timeout", 0, ValueError),
        ("grace", -0.1, ValueError),
        ("backlog", 0, ValueError),
        ("backlog", 65536, ValueError),
        ("delay", math.inf, ValueError),
        ("backlog", "5", TypeError),
        ("socket_mode", 0o1000, ValueError),
        ("socket_mode", -1, ValueError),
        ("socket_mode", "600", TypeError),
    ],
)
def test_a_bad_server_setting_is_refused_showing_the_value(
    field: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=field if field != "addresses" else "ddress"):
        ServerConfig(**{field: value})  # type: ignore[arg-type]


def test_evolve_changes_one_field_and_validates_it() -> None:
    config = attrs.evolve(ServerConfig(), max_clients=1)
    assert config.max_clients == 1
    with pytest.raises(ValueError, match="max_clients"):
        attrs.evolve(config, max_clients=0)


def test_configs_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ServerConfig().once = True  # type: ignore[misc]


def test_addresses_accept_any_iterable_and_become_a_tuple() -> None:
    config = ServerConfig(addresses=[TcpAddress("127.0.0.1", 0)])
    assert config.addresses == (TcpAddress("127.0.0.1", 0),)


@pytest.mark.parametrize("char", ["A", "\x00", "é", "\xff"])
def test_a_client_char_is_one_latin1_character(char: str) -> None:
    assert ClientConfig(char=char).char == char


@pytest.mark.parametrize("char", ["", "AB", "€", "\u0100"])
def test_anything_else_as_the_client_char_is_refused(char: str) -> None:
    with pytest.raises(ValueError, match="Latin-1"):
        ClientConfig(char=char)


def test_the_client_defaults_are_the_books() -> None:
    config = ClientConfig()
    assert config.address == UnixAddress("server_socket")
    assert config.char == "A"
    assert 0 < config.timeout < math.inf
    assert config.wait == 0


def test_one_socket_file_named_two_ways_is_still_given_twice() -> None:
    with pytest.raises(ValueError, match="only once"):
        ServerConfig(addresses=[UnixAddress("sock"), UnixAddress("./sock")])


def test_a_client_cannot_connect_to_port_0() -> None:
    with pytest.raises(ValueError, match="real port"):
        ClientConfig(address=TcpAddress("127.0.0.1", 0))


def test_a_bare_name_is_not_taken_for_a_port_and_the_error_says_how_to_write_it() -> None:
    with pytest.raises(ValueError, match="write unix:server_socket"):
        parse_address("server_socket")
