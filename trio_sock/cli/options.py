"""The command line's options: argparse, the checks on each value, and ``parse``.

Every value is checked as it is read, so a bad one ends with exit 2: first a
message naming the subcommand and the option, then a one-line usage; what only
the whole config can check (the same address twice) is caught by the config's
own validators and reported the same way.  Nothing here runs a server or a client.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, NoReturn, TypeVar

import attrs

from trio_sock.config import defaults, rules
from trio_sock.config.addresses import Address, TcpAddress, UnixAddress, connectable
from trio_sock.config.client import ClientConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trio_sock.config.server import ServerConfig

T = TypeVar("T")


def _argument_type(
    name: str, read: Callable[[str], T], rule: Callable[[T], None] | None = None
) -> Callable[[str], T]:
    """An argparse type: ``read`` turns the text into a value, then config's ``rule`` checks it.

    Either one's ``ValueError`` becomes argparse's usage error, message intact:
    the limits and their messages are the config's own (``config.rules``).
    """

    def convert(text: str) -> T:
        try:
            value = read(text)
            if rule is not None:
                rule(value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    convert.__name__ = name
    return convert


def _read_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None


def _read_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _read_octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError(f"expected octal permission bits such as 600, got {text!r}") from None


def _read_account(kind: str, lookup: Callable[[str], int]) -> Callable[[str], int]:
    """A user or group as a number (checked by ``rules.account_id``), or a name looked up."""

    def read(text: str) -> int:
        if text.isascii() and text.isdigit():
            return _read_int(text)
        try:
            return lookup(text)
        except KeyError:
            raise ValueError(f"no such {kind} {text!r}") from None

    return read


def _uid_of(name: str) -> int:
    import pwd  # only the server's --allow-uid reads it

    return pwd.getpwnam(name).pw_uid


def _gid_of(name: str) -> int:
    import grp  # only the server's --allow-gid and --socket-group read it

    return grp.getgrnam(name).gr_gid


def _inherited_descriptor(value: int) -> None:
    """An fd handed to us: 0 to 2 are our stdio, never a listener."""
    rules.descriptor(value)
    if value < 3:
        raise ValueError(f"must not be 0 to 2, which are stdin, stdout and stderr, not {value}")


def _read_char(text: str) -> str:
    if len(text) == 1 and 0xDC80 <= ord(text) <= 0xDCFF:
        # A byte that is not UTF-8 reaches argv as a lone surrogate
        # (surrogateescape): it was one byte on the command line, so it is that byte.
        return chr(ord(text) - 0xDC00)
    return text


seconds = _argument_type("seconds", _read_seconds, rules.seconds)
positive_seconds = _argument_type("positive seconds", _read_seconds, rules.positive_seconds)
finite_seconds = _argument_type("finite seconds", _read_seconds, rules.finite_seconds)
positive_int = _argument_type("positive int", _read_int, rules.count)
backlog = _argument_type("backlog", _read_int, rules.backlog)
workers = _argument_type("workers", _read_int, rules.count_up_to(defaults.MAX_WORKERS))
octal_mode = _argument_type("octal mode", _read_octal, rules.mode)
unix_address = _argument_type("unix path", UnixAddress)
tcp_address = _argument_type("tcp address", TcpAddress.parse)
server_tcp_address = _argument_type("server tcp address", TcpAddress.parse, connectable)
one_char = _argument_type("char", _read_char, rules.char)
user_id = _argument_type("user", _read_account("user", _uid_of), rules.account_id)
group_id = _argument_type("group", _read_account("group", _gid_of), rules.account_id)
descriptor = _argument_type("descriptor", _read_int, _inherited_descriptor)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each default once: not for flags, not where the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.const:
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error puts the error first and the usage in one short line.

    argparse prints the whole usage (a dozen lines for the server) before the one
    line that matters; here the error comes first, naming the (sub)command and
    where its options are explained.
    """

    commands = ""
    """The subcommands, as the usage line shows them after the program's name, if any."""

    def error(self, message: str) -> NoReturn:
        words = [self.prog, self.commands, "[OPTION]..."]
        self.exit(
            2,
            f"{self.prog}: error: {message} (see {self.prog} --help)\n"
            f"usage: {' '.join(filter(None, words))}\n",
        )


