"""client1: the chapter's first client: connect to a Unix socket, send one byte, print the reply.

What it shows: a stream-socket client in five calls (socket, connect, write,
read, close), as the book's ``client1.c``, including its failure mode.

Try it::

    python examples/client1.py          # no server yet: oops: client1: No such file or directory
    python examples/server1.py &
    python examples/client1.py          # char from server = B
    python examples/client1.py '~'      # char from server = DEL (0x7f, invisible)
    python examples/client1.py A /tmp/elsewhere/sock   # a server started with that path

``python -m trio_sock client --char A`` is the same client on Trio, and works
against every server in this directory.
"""

from __future__ import annotations

import argparse
import socket
import sys


def one_byte_char(text: str) -> str:
    """Accept only what fits the book's ``char``: one character that is one Latin-1 byte."""
    if len(text) != 1 or ord(text) > 0xFF:
        raise argparse.ArgumentTypeError(f"expected one Latin-1 character, got {text!r}")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description="The book's client1 on a Unix socket.")
    parser.add_argument("char", nargs="?", default="A", type=one_byte_char, help="what to send")
    parser.add_argument("path", nargs="?", default="server_socket", help="the server's socket")
    args = parser.parse_args()

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(args.path)
            sock.sendall(args.char.encode("latin-1"))
            reply = sock.recv(1)
        except OSError as exc:
            # The book's perror("oops: client1"): the OS's own words, then exit(1).
            print(f"oops: client1: {exc.strerror or exc}", file=sys.stderr)
            return 1
    if not reply:
        print("oops: client1: the server closed the connection without replying", file=sys.stderr)
        return 1
    print(f"char from server = {reply.decode('latin-1')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
