"""client2: client1 over the network, and the byte-order bug of the book's first try.

What it shows: the same five calls as client1 with an AF_INET address, and why
the port needs ``htons``.  The book's first network client and server (client2.c,
server2.c) stored the port as ``address.sin_port = 9734``.  ``sin_port`` is read
by the kernel in network byte order (big-endian), but a little-endian CPU (x86,
most ARM) stores 9734 = 0x2606 as the bytes 06 26, which the kernel reads as
0x0626 = 1574.  Both programs made the same mistake, so they met on port 1574,
and ``netstat`` showed it; a correct client on 9734 got "Connection refused".
client3.c and server3.c fixed it with ``htons(9734)``.

In Python that bug cannot happen: ``connect(("127.0.0.1", 9734))`` takes the port
as a plain number and converts it itself.  ``socket.htons`` exists for code that
packs addresses by hand, as ``unconverted_port`` below shows.

Try it::

    python examples/client2.py --explain-htons   # no server needed
    python examples/server2.py &
    python examples/client2.py Z                  # char from server = [
    python examples/client2.py A 1574             # oops: client2: Connection refused
"""

from __future__ import annotations

import argparse
import socket
import sys


def unconverted_port(port: int) -> int:
    """The port the kernel sees when ``port`` goes into ``sin_port`` without ``htons``.

    On a little-endian machine ``unconverted_port(9734) == 1574``; on a big-endian
    one host order already is network order, so the bug stayed hidden there.
    """
    in_memory = port.to_bytes(2, sys.byteorder)  # how the C short sits in sin_port
    return int.from_bytes(in_memory, "big")  # how the kernel reads it


def explain_htons(port: int) -> str:
    """The explanation ``--explain-htons`` prints, computed on this machine."""
    in_memory = port.to_bytes(2, sys.byteorder)
    wrong = unconverted_port(port)
    return "\n".join(
        [
            f"port {port} is 0x{port:04x}; this machine is {sys.byteorder}-endian.",
            f"Stored unconverted in sin_port, its bytes are {in_memory.hex(' ')},",
            f"which the kernel reads in network order (big-endian) as port {wrong}.",
            f"The fix, htons({port}), gives {socket.htons(port)}: the number whose bytes in memory"
            f" are {port.to_bytes(2, 'big').hex(' ')}, {port} in network order.",
            "Python's socket calls take the port as a number and convert it for you,",
            "so client2 and server2 really use the port you give them.",
        ]
    )


def one_byte_char(text: str) -> str:
    """Accept only what fits the book's ``char``: one character that is one Latin-1 byte."""
    if len(text) != 1 or ord(text) > 0xFF:
        raise argparse.ArgumentTypeError(f"expected one Latin-1 character, got {text!r}")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description="The book's network client.")
    parser.add_argument("char", nargs="?", default="A", type=one_byte_char, help="what to send")
    parser.add_argument("port", nargs="?", default=9734, type=int, help="the server's port")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address")
    parser.add_argument(
        "--explain-htons", action="store_true", help="explain the book's port-1574 bug and exit"
    )
    args = parser.parse_args()
    if args.explain_htons:
        print(explain_htons(args.port))
        return 0

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.connect((args.host, args.port))
            sock.sendall(args.char.encode("latin-1"))
            reply = sock.recv(1)
        except OSError as exc:
            print(f"oops: client2: {exc.strerror or exc}", file=sys.stderr)
            return 1
    if not reply:
        print("oops: client2: the server closed the connection without replying", file=sys.stderr)
        return 1
    print(f"char from server = {reply.decode('latin-1')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