def _program_name() -> str:
    """How the user ran us, for the usage line: ``trio-sock`` or ``python -m trio_sock``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name != "__main__.py" else "python -m trio_sock"


def build_parser(command: str | None = None, *, prog: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, with every default shown in ``--help``.

    Args:
        command: ``"server"`` or ``"client"`` to fill in that command's options
            only: the client starts faster without building the server's thirty.
        prog: The program's name in usage and errors; by default, as it was run
            (``trio-sock``, or ``python -m trio_sock``).
    """
    parser = _Parser(
        prog=_program_name() if prog is None else prog,
        description="The sockets chapter's increment server and client, on Trio.",
    )
    parser.commands = "{server,client}"
    commands = parser.add_subparsers(dest="command", required=True, metavar="{server,client}")
    server = commands.add_parser(
        "server",
        help="serve clients: each byte comes back plus one",
        formatter_class=_HelpFormatter,
    )
    server.set_defaults(subparser=server)
    client = commands.add_parser(
        "client",
        help="send one character, print the one that comes back",
        formatter_class=_HelpFormatter,
    )
    client.set_defaults(subparser=client)
    if command != "client":
        _add_server_options(server)
    if command != "server":
        _add_client_options(client)
    return parser


def _add_server_options(server: argparse.ArgumentParser) -> None:
    server.add_argument(
        "--unix",
        action="append",
        type=unix_address,
        metavar="PATH",
        default=None,
        help="listen on a Unix socket file, or @NAME in the abstract namespace; repeatable"
        f" (default, with no --unix, --tcp or --fd and no sockets from systemd:"
        f" {defaults.DEFAULT_UNIX_PATH} and"
        f" {defaults.DEFAULT_TCP_HOST}:{defaults.DEFAULT_TCP_PORT})",
    )
    server.add_argument(
        "--tcp",
        action="append",
        type=tcp_address,
        metavar="[HOST:]PORT",
        default=None,
        help=f"listen on TCP; the host defaults to {defaults.DEFAULT_TCP_HOST}, [::1]:PORT for"
        " IPv6, 0.0.0.0:PORT for every interface, port 0 for a free one; repeatable"
        " (default: see --unix)",
    )
    server.add_argument(
        "--once",
        action="store_true",
        help="read one byte per connection, reply, close (default: reply until EOF)",
    )
    server.add_argument(
        "--max-clients",
        type=positive_int,
        default=defaults.DEFAULT_MAX_CLIENTS,
        metavar="N",
        help="clients served at once, by each worker; others wait in the listen queue"
        " (1: one at a time)",
    )
    server.add_argument(
        "--delay",
        type=finite_seconds,
        default=0.0,
        metavar="SECONDS",
        help="simulated work before each reply",
    )
    server.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=defaults.DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="drop a client that neither sends nor reads for this long",
    )
    server.add_argument(
        "--grace",
        type=seconds,
        default=defaults.DEFAULT_GRACE,
        metavar="SECONDS",
        help="on SIGINT, SIGTERM or SIGHUP, how long active clients may finish",
    )
    server.add_argument(
        "--backlog",
        type=backlog,
        default=None,
        metavar="N",
        help="listen queue length (default: the most the kernel allows, as Trio)",
    )
    server.add_argument(
        "--socket-mode",
        type=octal_mode,
        default=defaults.DEFAULT_SOCKET_MODE,
        metavar="OCTAL",
        help="permissions of the Unix socket file (default: 600)",
    )
    server.add_argument(
        "--workers",
        type=workers,
        default=1,
        metavar="N",
        help="serve from N processes: the parent opens every listener, starts N workers"
        " that share them, restarts one that dies, and stops them all on one signal"
        " (1: this process serves, no parent)",
    )
    server.add_argument(
        "--reuse-port",
        action="store_true",
        help="open TCP listeners with SO_REUSEPORT: with --workers, each worker gets a"
        " socket of its own on each --tcp address and the kernel spreads connections evenly"
        " between them; with one process, other processes of this user that ask for it too"
        " may share the port (Unix and --fd sockets are always shared) (default: off, the"
        " workers accept from one shared socket)",
    )
    server.add_argument(
        "--fd",
        type=descriptor,
        action="append",
        metavar="N",
        help="serve the listening socket this process inherited as descriptor N (from a"
        " parent, or systemd); repeatable (default: with no --unix, --tcp or --fd, the"
        " sockets systemd passes in LISTEN_FDS, else the two defaults of --unix)",
    )
    server.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="PEM certificate chain; with --tls-key, TCP listeners speak TLS (Unix ones"
        " never) (default: plain TCP)",
    )
    server.add_argument(
        "--tls-key", metavar="FILE", help="PEM private key of --tls-cert (default: none)"
    )
    server.add_argument(
        "--tls-handshake-timeout",
        type=positive_seconds,
        default=defaults.DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="drop a TLS client that has not finished its handshake in this long",
    )
    server.add_argument(
        "--socket-group",
        type=group_id,
        metavar="GROUP",
        help="give the Unix socket file to this group (name or number), e.g. with"
        " --socket-mode 660 so that its members may connect (default: the server's group)",
    )
    server.add_argument(
        "--allow-uid",
        type=user_id,
        action="append",
        metavar="USER",
        help="serve only Unix peers that are this user (name or number), or in an"
        " --allow-gid group; repeatable (default: anyone the socket file's mode lets in;"
        " for @NAME, which has no file, only the server's own user)",
    )
    server.add_argument(
        "--allow-gid",
        type=group_id,
        action="append",
        metavar="GROUP",
        help="serve only Unix peers with this group (name or number), primary or"
        " supplementary, or an --allow-uid user; repeatable (default: see --allow-uid)",
    )
    server.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error", "critical"],
        default="info",
        help="least severe log record shown on stderr",
    )
    server.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: every stderr line is one JSON object",
    )


