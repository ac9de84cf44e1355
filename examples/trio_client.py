"""trio_client: the chapter's client the Trio way: one call to ``trio_sock.send_char``.

What it shows: the client as an async function.  Connecting, sending, waiting
for the reply (with a timeout) and explaining failures all happen in the
library, which turns every OS error into a ``trio_sock.TrioSockError`` whose
message names the address and says how to start a server.

Try it::

    python examples/trio_client.py                        # no server: oops: client: ...
    python examples/trio_server.py &
    python examples/trio_client.py Z                      # char from server = [
    python examples/trio_client.py A tcp:9734             # over TCP
    python examples/trio_client.py A unix:/tmp/x/sock     # any address a ready line prints

It works against every server in this directory.  ``python -m trio_sock client``
is this program with every option.
"""

from __future__ import annotations

import argparse
import sys

import trio

import trio_sock


def address(text: str) -> trio_sock.Address:
    """``parse_address``, with its explanation kept in argparse's usage error."""
    try:
        return trio_sock.parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main() -> int:
    parser = argparse.ArgumentParser(description="The increment client on Trio.")
    parser.add_argument("char", nargs="?", default="A", help="one Latin-1 character to send")
    parser.add_argument(
        "address",
        nargs="?",
        default="unix:server_socket",
        type=address,
        help="unix:PATH, tcp:[HOST:]PORT, or a path containing '/'",
    )
    args = parser.parse_args()
    try:
        # ClientConfig checks the character itself, so a bad one is a usage error.
        config = trio_sock.ClientConfig(address=args.address, char=args.char)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        reply = trio.run(trio_sock.send_char, config)
    except trio_sock.TrioSockError as exc:
        print(f"oops: client: {exc}", file=sys.stderr)
        return 1
    print(f"char from server = {reply}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
