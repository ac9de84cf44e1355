"""The command line: ``python -m trio_sock server`` and ``python -m trio_sock client``.

A thin layer over the library: parse options into config objects, run, and
turn the outcome into output and an exit code.  This is the only module that
picks exit codes: 0 success, 1 an error the user can fix (one line on stderr),
2 a bad command line (with usage).  No traceback reaches the user unless
``--log-level debug`` asks for one.  Serving until signalled is ``run``'s.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, NoReturn

import attrs
import trio

from trio_sock.cli import early_signals
from trio_sock.cli.options import Command as Command
from trio_sock.cli.options import parse as parse
from trio_sock.cli.run import run_until_signalled
from trio_sock.config.addresses import Address, TcpAddress
from trio_sock.config.client import ClientConfig
from trio_sock.errors import TrioSockError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trio_sock.config.server import ServerConfig
    from trio_sock.server.handlers import Handler
    from trio_sock.server.serve import Server
    from trio_sock.workers.supervisor import Supervisor
    from trio_sock.workers.worker import WorkerRole

_log = logging.getLogger("trio_sock.cli")
_stats_log = logging.getLogger("trio_sock.stats")


async def _serve_until_signalled(
    config: ServerConfig, role: WorkerRole | None, handler: Handler | None
) -> None:
    from trio_sock.cli.notify import Notifier
    from trio_sock.cli.status import StatusReporter
    from trio_sock.server.serve import serve  # the client never pays for importing the server

    notifier = Notifier.from_environment()

    async def start(task_status: trio.TaskStatus[Server]) -> None:
        await serve(config, handler, task_status=task_status)

    def when_ready(server: Server, nursery: trio.Nursery) -> Callable[[], None]:
        if role is None:  # a worker's parent warns, once for all
            _warn_if_tls_is_unused(config, server.addresses)
        status = StatusReporter(server, notifier)
        status.notify("READY=1")
        if notifier.address is not None:
            nursery.start_soon(status.run)
        if role is not None:
            from trio_sock.workers.worker import Lifeline, obey_parent

            lifeline = Lifeline.open()
            nursery.start_soon(obey_parent, lifeline, server, nursery, config.grace, _log_stats)
        return lambda: status.notify("STOPPING=1")

    server = await run_until_signalled(
        start, grace=config.grace, when_ready=when_ready, stats=_log_stats
    )
    if server is not None:
        _log_stats(server)


async def _supervise_until_signalled(
    config: ServerConfig, log_level: str, log_format: str, handler: str | None
) -> None:
    from trio_sock.cli.notify import Notifier
    from trio_sock.workers.supervisor import supervise

    notifier = Notifier.from_environment()

    async def start(task_status: trio.TaskStatus[Supervisor]) -> None:
        await supervise(
            config,
            log_level=log_level,
            log_format=log_format,
            handler=handler,
            task_status=task_status,
        )

    def when_ready(supervisor: Supervisor, nursery: trio.Nursery) -> Callable[[], None]:
        _warn_if_tls_is_unused(config, supervisor.addresses)
        notifier.notify("READY=1", f"STATUS={config.workers} workers serving")
        return lambda: notifier.notify("STOPPING=1", f"STATUS=stopping {config.workers} workers")

    await run_until_signalled(
        start,
        grace=config.grace,
        when_ready=when_ready,
        stats=lambda supervisor: supervisor.request_stats(),
    )


def _warn_if_tls_is_unused(config: ServerConfig, addresses: Sequence[Address]) -> None:
    """Sockets from ``--fd`` or systemd may all be Unix ones, which never speak TLS."""
    if config.tls_cert is not None and not any(isinstance(a, TcpAddress) for a in addresses):
        _log.warning(
            "--tls-cert and --tls-key are ignored: TLS is for TCP listeners only, and none"
            " of these is TCP; pass a TCP socket, or leave TLS out"
        )


def _log_stats(server: Server) -> None:
    stats = server.stats()
    _stats_log.info("stats %s", stats, extra=attrs.asdict(stats))


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
) -> int:
    from trio_sock.workers.worker import WorkerRole

    worker: int | None = None
    try:
        if role := WorkerRole.from_environment():  # started by a --workers parent
            worker = role.number
            config, log_level, log_format = role.config, role.log_level, role.log_format
            activation, handler_spec = False, role.handler
        from trio_sock.cli import logs

        logs.configure(log_level, log_format, worker)
        if activation:  # inside the try: a bad LISTEN_FDS is one line, not a traceback
            from trio_sock.listen.systemd import listen_fds

            if activated := listen_fds():
                config = attrs.evolve(config, addresses=(), listen_fds=activated)
        # Before Trio opens descriptors of its own: an fd that was not passed in
        # must read "not open", not be mistaken for one of Trio's.
        from trio_sock.listen.inherited import check_inherited

        for inherited in config.listen_fds:
            check_inherited(inherited)
        handler = None
        if handler_spec is not None:  # a bad one is one line here, before anything listens
            from trio_sock.server.handlers import import_handler

            handler = import_handler(handler_spec)
        if config.workers > 1:
            trio.run(_supervise_until_signalled, config, log_level, log_format, handler_spec)
        else:
            trio.run(_serve_until_signalled, config, role, handler)
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
    )


def main_exit() -> NoReturn:
    """Entry point of ``python -m trio_sock`` and the ``trio-sock`` script."""
    sys.exit(main())