def _add_client_options(client: argparse.ArgumentParser) -> None:
    where = client.add_mutually_exclusive_group()
    where.add_argument(
        "--unix",
        type=unix_address,
        metavar="PATH",
        help=f"the server's Unix socket, or @NAME (default: {defaults.DEFAULT_UNIX_PATH})",
    )
    where.add_argument(
        "--tcp",
        type=server_tcp_address,
        metavar="[HOST:]PORT",
        help=f"the server's TCP address; the host defaults to {defaults.DEFAULT_TCP_HOST}"
        " (default: --unix)",
    )
    client.add_argument(
        "--char",
        type=one_char,
        default="A",
        metavar="C",
        help="the character to send: one character that is one byte (Latin-1)",
    )
    client.add_argument(
        "--timeout",
        type=positive_seconds,
        default=defaults.DEFAULT_CLIENT_TIMEOUT,
        metavar="SECONDS",
        help="give up if connecting and the reply take longer (each attempt)",
    )
    client.add_argument(
        "--wait",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="keep retrying, with backoff, while the server is not there yet",
    )
    client.add_argument(
        "--tls",
        action="store_true",
        help="speak TLS to a --tcp server, checking its certificate (default: plain)",
    )
    client.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="PEM file of the CAs to trust; implies --tls (default: the system's)",
    )


def _server_config(args: argparse.Namespace) -> ServerConfig:
    addresses: list[Address] = [*(args.unix or ()), *(args.tcp or ())]
    # Imported here: the one-shot client never builds the server's configuration.
    from trio_sock.config.server import DEFAULT_ADDRESSES, ListenFd, ServerConfig

    fds = tuple(ListenFd(fd) for fd in args.fd or ())
    return ServerConfig(
        addresses=addresses or ([] if fds else DEFAULT_ADDRESSES),
        listen_fds=fds,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_handshake_timeout=args.tls_handshake_timeout,
        once=args.once,
        max_clients=args.max_clients,
        delay=args.delay,
        idle_timeout=args.idle_timeout,
        grace=args.grace,
        backlog=args.backlog,
        socket_mode=args.socket_mode,
        socket_group=args.socket_group,
        allow_uids=args.allow_uid or (),
        allow_gids=args.allow_gid or (),
        workers=args.workers,
        reuse_port=args.reuse_port,
    )


