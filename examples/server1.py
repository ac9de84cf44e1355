"""server1: the chapter's first server, a blocking AF_UNIX socket serving one client at a time.

What it shows: the whole life of a listening socket (unlink, socket, bind, listen,
accept, read, write, close), exactly as the book's ``server1.c``, with Python's
``socket`` module.

Try it::

    python examples/server1.py &        # creates server_socket here
    python examples/client1.py          # char from server = B
    python examples/client1.py Z        # char from server = [
    nc -U server_socket                 # type nothing: every other client now waits

That last line is the point of the next programs: one silent client stalls this
server for everyone (server4 forks, server5 selects, trio_server runs a task per
client, and ``python -m trio_sock server`` also drops idle clients).  ``--delay``
makes it plain, as the book's ``sleep(5)`` does in server4::

    python examples/server1.py --delay 5 &
    time (for c in A B C; do python examples/client1.py $c & done; wait)
    # about 15 s: one client at a time, 5 s each (server4 takes 5 s).

Stop it with Ctrl-C or ``kill``; it removes its socket file.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import socket
import time


def seconds(text: str) -> float:
    """A ``--delay``: a finite number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected seconds, 0 or more, got {text!r}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description="The book's server1 on a Unix socket.")
    parser.add_argument("path", nargs="?", default="server_socket", help="the socket file")
    parser.add_argument(
        "--delay", type=seconds, default=0.0, help="seconds of work before each reply"
    )
    args = parser.parse_args()
    path, delay = args.path, args.delay
    # Python turns SIGINT into KeyboardInterrupt; make `kill` end the server the same quiet way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    # As the book: remove whatever an earlier run left, or bind() fails with EADDRINUSE.
    # (It would remove a live server's socket too; trio_sock probes it first.)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(5)
        try:
            while True:
                # The address in the line lets a script (or the tests) find the server.
                print(f"server waiting on unix:{path}", flush=True)
                client, _ = server.accept()
                # A client that vanishes before the reply costs only its own connection.
                with client, contextlib.suppress(ConnectionError):
                    data = client.recv(1)
                    if data:  # the book assumes a byte; a client may close without one
                        time.sleep(delay)  # the simulated work: every other client waits
                        client.sendall(bytes([(data[0] + 1) % 256]))  # C's ch++ wraps too
        except KeyboardInterrupt:
            return 0
        finally:
            # The book leaves the file behind; removing it means a late client gets
            # "No such file or directory", which says plainly that no server is up.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


if __name__ == "__main__":
    raise SystemExit(main())
