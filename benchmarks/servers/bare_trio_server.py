"""The obvious Trio server, the baseline trio_sock is measured against in benchmarks/perf.py.

``trio.serve_listeners`` over a Unix and a TCP listener, and a handler that is one
``async for`` loop: what anyone would write after reading Trio's tutorial, with no
tuning.  It imports nothing from trio_sock, so that a change there cannot move it.

    python benchmarks/servers/bare_trio_server.py --unix PATH --tcp 127.0.0.1:0 [--echo]

With ``--echo`` every chunk comes back unchanged: the baseline for handlers of
other protocols.

Once both listeners accept, it prints ``bare trio waiting on unix:PATH tcp:HOST:PORT``
(the real port) and serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Final

import trio

#: The protocol: every byte back incremented by one, mod 256, in one C-level pass.
TABLE: Final = bytes((b + 1) % 256 for b in range(256))
#: Trio's own default backlog (the kernel caps it at net.core.somaxconn), as trio_sock's.
BACKLOG: Final = 0xFFFF


async def handle(stream: trio.SocketStream) -> None:
    # serve_listeners lets a handler's exception crash the whole server, so a client
    # that resets ends here, quietly, as it would in any real server.
    with contextlib.suppress(trio.BrokenResourceError):
        async for data in stream:
            await stream.send_all(data.translate(TABLE))


async def handle_echo(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError):
        async for data in stream:
            await stream.send_all(data)


async def serve(unix_path: str, tcp: str, echo: bool) -> None:
    host, _, port = tcp.rpartition(":")
    tcp_listeners = await trio.open_tcp_listeners(int(port), host=host, backlog=BACKLOG)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(unix_path)
    sock.listen(BACKLOG)
    unix_listener = trio.SocketListener(sock)
    bound_port = tcp_listeners[0].socket.getsockname()[1]
    print(f"bare trio waiting on unix:{unix_path} tcp:{host}:{bound_port}", flush=True)
    await trio.serve_listeners(handle_echo if echo else handle, [unix_listener, *tcp_listeners])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unix", required=True, metavar="PATH")
    parser.add_argument("--tcp", required=True, metavar="HOST:PORT")
    parser.add_argument("--echo", action="store_true", help="send every chunk back unchanged")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.unix, args.tcp, args.echo)


if __name__ == "__main__":
    main()
