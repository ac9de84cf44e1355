"""asyncio and uvloop baselines for benchmarks/perf.py: the same code on both loops.

An ``asyncio.Protocol`` served by ``loop.create_server`` and ``create_unix_server``:
each chunk is translated and handed to ``transport.write`` straight from
``data_received``, with the standard flow control (reading pauses while the write
buffer is over its high-water mark).  This is the faster of asyncio's two idiomatic
APIs; the other, ``start_server`` with a read/write/drain loop, was measured too and
was slower at every workload (it adds a StreamReader buffer and a task switch
per chunk).

    python benchmarks/servers/asyncio_server.py --unix PATH --tcp 127.0.0.1:0 [--loop uvloop]

Once both listeners accept, it prints ``asyncio waiting on unix:PATH tcp:HOST:PORT``
(or ``uvloop waiting on ...``) with the real port, and serves until killed.
``--loop uvloop`` needs uvloop (``pip install -e '.[bench]'``); without it the server
exits 3 with one line on stderr, which perf.py reports as a skipped baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys
from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any

#: The protocol: every byte back incremented by one, mod 256, in one C-level pass.
TABLE: Final = bytes((b + 1) % 256 for b in range(256))
#: As the other servers: asyncio's default of 100 would drop SYNs when 15,000 idle
#: clients connect at once; the kernel caps this at net.core.somaxconn.
BACKLOG: Final = 0xFFFF
#: How perf.py tells "uvloop is not installed" from a crash.
EXIT_NO_UVLOOP: Final = 3


class Increment(asyncio.Protocol):
    """One client: reply to each chunk as it arrives, until the client's EOF."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.translate(TABLE))

    def eof_received(self) -> bool:
        return False  # close once the replies are flushed

    # A client that stops reading stops being read: its replies, not this
    # process's memory, are what waits.
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class Echo(Increment):
    """The same, every chunk back unchanged: the baseline for other protocols."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(unix_path: str, tcp: str, name: str, echo: bool = False) -> None:
    protocol = Echo if echo else Increment
    loop = asyncio.get_running_loop()
    host, _, port = tcp.rpartition(":")
    tcp_server = await loop.create_server(protocol, host, int(port), backlog=BACKLOG)
    unix_server = await loop.create_unix_server(protocol, unix_path, backlog=BACKLOG)
    bound_port = tcp_server.sockets[0].getsockname()[1]
    print(f"{name} waiting on unix:{unix_path} tcp:{host}:{bound_port}", flush=True)
    async with tcp_server, unix_server:
        await asyncio.gather(tcp_server.serve_forever(), unix_server.serve_forever())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unix", required=True, metavar="PATH")
    parser.add_argument("--tcp", required=True, metavar="HOST:PORT")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--echo", action="store_true", help="send every chunk back unchanged")
    args = parser.parse_args()
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if args.loop == "uvloop":
        try:
            # Imported by name: uvloop is an optional extra, absent where mypy runs.
            run = importlib.import_module("uvloop").run
        except ImportError:
            print("uvloop not installed: pip install -e '.[bench]'", file=sys.stderr)
            return EXIT_NO_UVLOOP
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.unix, args.tcp, args.loop, args.echo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
