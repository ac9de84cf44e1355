"""The command line: ``python -m trio_sock server`` and ``python -m trio_sock client``.

A thin layer over the library: parse options into config objects, run, and
turn the outcome into output and an exit code.  This is the only module that
prints or picks exit codes: 0 success, 1 an error the user can fix (one line on
stderr), 2 a bad command line (with usage).  No traceback reaches the user
unless ``--log-level debug`` asks for one.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from . import _early_signals
from . import config as cfg
from .errors import TrioSockError
from .options import Command as Command
from .options import parse as parse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from .lifeline import Lifeline, WorkerRole
    from .server import Server
    from .stats import ServerStats
    from .systemd import Notifier
    from .workers import Supervisor

_log = logging.getLogger("trio_sock.cli")
_stats_log = logging.getLogger("trio_sock.stats")
#: systemd shows the latest STATUS= line; once a second is fresh enough for
#: ``systemctl status`` and costs nothing under load.
STATUS_INTERVAL = 1.0
#: The fields of a log record that are not ``extra=...``; everything else goes into JSON.
_STANDARD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


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
        import json  # here, not at the top: the client never logs in JSON

        return json.dumps(fields, default=str)


class _WorkerLabel(logging.Filter):
    """Marks every record with the worker's number: ``worker=N`` in text, a field in JSON."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.number
        return True


def _configure_logging(level: str, form: str, worker: int | None = None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    label = ""
    if worker is not None:
        handler.addFilter(_WorkerLabel(worker))
        label = "worker=%(worker)s "
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {label}%(name)s: %(message)s")
        )
    root = logging.getLogger("trio_sock")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # A stats line is asked for (SIGUSR1) or closes the run: show it at
    # --log-level warning too; only error and critical silence it.
    _stats_log.setLevel(
        min(root.level, logging.INFO) if root.level <= logging.WARNING else root.level
    )
    return handler


async def _serve_until_signalled(config: cfg.ServerConfig, role: WorkerRole | None) -> None:
    from .server import serve  # the client never pays for importing the server
    from .systemd import Notifier

    notifier = Notifier.from_environment()
    # Opened first, so that a signal at any moment after this is handled here.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[Server]) -> None:
                await serve(config, task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped gracefully: stop watching signals

            if held := _early_signals.received():
                name = signal.Signals(held[0]).name
                _log.info("%s while starting: not serving", name)
                return
            server: Server = await nursery.start(run)
            print("server waiting on", *map(_ready_word, server.addresses), flush=True)
            ready = server.stats()
            notifier.notify("READY=1", _status(ready))
            if notifier.address is not None:
                nursery.start_soon(_report_status, server, notifier, ready.active)
            if role is not None:
                from .lifeline import Lifeline

                nursery.start_soon(_obey_parent, Lifeline.open(), server, nursery, config.grace)

            def stop() -> None:
                notifier.notify("STOPPING=1", _status(server.stats()))
                server.stop()

            await _obey_signals(signals, nursery, config.grace, stop, lambda: _log_stats(server))
        _log_stats(server)


async def _supervise_until_signalled(
    config: cfg.ServerConfig, log_level: str, log_format: str
) -> None:
    from .systemd import Notifier
    from .workers import supervise

    notifier = Notifier.from_environment()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[Supervisor]) -> None:
                await supervise(
                    config, log_level=log_level, log_format=log_format, task_status=task_status
                )
                nursery.cancel_scope.cancel()  # every worker has exited: stop watching signals

            if held := _early_signals.received():
                name = signal.Signals(held[0]).name
                _log.info("%s while starting: not serving", name)
                return
            supervisor: Supervisor = await nursery.start(run)
            print("server waiting on", *map(_ready_word, supervisor.addresses), flush=True)
            notifier.notify("READY=1", f"STATUS={config.workers} workers serving")

            def stop() -> None:
                notifier.notify("STOPPING=1", f"STATUS=stopping {config.workers} workers")
                supervisor.stop()

            await _obey_signals(signals, nursery, config.grace, stop, supervisor.request_stats)


