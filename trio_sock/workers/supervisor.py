"""Serve from several processes: a parent that supervises, workers that serve.

The parent opens every listener once (so every socket-file rule of
``listen`` holds, lock file included), then starts ``config.workers``
copies of ``python -m trio_sock server``, each inheriting the listening
sockets and handed the configuration, and restarts one that dies, with a backoff.  With
``reuse_port``, each worker gets a socket of its own on each TCP address
(``SO_REUSEPORT``) and the kernel spreads connections between them; the parent
keeps every copy open, so that connections queued on a dead worker's socket
wait for the worker that replaces it.  Unix sockets and inherited descriptors
are always shared.

A worker is an ordinary server but for what ``worker`` describes: it learns
its number and its configuration from its environment, prints its ready line
into a pipe the parent reads (``process``), and takes the parent's orders from another.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Final

import attrs
import trio

from trio_sock.config.server import ListenFd
from trio_sock.errors import WorkerError
from trio_sock.listen.open_all import open_listeners
from trio_sock.listen.tcp import open_reuse_port_copy
from trio_sock.server.stats import add_up
from trio_sock.tls import server_context
from trio_sock.workers.process import WorkerProcess, ending, fill_closed_stdio, read_ready_line
from trio_sock.workers.worker import WORKER_ENV, Order, WorkerRole

if TYPE_CHECKING:
    from trio_sock.config.addresses import Address
    from trio_sock.config.server import ServerConfig
    from trio_sock.listen.listener import Listener
    from trio_sock.server.stats import ByListener, ServerStats

_log = logging.getLogger("trio_sock.workers")

#: Meant for the parent alone: workers must neither take systemd's sockets for
#: theirs nor tell systemd they are ready before all of them are.
_PARENT_ONLY_ENV: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET")
#: The first restart comes almost at once: one crash costs a fraction of a second...
RESTART_DELAY_MIN: Final = 0.1
#: ...and each quick death doubles the wait, up to this: a worker that cannot
#: start costs a log line and a Python start-up every 10 s, not a busy CPU.
RESTART_DELAY_MAX: Final = 10.0
#: A worker that served this long was not crash-looping: its next death is
#: restarted after the shortest delay again.
STABLE_AFTER: Final = 10.0
#: After a graceful stop, a worker has the grace period plus this long (the
#: interpreter's exit, the final log lines) before it is killed.
EXIT_MARGIN: Final = 5.0
#: After a cancel, a worker should be gone in milliseconds; one still there
#: after this long is stuck, and is killed.
CANCEL_TIMEOUT: Final = 5.0
#: A worker answers a report order in microseconds, unless it is stuck: a scrape
#: waits this long at most, then shows the stuck one's last report.
REPORT_TIMEOUT: Final = 1.0


@attrs.define(eq=False)
class Supervisor:
    """The running workers, as ``nursery.start(supervise, config)`` returns them.

    Cancelling the nursery that runs ``supervise`` cancels every worker's
    clients at once (killing a worker that does not exit); ``stop()`` stops them
    gracefully.
    """

    addresses: tuple[Address, ...]
    """Every bound address, in config order; TCP port 0 replaced by the real one."""
    _config: ServerConfig
    _log_level: str
    _log_format: str
    _handler: str | None
    _listeners: list[Listener]
    _shares: list[list[Listener]]
    _timers: trio.Nursery
    _running: dict[int, WorkerProcess] = attrs.field(factory=dict)
    _stopped: trio.Event = attrs.field(factory=trio.Event)
    _ready: trio.Event = attrs.field(factory=trio.Event)
    _started: int = 0
    _retired: ByListener = attrs.field(factory=dict)
    """The last figures of every worker process that exited (``active`` 0): what it
    did stays in the sums, which never go down."""

    @property
    def pids(self) -> tuple[int, ...]:
        """The process ids of the workers running now, by worker number."""
        return tuple(self._running[n].process.pid for n in sorted(self._running))

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._stopped.is_set()

    def stop(self) -> None:
        """Stop accepting and remove socket files now; let every worker's clients
        finish within the grace.

        ``supervise`` returns once every worker has exited; one still running
        ``EXIT_MARGIN`` seconds after the grace is killed.  Calling it again does
        nothing; to stop at once, cancel ``supervise``'s nursery.
        """
        if self.stopping:
            return
        self._stopped.set()
        for listener in self._listeners:
            listener.close()
        for worker in self._running.values():
            worker.order(Order.STOP)
        self._timers.start_soon(self._kill_stragglers, self._config.grace + EXIT_MARGIN)

    def request_stats(self) -> None:
        """Ask every worker to log its stats line."""
        for worker in self._running.values():
            worker.order(Order.STATS)

    async def gather_stats(self) -> tuple[dict[str, ServerStats], dict[int, ByListener]]:
        """Every worker's figures by listener, asked for now, and their sums.

        Returns:
            By listener, what every worker process since the start has done (the ones
            that exited as of their last report); and by worker number, what the
            worker running now has done.  A worker that does not answer within
            ``REPORT_TIMEOUT`` is counted as of its last report.
        """
        asked = [(worker, worker.ask_report()) for worker in self._running.values()]
        with trio.move_on_after(REPORT_TIMEOUT):
            for worker, number in asked:
                await worker.wait_for_report(number)
        # Who runs now, not who was asked: one that exited meanwhile is in _retired.
        running = self._running.values()
        workers = {worker.number: worker.latest for worker in running if worker.received}
        return add_up([self._retired, *workers.values()]), workers

    async def _kill_stragglers(self, delay: float) -> None:
        await trio.sleep(delay)
        for worker in self._running.values():
            _log.warning(
                "worker %d (pid %d) still runs %.0fs after the stop; killing it",
                worker.number,
                worker.process.pid,
                delay,
            )
            worker.process.kill()

    async def _keep_running(self, number: int) -> None:
        """Run worker ``number`` until the stop, starting it again each time it dies.

        Raises:
            WorkerError: the first worker of this number died before it was ready.
        """
        delay = RESTART_DELAY_MIN
        first = True
        while True:
            started = trio.current_time()
            try:
                ending, ready = await self._run_once(number, first)
            except OSError as exc:  # out of processes or descriptors, perhaps for a moment
                if first:
                    raise WorkerError(f"cannot start worker {number}: {exc.strerror}") from exc
                ending, ready = f"could not be started ({exc.strerror})", False
            if self.stopping:
                return
            if first and not ready:
                raise WorkerError(
                    f"worker {number} {ending} before it was ready (see its error above, if any)"
                )
            first = False
            if trio.current_time() - started >= STABLE_AFTER:
                delay = RESTART_DELAY_MIN
            _log.warning("worker %d %s; restarting it in %.1fs", number, ending, delay)
            with trio.move_on_after(delay):
                await self._stopped.wait()
            if self.stopping:
                return
            delay = min(delay * 2, RESTART_DELAY_MAX)

    async def _run_once(self, number: int, first: bool) -> tuple[str, bool]:
        """Start worker ``number`` and watch it until it exits.

        Returns:
            How it ended, for the log, and whether it was ready first.
        """
        worker = await self._spawn(number)
        pid = worker.process.pid
        try:
            ready = await read_ready_line(worker.process)
            if ready and first:
                _log.info("worker %d ready (pid %d)", number, pid)
                self._started += 1
                if self._started == len(self._shares):
                    self._ready.set()
            elif ready:
                _log.info("worker %d restarted (pid %d)", number, pid)
            status = await worker.process.wait()
        finally:
            await self._reap(worker)
        return f"(pid {pid}) {ending(status)}", ready

    async def _spawn(self, number: int) -> WorkerProcess:
        """Start worker ``number`` on its share of the listeners."""
        share = self._shares[number - 1]
        inherited = [ListenFd(lst.socket.fileno(), address=lst.address) for lst in share]
        config = attrs.evolve(
            self._config, addresses=(), listen_fds=inherited, workers=1, reuse_port=False
        )
        fds = [fd.fd for fd in inherited]
        argv = [sys.executable, "-m", "trio_sock", "server"]  # all else is in the role
        theirs, ours = os.pipe()
        reports, reporter = os.pipe()
        role = WorkerRole(
            number, config, self._log_level, self._log_format, self._handler, reporter
        )
        env = {k: v for k, v in os.environ.items() if k not in _PARENT_ONLY_ENV}
        env[WORKER_ENV] = role.to_environment()
        try:
            os.set_blocking(ours, False)
            process = await trio.lowlevel.open_process(
                argv,
                stdin=theirs,
                stdout=subprocess.PIPE,
                pass_fds=[*fds, reporter],
                env=env,
            )
        except BaseException:
            os.close(ours)
            os.close(reports)
            raise
        finally:
            os.close(theirs)
            os.close(reporter)  # the worker's alone: its exit is the pipe's end
        worker = WorkerProcess(number, process, ours, trio.lowlevel.FdStream(reports))
        self._timers.start_soon(worker.read_reports)
        self._running[number] = worker
        if self.stopping:  # stopped while it was starting: it reads this once ready
            worker.order(Order.STOP)
        return worker

    async def _reap(self, worker: WorkerProcess) -> None:
        """Make sure ``worker`` is gone, whatever ended its watch, then forget it."""
        with trio.CancelScope(shield=True):
            if worker.process.returncode is None:  # we are being cancelled
                worker.order(Order.CANCEL)
                with trio.move_on_after(CANCEL_TIMEOUT):
                    await worker.process.wait()
                if worker.process.returncode is None:
                    _log.warning(
                        "worker %d (pid %d) ignored the cancel; killing it",
                        worker.number,
                        worker.process.pid,
                    )
                    worker.process.kill()
                    await worker.process.wait()
            if worker.process.stdout is not None:
                await worker.process.stdout.aclose()
            with trio.move_on_after(REPORT_TIMEOUT):  # its last report, sent as it exited
                await worker.ended.wait()
            await worker.reports.aclose()
        idle = {listener: attrs.evolve(s, active=0) for listener, s in worker.latest.items()}
        self._retired = add_up([self._retired, idle])
        os.close(worker.lifeline)
        del self._running[worker.number]


async def supervise(
    config: ServerConfig,
    *,
    log_level: str = "info",
    log_format: str = "text",
    handler: str | None = None,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open every listener of ``config``, then serve it from ``config.workers`` processes.

    Use it as ``supervisor = await nursery.start(supervise, config)``: ``start``
    returns once every worker is ready.  Each worker is ``python -m trio_sock
    server`` handed ``config`` in its role (``WorkerRole``), to serve its share of
    the sockets; its log lines go to this process's stderr, marked with its number.

    Args:
        config: What to listen on and how to serve; ``workers`` says how many.
        log_level: The workers' ``--log-level``.
        log_format: The workers' ``--log-format``.
        handler: The workers' ``--handler MODULE:NAME``, which each imports.
        task_status: Given by ``nursery.start``; receives the ``Supervisor``.

    Returns:
        After ``Supervisor.stop()``, once every worker has exited.

    Raises:
        ListenError: an address could not be bound; nothing is left open.
        WorkerError: a worker died before it was first ready; the others are
            cancelled first.

    Error handling:
        Cancellation from outside cancels every worker's clients at once and
        waits for the workers to exit (killing one that does not); every exit
        path closes the listeners and removes the socket files that are still ours.
    """
    fill_closed_stdio()
    if config.tls_cert is not None and config.tls_key is not None:
        server_context(config.tls_cert, config.tls_key)  # a bad file fails once, here
    listeners = await open_listeners(config)
    owned = list(listeners)
    try:
        shares = [listeners]
        for _ in range(1, config.workers):
            share = []
            for listener in listeners:
                if not listener.reuse_port:
                    share.append(listener)
                    continue
                mine = open_reuse_port_copy(listener, backlog=config.backlog)
                owned.append(mine)  # before anything else can fail: closed on every path
                share.append(mine)
            shares.append(share)
        async with trio.open_nursery() as timers:
            supervisor = Supervisor(
                tuple(listener.address for listener in listeners),
                config,
                log_level,
                log_format,
                handler,
                owned,
                shares,
                timers,
            )
            async with trio.open_nursery() as workers:
                for number in range(1, config.workers + 1):
                    workers.start_soon(supervisor._keep_running, number)
                await supervisor._ready.wait()
                task_status.started(supervisor)
            timers.cancel_scope.cancel()
    finally:
        for listener in owned:
            listener.close()
