"""server5: many clients at once from a single process, with select() (here: ``selectors``).

What it shows: the book's server5.  One loop asks the kernel which sockets are
ready: a readable listener means a client is waiting to be accepted, a readable
client means bytes (or its EOF) arrived.  Like the book's version, a client stays
connected and gets a reply for every byte it sends until it closes its end.

Try it::

    python examples/server5.py --delay 1 &
    for c in A B C; do python examples/client1.py $c & done; wait
    nc -U server_socket          # type HAL, get IBM; other clients still get through

``selectors`` picks epoll on Linux where the book used select(); the idea is the
same and it has no FD_SETSIZE limit.  The price of one thread: ``--delay`` (the
book's ``sleep(5)``) and a client that never reads its replies (``sendall``
blocks) stall every client.  trio_server keeps this single-process design but
gives each client its own task, so neither can happen there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import time

# Plenty for a person typing; a larger read only means fewer trips round the loop.
RECEIVE_SIZE = 4096


def reply(client: socket.socket, delay: float) -> bool:
    """Answer what ``client`` sent; False once it has gone (EOF, reset, broken pipe)."""
    try:
        data = client.recv(RECEIVE_SIZE)
        if data:
            time.sleep(delay)
            print(f"serving client on fd {client.fileno()}", flush=True)
            client.sendall(bytes((byte + 1) % 256 for byte in data))
    except ConnectionError:
        # The C version would die of SIGPIPE writing to a vanished client; Python
        # raises instead, and only this client is lost.
        return False
    return bool(data)


def main() -> int:
    parser = argparse.ArgumentParser(description="The book's select() server.")
    parser.add_argument("path", nargs="?", default="server_socket", help="the socket file")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of work per reply")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.path)
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server,
        selectors.DefaultSelector() as selector,
    ):
        server.bind(args.path)
        server.listen(5)
        selector.register(server, selectors.EVENT_READ)
        print(f"server waiting on unix:{args.path}", flush=True)
        try:
            while True:
                for key, _ in selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is server:
                        client, _ = server.accept()
                        selector.register(client, selectors.EVENT_READ)
                        print(f"adding client on fd {client.fileno()}", flush=True)
                        continue
                    if not reply(sock, args.delay):
                        print(f"removing client on fd {sock.fileno()}", flush=True)
                        selector.unregister(sock)
                        sock.close()
        except KeyboardInterrupt:
            return 0
        finally:
            for key in list(selector.get_map().values()):
                if key.fileobj is not server:
                    assert isinstance(key.fileobj, socket.socket)
                    key.fileobj.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.path)


if __name__ == "__main__":
    raise SystemExit(main())
