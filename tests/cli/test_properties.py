"""Bad input everywhere: any option value either means what the contract says or exits 2.

Hypothesis feeds every value-taking option of ``python -m trio_sock server`` and
``client`` arbitrary text through ``cli.parse`` in this process, where thousands of
examples take a second or two, and a few bad command lines through real subprocesses.
Each option's meaning is restated here from the contract, as a function from text to
the value the option must give or ``ValueError`` for none; only the ``[HOST:]PORT``
syntax is left to ``TcpAddress.parse``.  The properties of address parsing and of the
protocol are in ``test_config.py`` and ``test_protocol.py``.
"""

from __future__ import annotations

import contextlib
import grp
import io
import math
import os
import pwd
import re
import shutil
import tempfile
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.helpers import assert_no_traceback, run_cli
from trio_sock.cli import main as cli
from trio_sock.config.addresses import Address, TcpAddress, UnixAddress
from trio_sock.config.client import ClientConfig
from trio_sock.config.server import DEFAULT_ADDRESSES, ServerConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
#: The largest user or group id: 2**32 - 1 is (uid_t)-1, which chown(2) reads as "no change".
MAX_ID = 2**32 - 2

# --- what each option's text means, from the contract ------------------------------------------


def whole_number(low: int, high: float = math.inf) -> Callable[[str], int]:
    """A whole number as Python reads one (so `` 7 `` and ``1_000`` count), low to high."""

    def meaning(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return meaning


def octal_mode(text: str) -> int:
    value = int(text, 8)
    if not 0 <= value <= 0o777:
        raise ValueError(text)
    return value


def seconds(*, finite: bool = False, positive: bool = False) -> Callable[[str], float]:
    """A number of seconds: never NaN nor negative; finite, or more than 0, if asked."""

    def meaning(text: str) -> float:
        value = float(text)
        if math.isnan(value) or value < 0:
            raise ValueError(text)
        if (finite and math.isinf(value)) or (positive and value == 0):
            raise ValueError(text)
        return value

    return meaning


def unix_address(text: str) -> UnixAddress:
    """Any path but an empty one; ``@`` alone would be an abstract name that is empty."""
    if text in ("", "@") or "\0" in text:
        raise ValueError(text)
    return UnixAddress(text)


def client_tcp_address(text: str) -> TcpAddress:
    address = TcpAddress.parse(text)  # its own properties are in test_config.py
    if address.port == 0:  # only a listener can ask for "any free port"
        raise ValueError(text)
    return address


def account_id(lookup: Callable[[str], int]) -> Callable[[str], int]:
    """A user or group: a number (ASCII digits), or a name the system's database knows."""

    def meaning(text: str) -> int:
        if text.isascii() and text.isdigit():
            value = int(text)
        else:
            try:
                value = lookup(text)
            except KeyError:
                raise ValueError(text) from None
        if not 0 <= value <= MAX_ID:
            raise ValueError(text)
        return value

    return meaning


user_id = account_id(lambda name: pwd.getpwnam(name).pw_uid)
group_id = account_id(lambda name: grp.getgrnam(name).gr_gid)


def latin1_char(text: str) -> str:
    if len(text) != 1 or ord(text) > 0xFF:
        raise ValueError(text)
    return text


def one_of(*choices: str) -> Callable[[str], str]:
    def meaning(text: str) -> str:
        if text not in choices:
            raise ValueError(text)
        return text

    return meaning


def server(command: cli.Command) -> ServerConfig:
    assert isinstance(command.config, ServerConfig), command
    return command.config


def client(command: cli.Command) -> ClientConfig:
    assert isinstance(command.config, ClientConfig), command
    return command.config


@attrs.frozen
class Option:
    """One value-taking option, what its text must mean, and where the parsed value goes."""

    command: str
    name: str
    meaning: Callable[[str], object]
    """The value the contract gives ``text``; raises ``ValueError`` where it gives none."""
    read: Callable[[cli.Command], object]
    """The parsed value, out of the ``Command`` that ``cli.parse`` returns."""

    def __str__(self) -> str:
        return f"{self.command} {self.name}"


OPTIONS = [
    Option("server", "--unix", lambda t: (unix_address(t),), lambda c: server(c).addresses),
    Option("server", "--tcp", lambda t: (TcpAddress.parse(t),), lambda c: server(c).addresses),
    Option("server", "--max-clients", whole_number(1), lambda c: server(c).max_clients),
    Option("server", "--delay", seconds(finite=True), lambda c: server(c).delay),
    Option("server", "--idle-timeout", seconds(positive=True), lambda c: server(c).idle_timeout),
    Option("server", "--grace", seconds(), lambda c: server(c).grace),
    Option("server", "--backlog", whole_number(1, 0xFFFF), lambda c: server(c).backlog),
    Option("server", "--socket-mode", octal_mode, lambda c: server(c).socket_mode),
    Option("server", "--socket-group", group_id, lambda c: server(c).socket_group),
    Option(
        "server", "--allow-uid", lambda t: frozenset({user_id(t)}), lambda c: server(c).allow_uids
    ),
    Option(
        "server", "--allow-gid", lambda t: frozenset({group_id(t)}), lambda c: server(c).allow_gids
    ),
    Option("server", "--log-level", one_of(*LOG_LEVELS), lambda c: c.log_level),
    Option("server", "--log-format", one_of(*LOG_FORMATS), lambda c: c.log_format),
    Option("client", "--unix", unix_address, lambda c: client(c).address),
    Option("client", "--tcp", client_tcp_address, lambda c: client(c).address),
    Option("client", "--char", latin1_char, lambda c: client(c).char),
    Option("client", "--timeout", seconds(positive=True), lambda c: client(c).timeout),
    Option("client", "--wait", seconds(), lambda c: client(c).wait),
]

# --- running the parser ---------------------------------------------------------------------------


@attrs.frozen
class Outcome:
    """What ``cli.parse`` did: returned a command, or exited with a code; and what it printed."""

    command: cli.Command | None
    code: object
    stdout: str
    stderr: str


def parse(argv: Sequence[str]) -> Outcome:
    """``cli.parse(argv)`` with its output captured; any exception but SystemExit propagates.

    ``contextlib.redirect_*`` rather than ``capsys``: a function-scoped fixture is not
    reset between hypothesis examples, and argparse looks ``sys.stderr`` up at each print.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            command = cli.parse(argv)
        except SystemExit as exc:
            return Outcome(None, exc.code, out.getvalue(), err.getvalue())
    return Outcome(command, None, out.getvalue(), err.getvalue())


def error_part(stderr: str) -> str:
    """What follows ``error:`` in a usage error: one error line, then one usage line."""
    error_line, usage_line = stderr.splitlines()
    assert usage_line.startswith("usage: python -m trio_sock"), stderr
    _, marker, error = error_line.partition(": error: ")
    assert marker, stderr
    return error


def assert_usage_error(outcome: Outcome, option: str, text: str) -> None:
    """Exit 2, nothing on stdout, an error naming ``option`` then usage, no traceback."""
    assert outcome.code == 2, outcome
    assert outcome.stdout == "", outcome
    assert_no_traceback(outcome.stderr)
    # The bad value is echoed with repr(); it must not be what names the option.
    error = error_part(outcome.stderr).replace(repr(text), "")
    assert option in error, outcome.stderr


# --- any text, for any option ---------------------------------------------------------------------

#: The values that break parsers: empty and blank, signs, NaN and infinities, overflow
#: (float("1e999") is inf; int() refuses more than 4300 digits), other number syntaxes,
#: non-ASCII digits, the end-of-options marker, NUL, and near misses of each option.
EDGE_TEXTS = (
    *("", " ", "\t", "\n", " 7 ", "-", "--", "---", "-h", "--help", "\0", "a\0b"),
    *("0", "-0", "+0", "00", "1", "-1", "+1", "1_000", "1__0", "1.5", "1e3", "0x10", "0o777"),
    *("nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "infinity", "∞"),
    *("1e999", "-1e999", "1e-999", "5e-324", "9" * 30, "9" * 5000, "1" + "0" * 4300),
    *("\u0663", "\u00b2", "\uff11", "777", "778", "1000", "0777", "65535", "65536", "99999"),
    *("@", "@x", "./x", "/", "x y", "[::1]:80", "::1:80", "[]:80", ":80", "host:", "[::1]"),
    *("0.0.0.0:0", "localhost:0", "h:\u0661", "[::1]:0", "host name:1"),
    *("A", "AB", "\x00", "\u00e9", "\u00ff", "\u0100", "\u20ac", "\U0001f600", "e\u0301"),
    *("json", "text", "JSON", "debug", "INFO", "warning ", "critical"),
    *("root", "daemon", "no-such-user", "4294967294", "4294967295", "-0x1"),
)

texts = st.one_of(
    st.text(),
    st.text(st.characters(codec="latin-1"), max_size=3),
    st.integers().map(str),
    st.floats().map(repr),
    st.from_regex(r"\s?[+-]?[0-9_]{0,6}\.?[0-9]{0,3}([eE][+-]?[0-9]{1,4})?\s?", fullmatch=True),
    st.builds("{}:{}".format, st.text(max_size=6), st.integers(-1, 70000)),
    st.builds("[{}]:{}".format, st.ip_addresses(v=6), st.integers(-1, 70000)),
)


def with_examples(**examples: Sequence[object]) -> Callable[[Any], Any]:
    """Hypothesis ``@example`` for each of many values, run before any random ones."""
    [(name, values)] = examples.items()
    return lambda test: reduce(lambda t, value: example(**{name: value})(t), values, test)


@pytest.mark.parametrize("option", OPTIONS, ids=str)
@settings(max_examples=60)
@with_examples(text=EDGE_TEXTS)
@given(text=texts)
def test_any_value_of_any_option_is_either_what_the_contract_means_or_a_usage_error(
    option: Option, text: str
) -> None:
    try:
        expected: object = option.meaning(text)
    except ValueError:
        expected = None
    outcome = parse([option.command, f"{option.name}={text}"])
    if outcome.command is None:
        assert_usage_error(outcome, option.name, text)
        assert expected is None, f"{option} refused {text!r}, which means {expected!r}"
    else:
        assert (outcome.stdout, outcome.stderr) == ("", ""), outcome
        value = option.read(outcome.command)
        assert expected is not None, f"{option} accepted {text!r} as {value!r}"
        assert value == expected, f"{option}={text!r} gave {value!r}, not {expected!r}"
        assert type(value) is type(expected), value
    if not text.startswith("-"):
        # The usual spelling, as two words, means the same.
        assert parse([option.command, option.name, text]) == outcome


# --- valid values round-trip --------------------------------------------------------------------

hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
)
unix_paths = st.text(
    st.characters(exclude_categories=["Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn"]), min_size=1
).filter(lambda path: path != "@" and path.isprintable())


def tcp_word(address: TcpAddress, *, bare_port: bool) -> str:
    """How a user types ``address``: ``HOST:PORT``, ``[V6]:PORT``, or ``PORT`` for loopback."""
    if bare_port and address.host == "127.0.0.1":
        return str(address.port)
    return str(address).removeprefix("tcp:")


@st.composite
def tcp_addresses(draw: st.DrawFn, *, lowest_port: int) -> tuple[TcpAddress, str]:
    address = TcpAddress(
        draw(st.one_of(st.just("127.0.0.1"), hosts)), draw(st.integers(lowest_port, 65535))
    )
    return address, tcp_word(address, bare_port=draw(st.booleans()))


def seconds_words(*, finite: bool, positive: bool) -> st.SearchStrategy[tuple[float, str]]:
    """Seconds, and the shortest text that reads back as exactly that float."""
    values = st.floats(
        min_value=0.0, exclude_min=positive, allow_nan=False, allow_infinity=not finite
    )
    return values.map(lambda value: (value, repr(value)))


def whole_words(low: int, high: int) -> st.SearchStrategy[tuple[int, str]]:
    return st.integers(low, high).map(lambda value: (value, str(value)))


#: Modes as chmod takes them: ``600``, ``0600``, and zero-padded ``007``.
mode_words = st.tuples(st.integers(0, 0o777), st.sampled_from(["{:o}", "{:03o}", "{:04o}"])).map(
    lambda pair: (pair[0], pair[1].format(pair[0]))
)


def unix_key(address: UnixAddress) -> str:
    """``sock`` and ``./sock`` are one socket file, so a server refuses to be given both."""
    return address.path if address.is_abstract else os.path.normpath(address.path)


#: Each optional server setting: its option, its config field, and (value, text) pairs.
SERVER_SETTINGS: list[tuple[str, str, st.SearchStrategy[tuple[object, str]]]] = [
    ("--max-clients", "max_clients", whole_words(1, 10**9)),
    ("--delay", "delay", seconds_words(finite=True, positive=False)),
    ("--idle-timeout", "idle_timeout", seconds_words(finite=False, positive=True)),
    ("--grace", "grace", seconds_words(finite=False, positive=False)),
    ("--backlog", "backlog", whole_words(1, 0xFFFF)),
    ("--socket-mode", "socket_mode", mode_words),
]


#: Users and groups by number, or by a name every Linux system has (``root`` is 0).
user_words = st.one_of(whole_words(0, MAX_ID), st.just((0, "root")))
group_words = st.one_of(whole_words(0, MAX_ID), st.just((0, "root")))
#: The repeatable access options: each given any number of times, the set of them.
SERVER_ACCOUNTS = [
    ("--allow-uid", "allow_uids", user_words),
    ("--allow-gid", "allow_gids", group_words),
]


@st.composite
def server_command_lines(draw: st.DrawFn) -> tuple[list[str], ServerConfig, str, str]:
    """A valid server command line, the config it means, and its log level and format."""
    unix = draw(st.lists(st.builds(UnixAddress, unix_paths), max_size=3, unique_by=unix_key))
    tcp = draw(st.lists(tcp_addresses(lowest_port=0), max_size=3, unique_by=lambda pair: pair[0]))
    argv = ["server", *(f"--unix={a.path}" for a in unix), *(f"--tcp={word}" for _, word in tcp)]
    addresses: tuple[Address, ...] = (*unix, *(a for a, _ in tcp))
    fields: dict[str, Any] = {"addresses": addresses or DEFAULT_ADDRESSES}
    if draw(st.booleans()):
        argv.append("--once")
        fields["once"] = True
    for option, field, pairs in SERVER_SETTINGS:
        if draw(st.booleans()):
            value, word = draw(pairs)
            argv.append(f"{option}={word}")
            fields[field] = value
    for option, field, pairs in SERVER_ACCOUNTS:
        chosen = draw(st.lists(pairs, max_size=3))
        argv += [f"{option}={word}" for _, word in chosen]
        fields[field] = frozenset(value for value, _ in chosen)
    if draw(st.booleans()):
        value, word = draw(group_words)
        argv.append(f"--socket-group={word}")
        fields["socket_group"] = value
    level = draw(st.sampled_from(LOG_LEVELS))
    form = draw(st.sampled_from(LOG_FORMATS))
    argv += [f"--log-level={level}", f"--log-format={form}"]
    return argv, ServerConfig(**fields), level, form


@settings(max_examples=150)
@given(server_command_lines())
def test_a_valid_server_command_line_gives_exactly_the_config_it_spells(
    case: tuple[list[str], ServerConfig, str, str],
) -> None:
    argv, config, level, form = case
    outcome = parse(argv)
    # With no address at all, sockets from systemd (if any) would replace the defaults.
    activation = not any(arg.startswith(("--unix", "--tcp", "--fd")) for arg in argv)
    assert outcome == Outcome(cli.Command(config, level, form, activation), None, "", "")


#: Each optional client setting: its option, its config field, and (value, text) pairs.
CLIENT_SETTINGS: list[tuple[str, str, st.SearchStrategy[tuple[object, str]]]] = [
    ("--char", "char", st.characters(codec="latin-1").map(lambda char: (char, char))),
    ("--timeout", "timeout", seconds_words(finite=False, positive=True)),
    ("--wait", "wait", seconds_words(finite=False, positive=False)),
]


@st.composite
def client_command_lines(draw: st.DrawFn) -> tuple[list[str], ClientConfig]:
    """A valid client command line and the config it means."""
    argv = ["client"]
    fields: dict[str, Any] = {}
    where = draw(st.sampled_from(["unix", "tcp", "default"]))
    if where == "unix":
        path = draw(unix_paths)
        argv.append(f"--unix={path}")
        fields["address"] = UnixAddress(path)
    elif where == "tcp":
        address, word = draw(tcp_addresses(lowest_port=1))
        argv.append(f"--tcp={word}")
        fields["address"] = address
    for option, field, pairs in CLIENT_SETTINGS:
        if draw(st.booleans()):
            value, word = draw(pairs)
            argv.append(f"{option}={word}")
            fields[field] = value
    return argv, ClientConfig(**fields)


@settings(max_examples=150)
@given(client_command_lines())
def test_a_valid_client_command_line_gives_exactly_the_config_it_spells(
    case: tuple[list[str], ClientConfig],
) -> None:
    argv, config = case
    outcome = parse(argv)
    assert outcome == Outcome(cli.Command(config), None, "", "")


def test_with_no_options_the_config_is_the_contracts_defaults() -> None:
    server_command = parse(["server"]).command
    assert server_command is not None
    assert (server_command.log_level, server_command.log_format) == ("info", "text")
    config = server(server_command)
    assert config.addresses == (UnixAddress("server_socket"), TcpAddress("127.0.0.1", 9734))
    assert (config.once, config.delay, config.grace, config.socket_mode) == (False, 0, 5, 0o600)
    assert 1 <= config.max_clients < math.inf
    assert 0 < config.idle_timeout < math.inf
    assert (config.socket_group, config.allow_uids, config.allow_gids) == (
        None,
        frozenset(),
        frozenset(),
    )
    client_command = parse(["client"]).command
    assert client_command is not None
    client_config = client(client_command)
    assert (client_config.address, client_config.char, client_config.wait) == (
        UnixAddress("server_socket"),
        "A",
        0,
    )
    assert 0 < client_config.timeout < math.inf


# --- the real command line, in a few subprocesses -------------------------------------------------


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """One short directory for the whole module: hypothesis reruns a test without its fixtures."""
    directory = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


#: Every option the server's --help lists, so that a made-up option is not taken for an
#: abbreviation of a real one (argparse reads ``--max`` as ``--max-clients``).
SERVER_OPTIONS = frozenset(re.findall(r"--[a-z][a-z-]*", parse(["server", "--help"]).stdout))


def is_prefix_of_an_option(word: str) -> bool:
    name = word.partition("=")[0]
    return any(option.startswith(name) for option in SERVER_OPTIONS)


def is_positive_int(text: str) -> bool:
    try:
        return int(text) >= 1
    except ValueError:
        return False


#: Text a command line can carry: no NUL (execve's terminator), no lone surrogates.
argv_texts = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]))

bad_arguments = st.one_of(
    st.builds(
        "{}{}".format,
        st.from_regex(r"--[a-z][a-z0-9-]{0,15}", fullmatch=True),
        st.one_of(st.just(""), argv_texts.map("={}".format)),
    )
    .filter(lambda word: not is_prefix_of_an_option(word))
    .map(lambda word: (word.partition("=")[0], word)),
    argv_texts.filter(lambda text: not is_positive_int(text)).map(
        lambda text: ("--max-clients", f"--max-clients={text}")
    ),
    argv_texts.filter(lambda text: text not in LOG_LEVELS).map(
        lambda text: ("--log-level", f"--log-level={text}")
    ),
)


@settings(max_examples=15, deadline=None)
@example(bad=("--log-level", "--log-level=--"))
@example(bad=("--max-clients", "--max-clients=--"))
@example(bad=("--max-clients", "--max-clients=" + "9" * 5000))
@given(bad=bad_arguments)
def test_a_command_line_that_cannot_parse_exits_2_with_usage_and_no_traceback(
    workdir: Path, bad: tuple[str, str]
) -> None:
    name, word = bad
    # Were the bad word accepted, the server would listen here, not on the book's
    # defaults, and time out instead of exiting.
    result = run_cli("server", f"--unix={workdir / 's'}", word, cwd=workdir, timeout=20)
    assert_no_traceback(result.stdout, result.stderr)
    assert result.returncode == 2, result
    assert result.stdout == "", result
    assert name in error_part(result.stderr), result.stderr