async def _obey_signals(
    signals: AsyncIterator[int],
    nursery: trio.Nursery,
    grace: float,
    stop: Callable[[], None],
    stats: Callable[[], None],
) -> None:
    """SIGUSR1 asks for ``stats``; the first SIGINT or SIGTERM calls ``stop``, the second
    cancels ``nursery`` and returns."""
    signalled = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGUSR1:
            stats()
        elif signalled:
            _log.warning("second signal (%s): cancelling every client now", name)
            nursery.cancel_scope.cancel()
            return
        else:
            signalled = True
            _log.info(
                "%s: stopping; clients have %ss to finish (a second signal stops now)", name, grace
            )
            stop()


async def _obey_parent(
    lifeline: Lifeline, server: Server, nursery: trio.Nursery, grace: float
) -> None:
    """A worker's orders from its parent: as signals would say, but a STOP after a
    signal (both sent for one Ctrl-C or ``systemctl stop``) is not a second signal."""
    from .lifeline import Order

    try:
        while True:
            order = await lifeline.next_order()
            if order is Order.STATS:
                _log_stats(server)
            elif order is Order.CANCEL:
                _log.warning("the parent says stop now: cancelling every client")
                nursery.cancel_scope.cancel()
                return
            elif order is Order.STOP:
                if not server.stopping:
                    _log.info("the parent says stop: clients have %ss to finish", grace)
                server.stop()
            else:
                _log.warning("the parent is gone: stopping; clients have %ss to finish", grace)
                server.stop()
                return
    finally:
        with trio.CancelScope(shield=True):
            await lifeline.aclose()


def _status(stats: ServerStats) -> str:
    return f"STATUS={stats.active} active clients, {stats.accepted} accepted"


async def _report_status(server: Server, notifier: Notifier, shown: int) -> None:
    """Tell systemd the active client count when it changes from ``shown``, at most
    once a second."""
    while True:
        await trio.sleep(STATUS_INTERVAL)
        stats = server.stats()
        if stats.active != shown:
            shown = stats.active
            notifier.notify(_status(stats))


def _log_stats(server: Server) -> None:
    stats = server.stats()
    _stats_log.info("stats %s", stats, extra=attrs.asdict(stats))


def _ready_word(address: cfg.Address) -> str:
    """An address as the ready line lists it: quoted as a shell word only if it must be,
    so that a path with spaces stays one word and everything else reads as is."""
    import shlex  # the server's alone, like the other imports inside functions here

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


def _report(message: str, form: str, worker: int | None = None) -> None:
    if form == "json":
        fields = {"name": _log.name, "levelname": "ERROR", "levelno": logging.ERROR, "msg": message}
        if worker is not None:
            fields["worker"] = worker
        print(JsonFormatter().format(logging.makeLogRecord(fields)), file=sys.stderr)
    else:
        label = "" if worker is None else f"worker {worker}: "
        print(f"trio_sock server: error: {label}{message}", file=sys.stderr)


def _run_server(config: cfg.ServerConfig, log_level: str, log_format: str) -> int:
    from .lifeline import WorkerRole

    worker: int | None = None
    try:
        if role := WorkerRole.from_environment():
            worker = role.number
            config = attrs.evolve(config, listen_fds=role.listen_fds(config.listen_fds))
        _configure_logging(log_level, log_format, worker)
        # Before Trio opens descriptors of its own: an fd that was not passed in
        # must read "not open", not be mistaken for one of Trio's.
        from .listeners import check_inherited

        for inherited in config.listen_fds:
            check_inherited(inherited)
        if config.workers > 1:
            trio.run(_supervise_until_signalled, config, log_level, log_format)
        else:
            trio.run(_serve_until_signalled, config, role)
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


def _run_client(config: cfg.ClientConfig) -> int:
    from .client import send_char

    if held := _early_signals.release():
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
    if isinstance(command.config, cfg.ClientConfig):  # not ServerConfig: it loads on first use
        return _run_client(command.config)
    from .systemd import listen_fds

    config = command.config
    if command.activation and (activated := listen_fds()):
        config = attrs.evolve(config, addresses=(), listen_fds=activated)
    return _run_server(config, command.log_level, command.log_format)


def main_exit() -> NoReturn:
    """Entry point of ``python -m trio_sock`` and the ``trio-sock`` script."""
    sys.exit(main())
