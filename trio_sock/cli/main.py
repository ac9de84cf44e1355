"""The command line: ``python -m trio_sock server`` and ``python -m trio_sock client``.

A thin layer over the library: parse options into config objects, run, and
turn the outcome into output and an exit code.  This is the only module that
picks exit codes: 0 success, 1 an error the user can fix (one line on stderr),
2 a bad command line (with usage).  No traceback reaches the user unless
``--log-level debug`` asks for one.  The server's process is ``trio_sock.run``'s
(``service.run``): this adds only logging, the options and the exit code.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, NoReturn

import trio

from trio_sock.cli.options import Command as Command
from trio_sock.cli.options import parse as parse
from trio_sock.config.client import ClientConfig
from trio_sock.errors import TrioSockError
from trio_sock.service import early_signals

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trio_sock.config.addresses import TcpAddress
    from trio_sock.config.server import ServerConfig

_log = logging.getLogger("trio_sock.cli")


def _leaf(exc: BaseException) -> BaseException:
    """The one error worth reporting out of the groups that nurseries wrap errors in."""
    while isinstance(exc, BaseExceptionGroup):
        exc = next(
            (e for e in exc.exceptions if isinstance(e, TrioSockError | OSError)),
            exc.exceptions[0],
        )
    return exc


def _report(message: str, form: str, worker: int | None = None) -> None:
    if form == "json":
        fields = {"name": _log.name, "levelname": "ERROR", "levelno": logging.ERROR, "msg": message}
        if worker is not None:
            fields["worker"] = worker
        from trio_sock.cli.logs import JsonFormatter

        print(JsonFormatter().format(logging.makeLogRecord(fields)), file=sys.stderr)
    else:
        label = "" if worker is None else f"worker {worker}: "
        print(f"trio_sock server: error: {label}{message}", file=sys.stderr)


def _run_server(
    config: ServerConfig,
    log_level: str,
    log_format: str,
    *,
    activation: bool,
    handler_spec: str | None,
    metrics: TcpAddress | None,
) -> int:
    from trio_sock.cli import logs
    from trio_sock.service.run import run, run_worker
    from trio_sock.workers.worker import WorkerRole

    worker: int | None = None
    try:
        if role := WorkerRole.from_environment():  # started by a --workers parent
            worker, log_format = role.number, role.log_format
            logs.configure(role.log_level, role.log_format, worker)
            run_worker(role)
        else:
            logs.configure(log_level, log_format)
            run(
                config,
                handler_spec,
                activation=activation,
                metrics=metrics,
                worker_log_level=log_level,
                worker_log_format=log_format,
            )
    except BaseException as raised:  # the one place errors become exit codes
        exc = _leaf(raised)
        if isinstance(exc, KeyboardInterrupt):  # SIGINT before the receiver was open
            return 0
        if isinstance(exc, TrioSockError):
            _report(str(exc), log_format, worker)
        elif isinstance(exc, OSError):
            _report(exc.strerror or str(exc), log_format, worker)
        else:
            _report(
                f"internal error: {exc!r} (run with --log-level debug for details)",
                log_format,
                worker,
            )
            _log.debug("internal error", exc_info=exc)
        return 1
    return 0


def _run_client(config: ClientConfig) -> int:
    from trio_sock.client import send_char

    if held := early_signals.release():
        return 128 + held[0]  # the shell's convention for "ended by this signal"

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        command = parse(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    if isinstance(command.config, ClientConfig):  # not ServerConfig: it loads on first use
        return _run_client(command.config)
    return _run_server(
        command.config,
        command.log_level,
        command.log_format,
        activation=command.activation,
        handler_spec=command.handler,
        metrics=command.metrics,
    )


def main_exit() -> NoReturn:
    """Entry point of ``python -m trio_sock`` and the ``trio-sock`` script."""
    sys.exit(main())
