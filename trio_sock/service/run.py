"""``run``: a whole server process, as ``python -m trio_sock server`` runs one.

``serve()`` is a server under your nursery; ``run()`` is the program around it:
socket activation, one server or ``config.workers`` worker processes, the ready
line, systemd readiness, and signals (``signalled``) until the server has stopped.
Logging stays the caller's: the command line configures it from its options.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio

from trio_sock.config.addresses import TcpAddress
from trio_sock.errors import TrioSockError
from trio_sock.server.handlers import check_handler_spec, import_handler
from trio_sock.service.metrics_endpoint import metrics_listeners, serve_metrics
from trio_sock.service.signalled import run_until_signalled

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from trio_sock.config.addresses import Address
    from trio_sock.config.server import ServerConfig
    from trio_sock.server.handlers import Handler
    from trio_sock.server.serve import Server
    from trio_sock.workers.supervisor import Supervisor
    from trio_sock.workers.worker import WorkerRole

_log = logging.getLogger("trio_sock.service")
_stats_log = logging.getLogger("trio_sock.stats")


def run(
    config: ServerConfig,
    handler: Handler | str | None = None,
    *,
    activation: bool = False,
    metrics: TcpAddress | None = None,
    worker_log_level: str = "info",
    worker_log_format: str = "text",
) -> None:
    """Serve ``config`` with ``handler`` until a signal says stop, as the command line does.

    Prints the ready line on stdout once every listener accepts, tells systemd
    (``NOTIFY_SOCKET``) it is ready and keeps its ``STATUS=`` line current,
    logs the stats line on SIGUSR1 and at the end; the first SIGINT, SIGTERM or
    SIGHUP stops gracefully (``config.grace``), a second cancels every client.
    With ``config.workers`` above 1, that many worker processes serve and are
    restarted if they die.

    Args:
        config: What to serve.
        handler: As for ``serve()``, or ``"MODULE:NAME"`` to import one.  Workers
            import the handler for themselves, so with ``workers`` above 1 it must
            be importable by name: a module-level name in a module other than
            ``__main__``, or ``"MODULE:NAME"``.
        activation: Serve the sockets systemd passes (``LISTEN_FDS``), if any,
            instead of ``config.addresses``.
        metrics: Serve the stats line's figures by listener at ``/metrics`` on this
            address, in Prometheus' text format (``service.metrics``); with
            workers, the parent serves their sums.  Needs ``prometheus_client``.
        worker_log_level, worker_log_format: How worker processes log (their
            ``--log-level`` and ``--log-format``); this process's logging is yours.

    Raises:
        ValueError: ``handler`` is an object that workers cannot import by name.
        HandlerError: ``"MODULE:NAME"`` cannot be loaded.
        TrioSockError: ``metrics`` is set, and ``prometheus_client`` is not installed.
        TrioSockError, OSError: the server cannot start (``ListenError`` and so on).
            One error arrives as itself, several in an ``ExceptionGroup``.
    """
    if activation:
        from trio_sock.listen.systemd import listen_fds

        if activated := listen_fds():
            config = attrs.evolve(config, addresses=(), listen_fds=activated)
    _check_inherited(config)
    if metrics is not None:
        _check_metrics_library()
    if config.workers > 1:
        spec = handler if isinstance(handler, str) or handler is None else _name_of(handler)
        if spec is not None:
            import_handler(spec)  # a bad one is one error here, not one per worker
        with _one_error_as_itself():
            trio.run(
                supervise_until_signalled,
                config,
                worker_log_level,
                worker_log_format,
                spec,
                metrics,
            )
    else:
        loaded = import_handler(handler) if isinstance(handler, str) else handler
        with _one_error_as_itself():
            trio.run(serve_until_signalled, config, None, loaded, metrics)


def run_worker(role: WorkerRole) -> None:
    """Serve as the worker ``role`` describes, until its parent or a signal says stop."""
    _check_inherited(role.config)
    handler = None if role.handler is None else import_handler(role.handler)
    with _one_error_as_itself():
        trio.run(serve_until_signalled, role.config, role, handler)


def _check_inherited(config: ServerConfig) -> None:
    """Before Trio opens descriptors of its own: an fd that was not passed in
    must read "not open", not be mistaken for one of Trio's."""
    from trio_sock.listen.inherited import check_inherited

    for inherited in config.listen_fds:
        check_inherited(inherited)


