"""The ``client`` command's options, and the ``ClientConfig`` they make."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio_sock.cli.values import (
    one_char,
    positive_seconds,
    seconds,
    server_tcp_address,
    unix_address,
)
from trio_sock.config import defaults
from trio_sock.config.addresses import UnixAddress
from trio_sock.config.client import ClientConfig

if TYPE_CHECKING:
    import argparse


def add_client_options(client: argparse.ArgumentParser) -> None:
    where = client.add_mutually_exclusive_group()
    where.add_argument(
        "--unix",
        type=unix_address,
        metavar="PATH",
        help=f"the server's Unix socket, or @NAME (default: {defaults.DEFAULT_UNIX_PATH})",
    )
    where.add_argument(
        "--tcp",
        type=server_tcp_address,
        metavar="[HOST:]PORT",
        help=f"the server's TCP address; the host defaults to {defaults.DEFAULT_TCP_HOST}"
        " (default: --unix)",
    )
    client.add_argument(
        "--char",
        type=one_char,
        default="A",
        metavar="C",
        help="the character to send: one character that is one byte (Latin-1)",
    )
    client.add_argument(
        "--timeout",
        type=positive_seconds,
        default=defaults.DEFAULT_CLIENT_TIMEOUT,
        metavar="SECONDS",
        help="give up if connecting and the reply take longer (each attempt)",
    )
    client.add_argument(
        "--wait",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="keep retrying, with backoff, while the server is not there yet",
    )
    client.add_argument(
        "--tls",
        action="store_true",
        help="speak TLS to a --tcp server, checking its certificate (default: plain)",
    )
    client.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="PEM file of the CAs to trust; implies --tls (default: the system's)",
    )
    client.add_argument(
        "--trace",
        action="store_true",
        help="show each socket call on stderr as it is made: socket, connect, write, read,"
        " close, with their descriptors and results (default: off)",
    )


def client_config(args: argparse.Namespace) -> ClientConfig:
    return ClientConfig(
        address=args.tcp or args.unix or UnixAddress(defaults.DEFAULT_UNIX_PATH),
        char=args.char,
        timeout=args.timeout,
        wait=args.wait,
        tls=args.tls or args.tls_ca is not None,  # a CA to trust only makes sense with TLS
        tls_ca=args.tls_ca,
        trace=args.trace,
    )
