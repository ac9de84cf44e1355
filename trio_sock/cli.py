"""The command line: ``python -m trio_sock server`` and ``python -m trio_sock client``.

A thin layer over the library: parse options into config objects, run, and
turn the outcome into output and an exit code.  This is the only module that
prints or picks exit codes: 0 success, 1 an error the user can fix (one line on
stderr), 2 a bad command line (with usage).  No traceback reaches the user
unless ``--log-level debug`` asks for one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs
import trio

from . import config as cfg
from .errors import TrioSockError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .server import Server

_log = logging.getLogger("trio_sock.cli")
T = TypeVar("T")

#: The fields of a log record that are not ``extra=...``; everything else goes into JSON.
_STANDARD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _argument_type(name: str, parse: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap ``parse`` so that its ValueError becomes argparse's usage error, message intact."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"expected 0 or more seconds, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise ValueError(f"expected more than 0 seconds, got {text!r}")
    return value


def _finite_seconds(text: str) -> float:
    value = _seconds(text)
    if math.isinf(value):
        raise ValueError(f"expected a finite number of seconds, got {text!r}")
    return value


def _backlog(text: str) -> int:
    value = _positive_int(text)
    if value > cfg.MAX_BACKLOG:
        raise ValueError(f"expected at most {cfg.MAX_BACKLOG}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"expected 1 or more, got {text!r}")
    return value


def _octal_mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError(f"expected octal permission bits such as 600, got {text!r}") from None
    if not 0 <= value <= 0o777:
        raise ValueError(f"expected permission bits 000 to 777 in octal, got {text!r}")
    return value


def _char(text: str) -> str:
    cfg.ClientConfig(char=text)  # the config's own check, so the rule lives in one place
    return text


seconds = _argument_type("seconds", _seconds)
positive_seconds = _argument_type("positive seconds", _positive_seconds)
positive_int = _argument_type("positive int", _positive_int)
finite_seconds = _argument_type("finite seconds", _finite_seconds)
backlog = _argument_type("backlog", _backlog)
octal_mode = _argument_type("octal mode", _octal_mode)
unix_address = _argument_type("unix path", cfg.UnixAddress)
tcp_address = _argument_type("tcp address", cfg.TcpAddress.parse)
one_char = _argument_type("char", _char)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each default once: not for flags, not where the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.const:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with every default shown in ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_sock",
        description="The sockets chapter's increment server and client, on Trio.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{server,client}")
    helpful = _HelpFormatter

    server = commands.add_parser(
        "server", help="serve clients: each byte comes back plus one", formatter_class=helpful
    )
    server.set_defaults(subparser=server)
    server.add_argument(
        "--unix",
        action="append",
        type=unix_address,
        metavar="PATH",
        default=None,
        help="listen on a Unix socket file, or @NAME in the abstract namespace; repeatable"
        f" (default, with neither --unix nor --tcp: {cfg.DEFAULT_UNIX_PATH} and"
        f" {cfg.DEFAULT_TCP_HOST}:{cfg.DEFAULT_TCP_PORT})",
    )
    server.add_argument(
        "--tcp",
        action="append",
        type=tcp_address,
        metavar="[HOST:]PORT",
        default=None,
        help=f"listen on TCP; the host defaults to {cfg.DEFAULT_TCP_HOST}, [::1]:PORT for"
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
        default=cfg.DEFAULT_MAX_CLIENTS,
        metavar="N",
        help="clients served at once; others wait in the listen queue (1: one at a time)",
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
        default=cfg.DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="drop a client that neither sends nor reads for this long",
    )
    server.add_argument(
        "--grace",
        type=seconds,
        default=cfg.DEFAULT_GRACE,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long active clients may finish",
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
        default=cfg.DEFAULT_SOCKET_MODE,
        metavar="OCTAL",
        help="permissions of the Unix socket file (default: 600)",
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

    client = commands.add_parser(
        "client",
        help="send one character, print the one that comes back",
        formatter_class=helpful,
    )
    client.set_defaults(subparser=client)
    where = client.add_mutually_exclusive_group()
    where.add_argument(
        "--unix",
        type=unix_address,
        metavar="PATH",
        help=f"the server's Unix socket, or @NAME (default: {cfg.DEFAULT_UNIX_PATH})",
    )
    where.add_argument(
        "--tcp",
        type=tcp_address,
        metavar="[HOST:]PORT",
        help=f"the server's TCP address; the host defaults to {cfg.DEFAULT_TCP_HOST}",
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
        default=cfg.DEFAULT_CLIENT_TIMEOUT,
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
    return parser


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_FIELDS:
                fields[key] = value
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        return json.dumps(fields, default=str)


def _configure_logging(level: str, form: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("trio_sock")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    return handler


def _server_config(args: argparse.Namespace) -> cfg.ServerConfig:
    addresses: list[cfg.Address] = [*(args.unix or ()), *(args.tcp or ())]
    return cfg.ServerConfig(
        addresses=addresses or cfg.DEFAULT_ADDRESSES,
        once=args.once,
        max_clients=args.max_clients,
        delay=args.delay,
        idle_timeout=args.idle_timeout,
        grace=args.grace,
        backlog=args.backlog,
        socket_mode=args.socket_mode,
    )


async def _serve_until_signalled(config: cfg.ServerConfig) -> None:
    from .server import serve  # the client never pays for importing the server

    # Opened first, so that a signal at any moment after this is handled here.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[Server]) -> None:
                await serve(config, task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped gracefully: stop watching signals

            server: Server = await nursery.start(run)
            print("server waiting on", *map(_ready_word, server.addresses), flush=True)
            async for signum in signals:
                name = signal.Signals(signum).name
                if server.stopping:
                    _log.warning("%s again: cancelling every client now", name)
                    nursery.cancel_scope.cancel()
                    break
                _log.info(
                    "%s: stopping; active clients have %ss to finish (%s again to stop now)",
                    name,
                    config.grace,
                    name,
                )
                server.stop()


def _ready_word(address: cfg.Address) -> str:
    """An address as the ready line lists it: quoted as a shell word only if it must be,
    so that a path with spaces stays one word and everything else reads as is."""
    text = str(address)
    return shlex.quote(text) if any(c.isspace() or c in "'\"\\" for c in text) else text


def _leaf(exc: BaseException) -> BaseException:
    """The one error worth reporting out of the groups that nurseries wrap errors in."""
    while isinstance(exc, BaseExceptionGroup):
        exc = next(
            (e for e in exc.exceptions if isinstance(e, TrioSockError | OSError)),
            exc.exceptions[0],
        )
    return exc


def _report(message: str, form: str) -> None:
    if form == "json":
        record = logging.makeLogRecord(
            {"name": _log.name, "levelname": "ERROR", "levelno": logging.ERROR, "msg": message}
        )
        print(JsonFormatter().format(record), file=sys.stderr)
    else:
        print(f"trio_sock server: error: {message}", file=sys.stderr)


def _run_server(config: cfg.ServerConfig, log_level: str, log_format: str) -> int:
    _configure_logging(log_level, log_format)
    try:
        trio.run(_serve_until_signalled, config)
    except BaseException as raised:  # the one place errors become exit codes
        exc = _leaf(raised)
        if isinstance(exc, KeyboardInterrupt):  # SIGINT before the receiver was open
            return 0
        if isinstance(exc, TrioSockError):
            _report(str(exc), log_format)
        elif isinstance(exc, OSError):
            _report(exc.strerror or str(exc), log_format)
        else:
            _report(f"internal error: {exc!r} (run with --log-level debug for details)", log_format)
            _log.debug("internal error", exc_info=exc)
        return 1
    return 0


def _client_config(args: argparse.Namespace) -> cfg.ClientConfig:
    return cfg.ClientConfig(
        address=args.tcp or args.unix or cfg.UnixAddress(cfg.DEFAULT_UNIX_PATH),
        char=args.char,
        timeout=args.timeout,
        wait=args.wait,
    )


def _run_client(config: cfg.ClientConfig) -> int:
    from .client import send_char

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        reply = trio.run(send_char, config)
    except KeyboardInterrupt:
        return 130
    except (TrioSockError, OSError) as exc:
        print(f"oops: client: {exc}", file=sys.stderr)
        return 1
    print(f"char from server = {reply}", flush=True)
    return 0


@attrs.frozen
class Command:
    """A parsed command line: what to run, and how to log it."""

    config: cfg.ServerConfig | cfg.ClientConfig
    log_level: str = "warning"
    log_format: str = "text"


def parse(argv: Sequence[str] | None = None) -> Command:
    """Parse a command line into configuration, running nothing.

    Raises:
        SystemExit: after printing help (code 0) or usage and the error (code 2).
    """
    args = build_parser().parse_args(argv)
    try:
        if args.command == "server":
            return Command(_server_config(args), args.log_level, args.log_format)
        return Command(_client_config(args))
    except (TypeError, ValueError) as exc:  # what no single option can check alone
        subparser: argparse.ArgumentParser = args.subparser
        subparser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        command = parse(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    if isinstance(command.config, cfg.ServerConfig):
        return _run_server(command.config, command.log_level, command.log_format)
    return _run_client(command.config)


def main_exit() -> NoReturn:
    """Entry point of ``python -m trio_sock`` and the ``trio-sock`` script."""
    sys.exit(main())
