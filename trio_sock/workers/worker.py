"""A worker's side of its link to the parent that ``workers`` runs.

Parent and worker talk through two pipes:

- the worker's stdout: it prints its ready line there, which the parent reads;
- the worker's stdin, the *lifeline*: the parent writes one-byte orders
  (``Order``) and never closes it; when the parent dies, even by ``kill -9``,
  the kernel closes it, the worker reads end-of-file and stops gracefully.
  (``PR_SET_PDEATHSIG`` would not do: it fires when the *thread* that forked
  exits, and Trio forks from a worker thread.)

Orders rather than signals, because the workers may get the same signal from
elsewhere at the same moment: Ctrl-C reaches the terminal's whole process
group, and ``systemctl stop`` signals the whole cgroup.  A worker counts
signals as a lone server does (the first stops, the second cancels) and obeys
orders besides; the parent's STOP after a signal is no second signal.

A worker knows it is one by ``TRIO_SOCK_WORKER`` in its environment: its
number and the address of each descriptor, which the socket itself cannot
always tell (a socket file is bound under a temporary name, then renamed).
Addresses travel as JSON objects (``{"unix": PATH}``, ``{"tcp": [HOST, PORT]}``),
not as they print: a path that is not UTF-8 prints escaped, but its lone
surrogates survive JSON (``\\udcff``) exactly.
"""

from __future__ import annotations

import enum
import json
import os
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from trio_sock.config.addresses import Address, TcpAddress, UnixAddress
from trio_sock.errors import WorkerError

if TYPE_CHECKING:
    from trio_sock.config.server import ListenFd

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
    ORPHANED = b""
    """Not sent: the lifeline reached end-of-file, so the parent is gone."""


# Every byte that is an order; any other is skipped, so that the protocol can grow.
_ORDERS: Final = {order.value: order for order in Order if order.value}


@attrs.frozen
class WorkerRole:
    """What a worker learns from its parent: its number and its sockets' addresses."""

    number: int
    """1 to ``workers``, shown as ``worker=N`` in every log line."""
    addresses: dict[int, Address] = attrs.field(factory=dict, eq=False)
    """The address of each inherited descriptor, as the parent bound it."""

    @classmethod
    def from_environment(cls) -> WorkerRole | None:
        """This process's role, if its parent gave one; the variable is then removed.

        Raises:
            WorkerError: the variable is set but is not what a parent writes.
        """
        text = os.environ.pop(WORKER_ENV, None)
        if text is None:
            return None
        try:
            fields = json.loads(text)
            number = int(fields["number"])
            addresses = {int(fd): _address_from(a) for fd, a in fields["addresses"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise WorkerError(
                f"{WORKER_ENV} is set but malformed ({exc}); it is for the workers that"
                " --workers starts: unset it"
            ) from None
        return cls(number, addresses)

    def to_environment(self) -> str:
        """The value of ``TRIO_SOCK_WORKER`` that ``from_environment`` reads back."""
        addresses = {str(fd): _address_to(address) for fd, address in self.addresses.items()}
        # ensure_ascii (the default) writes a lone surrogate as \udcXX: the value
        # is ASCII, fit for any environment, and reads back as the same path.
        return json.dumps({"number": self.number, "addresses": addresses})

    def listen_fds(self, inherited: tuple[ListenFd, ...]) -> tuple[ListenFd, ...]:
        """``inherited`` (from ``--fd``), each with the address the parent bound."""
        return tuple(
            attrs.evolve(fd, address=self.addresses.get(fd.fd, fd.address)) for fd in inherited
        )


def _address_to(address: Address) -> dict[str, Any]:
    if isinstance(address, UnixAddress):
        return {"unix": address.path}
    return {"tcp": [address.host, address.port]}


def _address_from(value: dict[str, Any]) -> Address:
    """An address as ``_address_to`` wrote it.

    Raises:
        ValueError, TypeError, KeyError: ``value`` is not such an address.
    """
    (kind, field), *others = value.items()  # a ValueError if there is not just one
    if others:
        raise ValueError(f"an address with more than one kind: {value!r}")
    if kind == "unix":
        return UnixAddress(field)
    if kind == "tcp":
        host, port = field
        return TcpAddress(host, port)
    raise KeyError(kind)


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