def _check_metrics_library() -> None:
    """Say that ``prometheus_client`` is missing before anything listens."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise TrioSockError(
            "--metrics needs prometheus_client, which is not installed here:"
            " pip install 'trio_sock[metrics]'"
        ) from None


def _name_of(handler: Handler) -> str:
    """``MODULE:NAME`` that imports ``handler`` again, in a worker process."""
    module = getattr(handler, "__module__", None)
    name = getattr(handler, "__qualname__", None)
    spec = f"{module}:{name}"
    try:
        check_handler_spec(spec)  # a lambda's or a nested function's name is no path
        found: object = importlib.import_module(str(module))
        for part in str(name).split("."):
            found = getattr(found, part)
    except (ValueError, ImportError, AttributeError):
        found = None
    if module == "__main__" or found is not handler:
        raise ValueError(
            f"workers import the handler for themselves, and {handler!r} cannot be imported"
            " by name; define it at the top level of a module (not the script being run)"
            " and pass it, or pass 'MODULE:NAME'"
        )
    return spec


@contextlib.contextmanager
def _one_error_as_itself() -> Iterator[None]:
    """An error the nurseries wrapped alone in a group is raised as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        pending: list[BaseException] = [group]
        while pending:
            exc = pending.pop()
            if isinstance(exc, BaseExceptionGroup):
                pending.extend(exc.exceptions)
            else:
                leaves.append(exc)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


async def serve_until_signalled(
    config: ServerConfig,
    role: WorkerRole | None,
    handler: Handler | None,
    metrics: TcpAddress | None = None,
) -> None:
    """One server, its readiness and its signals (and, in a worker, its parent's orders;
    and its ``--metrics``)."""
    from trio_sock.server.serve import serve  # the client never pays for importing the server
    from trio_sock.service.notify import Notifier
    from trio_sock.service.status import StatusReporter

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
            nursery.start_soon(
                obey_parent, lifeline, server, nursery, config.grace, log_stats, role.report_fd
            )
        if scrapers:
            from trio_sock.service.metrics import figures_of  # prometheus_client: if asked

            nursery.start_soon(serve_metrics, scrapers, partial(figures_of, server))
        return lambda: status.notify("STOPPING=1")

    async with metrics_listeners(metrics) as scrapers:
        server = await run_until_signalled(
            start, grace=config.grace, when_ready=when_ready, stats=log_stats
        )
    if server is not None:
        log_stats(server)
        if role is not None and role.report_fd is not None:  # its last figures, for the sums
            from trio_sock.workers.worker import send_report

            send_report(role.report_fd, server)


async def supervise_until_signalled(
    config: ServerConfig,
    log_level: str,
    log_format: str,
    handler: str | None,
    metrics: TcpAddress | None = None,
) -> None:
    """``config.workers`` worker processes, the parent's readiness, signals and
    ``--metrics``."""
    from trio_sock.service.notify import Notifier
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
        if scrapers:
            from trio_sock.service.metrics import figures_of_workers  # as above

            nursery.start_soon(serve_metrics, scrapers, partial(figures_of_workers, supervisor))
        return lambda: notifier.notify("STOPPING=1", f"STATUS=stopping {config.workers} workers")

    async with metrics_listeners(metrics) as scrapers:
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


def log_stats(server: Server) -> None:
    """The stats line, logged as ``trio_sock.stats`` with each figure as a field."""
    stats = server.stats()
    _stats_log.info("stats %s", stats, extra=attrs.asdict(stats))
