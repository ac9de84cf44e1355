"""server4: serving several clients at once by forking a child process per client.

What it shows: the book's "serving multiple clients" server.  The parent only
accepts; each connection goes to a fresh child that reads, replies and exits.
``SIGCHLD`` set to ``SIG_IGN`` tells the kernel nobody will wait for the
children, so finished ones do not linger as zombies (the alternative is a
SIGCHLD handler looping on ``os.waitpid(-1, os.WNOHANG)``).

Try it (``--delay 5`` is the book's ``sleep(5)`` in the child)::

    python examples/server4.py --delay 5 &
    time (for c in A B C; do python examples/client1.py $c & done; wait)
    # about 5 s, not 15: the three children work at the same time.
    # server1 with the same delay would take 15 s.

The cost is a process per client.  server5 serves everyone from one process;
trio_server gives each client a cheap task instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import time


def serve_one(client: socket.socket, delay: float) -> None:
    """The child's whole job: one byte in, its successor out."""
    data = client.recv(1)
    if data:
        time.sleep(delay)
        client.sendall(bytes([(data[0] + 1) % 256]))


def main() -> int:
    parser = argparse.ArgumentParser(description="The book's fork-per-client server.")
    parser.add_argument("path", nargs="?", default="server_socket", help="the socket file")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of work per reply")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(args.path)
        server.listen(5)
        try:
            while True:
                print(f"server waiting on unix:{args.path}", flush=True)
                client, _ = server.accept()
                if os.fork() == 0:
                    # os._exit, never return: the child must not run the parent's
                    # `finally` below, which would remove the server's socket file.
                    try:
                        server.close()
                        serve_one(client, args.delay)
                    finally:
                        os._exit(0)
                client.close()  # the child has its own copy; this one would keep it open
        except KeyboardInterrupt:
            return 0
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.path)


if __name__ == "__main__":
    raise SystemExit(main())
