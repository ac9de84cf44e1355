"""trio_server: the chapter's server the Trio way, with the trio_sock library.

What it shows: server5's single process, without its catch.  ``trio_sock.serve``
runs each client as a task in a nursery, so a slow or silent client waits on its
own and never on the others; nothing is forked, and nothing blocks.  It listens
on the book's Unix socket and TCP port at the same time, and the nursery that
runs it is what stops it: Ctrl-C (or ``kill``) here stops accepting at once,
gives active clients a grace period, and removes the socket file.

Try it::

    python examples/trio_server.py &            # server waiting on unix:server_socket tcp:...
    python examples/trio_client.py              # char from server = B
    python examples/client1.py Z                # the book's clients work unchanged
    python examples/client2.py
    python examples/trio_server.py sock 0       # another path, and a free port

``python -m trio_sock server`` is this program with every option.
"""

from __future__ import annotations

import argparse
import signal
import sys

import trio

import trio_sock


async def serve_until_signalled(config: trio_sock.ServerConfig) -> None:
    """Serve until SIGINT or SIGTERM; the server's addresses go to stdout when ready."""
    # Trio's own Ctrl-C handling would raise KeyboardInterrupt wherever the code is;
    # receiving the signals instead turns them into an ordinary, graceful stop.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            # start() returns once every listener is bound: only then is "waiting" true.
            server = await nursery.start(trio_sock.serve, config)
            print("server waiting on", *server.addresses, flush=True)
            async for _ in signals:
                # Graceful: clients get config.grace seconds.  To stop at once,
                # cancel the nursery instead: nursery.cancel_scope.cancel().
                server.stop()
                break


def main() -> int:
    parser = argparse.ArgumentParser(description="The increment server on Trio.")
    parser.add_argument("path", nargs="?", default="server_socket", help="the socket file")
    parser.add_argument("port", nargs="?", default=9734, type=int, help="TCP port; 0: a free one")
    args = parser.parse_args()
    config = trio_sock.ServerConfig(
        addresses=[trio_sock.UnixAddress(args.path), trio_sock.TcpAddress("127.0.0.1", args.port)]
    )
    failed = False
    try:
        trio.run(serve_until_signalled, config)
    except* trio_sock.TrioSockError as group:  # the nursery wraps errors in a group
        for error in group.exceptions:
            print(f"oops: trio_server: {error}", file=sys.stderr)
        failed = True
    except* KeyboardInterrupt:  # Ctrl-C before the signal receiver was open
        pass
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
