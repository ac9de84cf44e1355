"""The command line: its parser, and ``parse``, which turns it into configuration.

Every value is checked as it is read, so a bad one ends with exit 2: first a
message naming the subcommand and the option, then a one-line usage; what only
the whole config can check (the same address twice) is caught by the config's
own validators and reported the same way.  Nothing here runs a server or a client.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, NoReturn

import attrs

from trio_sock.cli.client_options import add_client_options, client_config
from trio_sock.cli.server_options import (
    add_server_options,
    metrics_clash,
    server_config,
    tls_without_tcp,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trio_sock.config.addresses import TcpAddress
    from trio_sock.config.client import ClientConfig
    from trio_sock.config.server import ServerConfig


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
        add_server_options(server)
    if command != "server":
        add_client_options(client)
    return parser


@attrs.frozen
class Command:
    """A parsed command line: what to run, and how to log it."""

    config: ServerConfig | ClientConfig
    log_level: str = "warning"
    log_format: str = "text"
    activation: bool = False
    """No --unix, --tcp or --fd: sockets systemd passes (LISTEN_FDS) replace the defaults."""
    handler: str | None = None
    """``--handler MODULE:NAME``, loaded only when the server runs."""
    metrics: TcpAddress | None = None
    """``--metrics [HOST:]PORT``: where scrapers get the figures."""


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
            if tls_without_tcp(args):
                subparser.error(
                    "argument --tls-cert/--tls-key: TLS is for TCP listeners only, and only"
                    " --unix is given; add --tcp [HOST:]PORT, or leave TLS out"
                )
            if args.handler is not None and (args.once or args.delay):
                subparser.error(
                    "argument --handler: --once and --delay belong to the increment protocol;"
                    " leave them out to serve a handler"
                )
            given = args.unix or args.tcp or args.fd
            config = server_config(args)
            if clash := metrics_clash(args, config):
                subparser.error(
                    f"argument --metrics: the server listens on {clash} already; give the"
                    " metrics a port of their own"
                )
            return Command(
                config,
                args.log_level,
                args.log_format,
                not given,
                args.handler,
                args.metrics,
            )
        return Command(client_config(args))
    except (TypeError, ValueError) as exc:  # what no single option can check alone
        subparser.error(str(exc))


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
