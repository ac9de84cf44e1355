"""A worker's side of its link to the parent that ``supervisor`` runs.

Parent and worker talk through three pipes:

- the worker's stdout: it prints its ready line there, which the parent reads;
- the worker's stdin, the *lifeline*: the parent writes one-byte orders
  (``Order``) and never closes it; when the parent dies, even by ``kill -9``,
  the kernel closes it, the worker reads end-of-file and stops gracefully.
  (``PR_SET_PDEATHSIG`` would not do: it fires when the *thread* that forked
  exits, and Trio forks from a worker thread.)
- the *report pipe* (``WorkerRole.report_fd``): at each ``Order.REPORT``, and
  once more as it exits, the worker writes its figures by listener there, one
  JSON line (``report_line``), which the parent adds up for ``--metrics``.

Orders rather than signals, because the workers may get the same signal from
elsewhere at the same moment: Ctrl-C reaches the terminal's whole process
group, and ``systemctl stop`` signals the whole cgroup.  A worker counts
signals as a lone server does (the first stops, the second cancels) and obeys
orders besides; the parent's STOP after a signal is no second signal.

A worker knows it is one by ``TRIO_SOCK_WORKER`` in its environment: its
number, its logging, and the whole ``ServerConfig`` as JSON
(``ServerConfig.to_json``), whose ``listen_fds`` carry the address of each
descriptor, which the socket itself cannot always tell (a socket file is bound
under a temporary name, then renamed).
"""

from __future__ import annotations

import enum
import json
import logging
import os
from typing import TYPE_CHECKING, Final

import attrs
import trio

from trio_sock.errors import WorkerError

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio_sock.config.server import ServerConfig
    from trio_sock.server.serve import Server
    from trio_sock.server.stats import ServerStats

_log = logging.getLogger("trio_sock.workers")

#: Where the parent tells a worker who it is (see the module docstring).
WORKER_ENV: Final = "TRIO_SOCK_WORKER"


class Order(enum.Enum):
    """What the parent asks of a worker, one byte on its lifeline."""

    STOP = b"s"
    """Stop accepting; let clients finish within the grace (as a first signal)."""
    CANCEL = b"c"
    """Cancel every client now (as a second signal)."""
    STATS = b"u"
    """Log the stats line (as SIGUSR1)."""
    REPORT = b"r"
    """Write the figures by listener on the report pipe (``--metrics``)."""
    ORPHANED = b""
    """Not sent: the lifeline reached end-of-file, so the parent is gone."""


# Every byte that is an order; any other is skipped, so that the protocol can grow.
_ORDERS: Final = {order.value: order for order in Order if order.value}


@attrs.frozen
class WorkerRole:
    """What a worker learns from its parent: its number, and how to serve."""

    number: int
    """1 to ``workers``, shown as ``worker=N`` in every log line."""
    config: ServerConfig
    """The parent's configuration, to serve the sockets in its ``listen_fds`` (each
    with the address the parent bound), as one process."""
    log_level: str = "info"
    """The parent's ``--log-level``."""
    log_format: str = "text"
    """The parent's ``--log-format``."""
    handler: str | None = None
    """The parent's ``--handler MODULE:NAME``, which the worker imports for itself."""
    report_fd: int | None = None
    """The write end of the report pipe, inherited; ``None``: nobody asks for reports."""

    @classmethod
    def from_environment(cls) -> WorkerRole | None:
        """This process's role, if its parent gave one; the variable is then removed.

        Raises:
            WorkerError: the variable is set but is not what a parent writes.
        """
        text = os.environ.pop(WORKER_ENV, None)
        if text is None:
            return None
        from trio_sock.config.server import ServerConfig  # only a worker needs it here

        try:
            fields = json.loads(text)
            return cls(
                int(fields["number"]),
                ServerConfig.from_json(fields["config"]),
                str(fields["log_level"]),
                str(fields["log_format"]),
                fields["handler"] if fields["handler"] is None else str(fields["handler"]),
                fields["report_fd"] if fields["report_fd"] is None else int(fields["report_fd"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise WorkerError(
                f"{WORKER_ENV} is set but malformed ({exc}); it is for the workers that"
                " --workers starts: unset it"
            ) from None

    def to_environment(self) -> str:
        """The value of ``TRIO_SOCK_WORKER`` that ``from_environment`` reads back."""
        return json.dumps(
            {
                "number": self.number,
                "config": self.config.to_json(),
                "log_level": self.log_level,
                "log_format": self.log_format,
                "handler": self.handler,
                "report_fd": self.report_fd,
            }
        )


@attrs.define(eq=False)
class Lifeline:
    """The worker's end of the lifeline: reads the parent's orders from stdin.

    Error handling:
        Anything but an order byte is skipped; end-of-file (or a read error,
        which can only mean the same) is ``Order.ORPHANED``, every time after.
    """

    _stream: trio.lowlevel.FdStream
    _pending: bytes = b""

    @classmethod
    def open(cls, fd: int = 0) -> Lifeline:
        """Read orders from ``fd``, through a duplicate: closing the lifeline leaves ``fd`` open."""
        return cls(trio.lowlevel.FdStream(os.dup(fd)))

    async def next_order(self) -> Order:
        """Wait for the next order."""
        while True:
            while self._pending:
                byte, self._pending = self._pending[:1], self._pending[1:]
                if byte in _ORDERS:
                    return _ORDERS[byte]
            try:
                self._pending = await self._stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._pending = b""
            if not self._pending:
                return Order.ORPHANED

    async def aclose(self) -> None:
        """Close the duplicate descriptor."""
        await self._stream.aclose()


def report_line(server: Server) -> bytes:
    """The worker's figures by listener, as one line of the report pipe."""
    figures = {str(address): attrs.asdict(s) for address, s in server.stats_by_listener().items()}
    return json.dumps(figures).encode() + b"\n"


def read_report_line(line: bytes) -> dict[str, ServerStats]:
    """The figures in a line that ``report_line`` wrote.

    Raises:
        ValueError, TypeError: ``line`` is not such a line (a torn write, say).
    """
    from trio_sock.server.stats import ServerStats

    fields = json.loads(line)
    if not isinstance(fields, dict):
        raise TypeError(f"expected a JSON object, not {line!r}")
    return {str(listener): ServerStats(**stats) for listener, stats in fields.items()}


def send_report(fd: int, server: Server) -> None:
    """Write ``server``'s figures on the report pipe ``fd``, without ever blocking: a
    parent that is gone, or not reading, misses them."""
    try:
        os.set_blocking(fd, False)
        os.write(fd, report_line(server))
    except OSError as exc:
        _log.debug("a report to the parent was lost: %s", exc.strerror)


async def obey_parent(
    lifeline: Lifeline,
    server: Server,
    nursery: trio.Nursery,
    grace: float,
    stats: Callable[[Server], None],
    report_fd: int | None = None,
) -> None:
    """A worker's orders from its parent: as signals would say, but a STOP after a
    signal (both sent for one Ctrl-C or ``systemctl stop``) is not a second signal."""
    try:
        while True:
            order = await lifeline.next_order()
            if order is Order.STATS:
                stats(server)
            elif order is Order.REPORT:
                if report_fd is not None:
                    send_report(report_fd, server)
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