def _client_config(args: argparse.Namespace) -> ClientConfig:
    return ClientConfig(
        address=args.tcp or args.unix or UnixAddress(defaults.DEFAULT_UNIX_PATH),
        char=args.char,
        timeout=args.timeout,
        wait=args.wait,
        tls=args.tls or args.tls_ca is not None,  # a CA to trust only makes sense with TLS
        tls_ca=args.tls_ca,
    )


@attrs.frozen
class Command:
    """A parsed command line: what to run, and how to log it."""

    config: ServerConfig | ClientConfig
    log_level: str = "warning"
    log_format: str = "text"
    activation: bool = False
    """No --unix, --tcp or --fd: sockets systemd passes (LISTEN_FDS) replace the defaults."""


def parse(argv: Sequence[str] | None = None, *, prog: str | None = None) -> Command:
    """Parse a command line into configuration, running nothing.

    Args:
        argv: The arguments after the program's name; by default ``sys.argv[1:]``.
        prog: The program's name in usage and errors; see ``build_parser``.

    Raises:
        SystemExit: after printing help (code 0) or the error and a usage line (code 2).
    """
    argv = sys.argv[1:] if argv is None else argv
    args, unknown = build_parser(argv[0] if argv else None, prog=prog).parse_known_args(argv)
    subparser: argparse.ArgumentParser = args.subparser
    if unknown:  # argparse itself would blame the top-level command, not the subcommand
        # repr() for a word with a newline or the like: the error stays one line.
        words = (word if word.isprintable() else repr(word) for word in unknown)
        subparser.error(f"unrecognized arguments: {' '.join(words)}")
    _restore_double_dash(args)
    try:
        if args.command == "server":
            if _tls_without_tcp(args):
                subparser.error(
                    "argument --tls-cert/--tls-key: TLS is for TCP listeners only, and only"
                    " --unix is given; add --tcp [HOST:]PORT, or leave TLS out"
                )
            given = args.unix or args.tcp or args.fd
            return Command(_server_config(args), args.log_level, args.log_format, not given)
        return Command(_client_config(args))
    except (TypeError, ValueError) as exc:  # what no single option can check alone
        subparser.error(str(exc))


def _tls_without_tcp(args: argparse.Namespace) -> bool:
    """TLS options, but only ``--unix`` to listen on: TLS would silently apply to nothing.

    Sockets from ``--fd`` or systemd may be TCP; which they are is known only once
    they are adopted, and the server warns then.
    """
    tls = args.tls_cert is not None or args.tls_key is not None
    return tls and bool(args.unix) and not (args.tcp or args.fd)


def _restore_double_dash(args: argparse.Namespace) -> None:
    """Give back the values ``--opt=--`` lost.

    Python before 3.11.8 and 3.12.2 (gh-109475) drops a value of exactly ``--``
    and stores ``[]`` instead.  No option here takes a list, so an empty list can
    only be that: read it again as the text ``--``, as newer Pythons do.
    """
    subparser: argparse.ArgumentParser = args.subparser
    for action in subparser._actions:  # argparse offers no public way to list them
        value = getattr(args, action.dest, None)
        if not action.option_strings or not isinstance(value, list):
            continue
        if value == []:
            setattr(args, action.dest, _double_dash_for(subparser, action))
        elif [] in value:
            restored = [_double_dash_for(subparser, action) if v == [] else v for v in value]
            setattr(args, action.dest, restored)


def _double_dash_for(parser: argparse.ArgumentParser, action: argparse.Action) -> object:
    option = "/".join(action.option_strings)
    value: object = "--"
    if action.type is not None:
        try:
            value = action.type("--")  # type: ignore[operator]
        except argparse.ArgumentTypeError as exc:
            parser.error(f"argument {option}: {exc}")
    if action.choices is not None and value not in action.choices:
        parser.error(f"argument {option}: invalid choice: '--'")
    return value
