"""server2: server1 over the network: TCP on 127.0.0.1, port 9734.

What it shows: moving from AF_UNIX to AF_INET changes only the address; the
accept / read / write / close loop is server1's, unchanged.  It is the book's
corrected network server (server3.c): the port goes through htons(), which
Python's ``bind(("127.0.0.1", 9734))`` does for you.  ``client2.py
--explain-htons`` shows what went wrong before the fix.

Try it::

    python examples/server2.py &          # server waiting on tcp:127.0.0.1:9734
    python examples/client2.py            # char from server = B
    ss -ltn 'sport = :9734'               # really port 9734, not 1574
    python examples/server2.py 0          # port 0: the kernel picks a free one
    python examples/server2.py --host 0.0.0.0   # every interface, as the book's INADDR_ANY

It listens on loopback unless asked, like ``python -m trio_sock server --tcp 9734``:
a toy server should not be reachable from other machines by default.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket


def main() -> int:
    parser = argparse.ArgumentParser(description="The book's network server, one client at a time.")
    parser.add_argument("port", nargs="?", default=9734, type=int, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        # This server closes each connection first, which leaves it in TIME_WAIT on
        # port 9734 for a minute; without SO_REUSEADDR a restart would fail with
        # "Address already in use" meanwhile.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((args.host, args.port))  # a host-order int: Python calls htons()
        server.listen(5)
        host, port = server.getsockname()  # the real port when 0 was asked
        try:
            while True:
                print(f"server waiting on tcp:{host}:{port}", flush=True)
                client, _ = server.accept()
                # A client that vanishes before the reply costs only its own connection.
                with client, contextlib.suppress(ConnectionError):
                    data = client.recv(1)
                    if data:
                        client.sendall(bytes([(data[0] + 1) % 256]))
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
