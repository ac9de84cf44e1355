"""Open every listener a configuration names: all of them, or none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio_sock.config.addresses import UnixAddress
from trio_sock.listen.inherited import adopt_listener
from trio_sock.listen.listener import Listener, close_on_error
from trio_sock.listen.tcp import open_tcp_listeners
from trio_sock.listen.unix import open_unix_listener
from trio_sock.trace import Tracer

if TYPE_CHECKING:
    from trio_sock.config.server import ServerConfig


async def open_listeners(config: ServerConfig) -> list[Listener]:
    """Open every listener of ``config``, in order: all of them, or none.

    Raises:
        ListenError: for the first address that fails; those already open are closed
            (and their socket files removed) first.
    """
    tracer = Tracer() if config.trace else None
    listeners: list[Listener] = []
    with close_on_error(listeners):
        for address in config.addresses:
            if isinstance(address, UnixAddress):
                listeners.append(
                    open_unix_listener(
                        address,
                        backlog=config.backlog,
                        mode=config.socket_mode,
                        group=config.socket_group,
                        tracer=tracer,
                    )
                )
            else:
                listeners += await open_tcp_listeners(
                    address, backlog=config.backlog, reuse_port=config.reuse_port, tracer=tracer
                )
        for inherited in config.listen_fds:
            listeners.append(adopt_listener(inherited))
    return listeners
