"""The ``server`` command's options, and the ``ServerConfig`` they make."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio_sock.cli.values import (
    backlog,
    descriptor,
    finite_seconds,
    group_id,
    handler_spec,
    metrics_address,
    octal_mode,
    positive_int,
    positive_seconds,
    seconds,
    tcp_address,
    unix_address,
    user_id,
    workers,
)
from trio_sock.config import defaults
from trio_sock.config.addresses import TcpAddress

if TYPE_CHECKING:
    import argparse

    from trio_sock.config.addresses import Address
    from trio_sock.config.server import ServerConfig


def add_server_options(server: argparse.ArgumentParser) -> None:
    server.add_argument(
        "--unix",
        action="append",
        type=unix_address,
        metavar="PATH",
        default=None,
        help="listen on a Unix socket file, or @NAME in the abstract namespace; repeatable"
        f" (default, with no --unix, --tcp or --fd and no sockets from systemd:"
        f" {defaults.DEFAULT_UNIX_PATH} and"
        f" {defaults.DEFAULT_TCP_HOST}:{defaults.DEFAULT_TCP_PORT})",
    )
    server.add_argument(
        "--tcp",
        action="append",
        type=tcp_address,
        metavar="[HOST:]PORT",
        default=None,
        help=f"listen on TCP; the host defaults to {defaults.DEFAULT_TCP_HOST}, [::1]:PORT for"
        " IPv6, 0.0.0.0:PORT for every interface, port 0 for a free one; repeatable"
        " (default: see --unix)",
    )
    server.add_argument(
        "--once",
        action="store_true",
        help="read one byte per connection, reply, close (default: reply until EOF)",
    )
    server.add_argument(
        "--max-clients",
        type=positive_int,
        default=defaults.DEFAULT_MAX_CLIENTS,
        metavar="N",
        help="clients served at once, by each worker; others wait in the listen queue"
        " (1: one at a time)",
    )
    server.add_argument(
        "--delay",
        type=finite_seconds,
        default=0.0,
        metavar="SECONDS",
        help="simulated work before each reply",
    )
    server.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=defaults.DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="drop a client that neither sends nor reads for this long",
    )
    server.add_argument(
        "--grace",
        type=seconds,
        default=defaults.DEFAULT_GRACE,
        metavar="SECONDS",
        help="on SIGINT, SIGTERM or SIGHUP, how long active clients may finish",
    )
    server.add_argument(
        "--backlog",
        type=backlog,
        default=None,
        metavar="N",
        help="listen queue length (default: the most the kernel allows, as Trio)",
    )
    server.add_argument(
        "--socket-mode",
        type=octal_mode,
        default=defaults.DEFAULT_SOCKET_MODE,
        metavar="OCTAL",
        help="permissions of the Unix socket file (default: 600)",
    )
    server.add_argument(
        "--workers",
        type=workers,
        default=1,
        metavar="N",
        help="serve from N processes: the parent opens every listener, starts N workers"
        " that share them, restarts one that dies, and stops them all on one signal"
        " (1: this process serves, no parent)",
    )
    server.add_argument(
        "--reuse-port",
        action="store_true",
        help="open TCP listeners with SO_REUSEPORT: with --workers, each worker gets a"
        " socket of its own on each --tcp address and the kernel spreads connections evenly"
        " between them; with one process, other processes of this user that ask for it too"
        " may share the port (Unix and --fd sockets are always shared) (default: off, the"
        " workers accept from one shared socket)",
    )
    server.add_argument(
        "--fd",
        type=descriptor,
        action="append",
        metavar="N",
        help="serve the listening socket this process inherited as descriptor N (from a"
        " parent, or systemd); repeatable (default: with no --unix, --tcp or --fd, the"
        " sockets systemd passes in LISTEN_FDS, else the two defaults of --unix)",
    )
    server.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="PEM certificate chain; with --tls-key, TCP listeners speak TLS (Unix ones"
        " never) (default: plain TCP)",
    )
    server.add_argument(
        "--tls-key", metavar="FILE", help="PEM private key of --tls-cert (default: none)"
    )
    server.add_argument(
        "--tls-handshake-timeout",
        type=positive_seconds,
        default=defaults.DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="drop a TLS client that has not finished its handshake in this long",
    )
    server.add_argument(
        "--socket-group",
        type=group_id,
        metavar="GROUP",
        help="give the Unix socket file to this group (name or number), e.g. with"
        " --socket-mode 660 so that its members may connect (default: the server's group)",
    )
    server.add_argument(
        "--allow-uid",
        type=user_id,
        action="append",
        metavar="USER",
        help="serve only Unix peers that are this user (name or number), or in an"
        " --allow-gid group; repeatable (default: anyone the socket file's mode lets in;"
        " for @NAME, which has no file, only the server's own user)",
    )
    server.add_argument(
        "--allow-gid",
        type=group_id,
        action="append",
        metavar="GROUP",
        help="serve only Unix peers with this group (name or number), primary or"
        " supplementary, or an --allow-uid user; repeatable (default: see --allow-uid)",
    )
    server.add_argument(
        "--handler",
        type=handler_spec,
        metavar="MODULE:NAME",
        help="serve your own protocol: NAME in MODULE (imported as python -m would, the"
        " current directory first) is an async function taking a trio_sock.Connection, or"
        " a sans-I/O protocol class (default: the increment protocol)",
    )
    server.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="every connection begins with a PROXY protocol header (v1 or v2) from a load"
        " balancer, naming the real client; one without it within 5s is closed"
        " (default: off)",
    )
    server.add_argument(
        "--metrics",
        type=metrics_address,
        metavar="[HOST:]PORT",
        help="serve the stats line's figures by listener, and active clients, at"
        f" http://HOST:PORT/metrics in Prometheus' text format (host default"
        f" {defaults.DEFAULT_METRICS_HOST}); with --workers, their sums and each worker's;"
        " needs pip install 'trio_sock[metrics]' (default: off)",
    )
    server.add_argument(
        "--trace",
        action="store_true",
        help="show the socket calls on stderr as they are made: socket, bind, listen, then"
        " each client's accept, read, write, close, with descriptors and results"
        " (default: off)",
    )
    server.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error", "critical"],
        default="info",
        help="least severe log record shown on stderr",
    )
    server.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: every stderr line is one JSON object",
    )


def server_config(args: argparse.Namespace) -> ServerConfig:
    addresses: list[Address] = [*(args.unix or ()), *(args.tcp or ())]
    # Imported here: the one-shot client never builds the server's configuration.
    from trio_sock.config.server import DEFAULT_ADDRESSES, ListenFd, ServerConfig

    fds = tuple(ListenFd(fd) for fd in args.fd or ())
    return ServerConfig(
        addresses=addresses or ([] if fds else DEFAULT_ADDRESSES),
        listen_fds=fds,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_handshake_timeout=args.tls_handshake_timeout,
        once=args.once,
        max_clients=args.max_clients,
        delay=args.delay,
        idle_timeout=args.idle_timeout,
        grace=args.grace,
        backlog=args.backlog,
        socket_mode=args.socket_mode,
        socket_group=args.socket_group,
        allow_uids=args.allow_uid or (),
        allow_gids=args.allow_gid or (),
        workers=args.workers,
        reuse_port=args.reuse_port,
        proxy_protocol=args.proxy_protocol,
        trace=args.trace,
    )


def metrics_clash(args: argparse.Namespace, config: ServerConfig) -> Address | None:
    """The server's TCP address whose port ``--metrics`` names too, if any: one of them
    could not listen (port 0 never clashes; host names are not resolved)."""
    metrics: TcpAddress | None = args.metrics
    if metrics is None or metrics.port == 0:
        return None
    for address in config.addresses:
        if not isinstance(address, TcpAddress) or address.port != metrics.port:
            continue
        hosts = {address.host, metrics.host}
        # A wildcard takes the port on every address of its family only (Trio opens
        # IPv6 listeners with IPV6_V6ONLY): 0.0.0.0 and [::] do not clash.
        if len(hosts) == 1 or _wildcard_of(hosts, "0.0.0.0") or _wildcard_of(hosts, "::"):
            return address
    return None


def _wildcard_of(hosts: set[str], wildcard: str) -> bool:
    """True if one of two hosts is ``wildcard`` and the other of its family (IPv6 hosts
    have a colon; a name counts as IPv4, which is how it usually resolves)."""
    other = hosts - {wildcard}
    return len(other) == 1 and (":" in wildcard) == (":" in next(iter(other)))


def tls_without_tcp(args: argparse.Namespace) -> bool:
    """TLS options, but only ``--unix`` to listen on: TLS would silently apply to nothing.

    Sockets from ``--fd`` or systemd may be TCP; which they are is known only once
    they are adopted, and the server warns then.
    """
    tls = args.tls_cert is not None or args.tls_key is not None
    return tls and bool(args.unix) and not (args.tcp or args.fd)
