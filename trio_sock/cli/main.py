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
from typing import TYPE_CHECKING, NoReturn

import attrs
import trio

from trio_sock.cli import early_signals
from trio_sock.cli.options import Command as Command
from trio_sock.cli.options import parse as parse
from trio_sock.config.addresses import Address, TcpAddress
from trio_sock.config.client import ClientConfig
from trio_sock.errors import TrioSockError
from trio_sock.server.ready import ready_line

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from trio_sock.config.server import ServerConfig
    from trio_sock.server.serve import Server
    from trio_sock.workers.supervisor import Supervisor
    from trio_sock.workers.worker import Lifeline, WorkerRole

_log = logging.getLogger("trio_sock.cli")
_stats_log = logging.getLogger("trio_sock.stats")


async def _serve_until_signalled(config: ServerConfig, role: WorkerRole | None) -> None:
    from trio_sock.cli.notify import Notifier
    from trio_sock.cli.status import StatusReporter
    from trio_sock.server.serve import serve  # the client never pays for importing the server

    notifier = Notifier.from_environment()
    # Opened first, so that a signal at any moment after this is handled here.
    with trio.open_signal_receiver(*early_signals.stop_signals(), signal.SIGUSR1) as signals:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[Server]) -> None:
                await serve(config, task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped gracefully: stop watching signals

            if held := early_signals.received():
                name = signal.Signals(held[0]).name
                _log.info("%s while starting: not serving", name)
                return
            server: Server = await nursery.start(run)
            if role is None:  # a worker's parent warns, once for all
                _warn_if_tls_is_unused(config, server.addresses)
            print(ready_line(server.addresses), flush=True)
            status = StatusReporter(server, notifier)
            status.notify("READY=1")
            if notifier.address is not None:
                nursery.start_soon(status.run)
            if role is not None:
                from trio_sock.workers.worker import Lifeline

                nursery.start_soon(_obey_parent, Lifeline.open(), server, nursery, config.grace)

            def stop() -> None:
                status.notify("STOPPING=1")
                server.stop()

            await _obey_signals(signals, nursery, config.grace, stop, lambda: _log_stats(server))
        _log_stats(server)


async def _supervise_until_signalled(config: ServerConfig, log_level: str, log_format: str) -> None:
    from trio_sock.cli.notify import Notifier
    from trio_sock.workers.supervisor import supervise

    notifier = Notifier.from_environment()
    with trio.open_signal_receiver(*early_signals.stop_signals(), signal.SIGUSR1) as signals:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[Supervisor]) -> None:
                await supervise(
                    config, log_level=log_level, log_format=log_format, task_status=task_status
                )
                nursery.cancel_scope.cancel()  # every worker has exited: stop watching signals

            if held := early_signals.received():
                name = signal.Signals(held[0]).name
                _log.info("%s while starting: not serving", name)
                return
            supervisor: Supervisor = await nursery.start(run)
            _warn_if_tls_is_unused(config, supervisor.addresses)
            print(ready_line(supervisor.addresses), flush=True)
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
    """SIGUSR1 asks for ``stats``; the first SIGINT, SIGTERM or SIGHUP calls ``stop``, the
    second (of any of them) cancels ``nursery`` and returns."""
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
    from trio_sock.workers.worker import Order

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


def _run_server(config: ServerConfig, log_level: str, log_format: str, *, activation: bool) -> int:
    from trio_sock.workers.worker import WorkerRole

    worker: int | None = None
    try:
        if role := WorkerRole.from_environment():  # started by a --workers parent
            worker = role.number
            config, log_level, log_format = role.config, role.log_level, role.log_format
            activation = False
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
        command.config, command.log_level, command.log_format, activation=command.activation
    )


def main_exit() -> NoReturn:
    """Entry point of ``python -m trio_sock`` and the ``trio-sock`` script."""
    sys.exit(main())
