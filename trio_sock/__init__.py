"""trio_sock: the sockets chapter's increment server and client, as a Trio service.

Serve under your own nursery::

    server = await nursery.start(trio_sock.serve, trio_sock.ServerConfig())
    print(server.addresses)

and ask it with ``await trio_sock.send_char(trio_sock.ClientConfig(char="A"))``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__ as __version__

if TYPE_CHECKING:
    from .client import exchange as exchange
    from .client import open_stream as open_stream
    from .client import send_char as send_char
    from .config import Address as Address
    from .config import ClientConfig as ClientConfig
    from .config import ServerConfig as ServerConfig
    from .config import TcpAddress as TcpAddress
    from .config import UnixAddress as UnixAddress
    from .config import parse_address as parse_address
    from .errors import ClientTimeoutError as ClientTimeoutError
    from .errors import ConnectError as ConnectError
    from .errors import ListenError as ListenError
    from .errors import ProtocolError as ProtocolError
    from .errors import TrioSockError as TrioSockError
    from .protocol import increment as increment
    from .server import Server as Server
    from .server import serve as serve
    from .stats import ServerStats as ServerStats

# Each name is imported from its module on first use: ``python -m trio_sock``
# can then take charge of signals before Trio is imported, and a program
# that only uses the client never imports the server.
_EXPORTS = {
    "exchange": "client",
    "open_stream": "client",
    "send_char": "client",
    "Address": "config",
    "ClientConfig": "config",
    "ServerConfig": "config",
    "TcpAddress": "config",
    "UnixAddress": "config",
    "parse_address": "config",
    "ClientTimeoutError": "errors",
    "ConnectError": "errors",
    "ListenError": "errors",
    "ProtocolError": "errors",
    "TrioSockError": "errors",
    "increment": "protocol",
    "Server": "server",
    "serve": "server",
    "ServerStats": "stats",
}


def __getattr__(name: str) -> object:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'trio_sock' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Address",
    "ClientConfig",
    "ClientTimeoutError",
    "ConnectError",
    "ListenError",
    "ProtocolError",
    "Server",
    "ServerConfig",
    "ServerStats",
    "TcpAddress",
    "TrioSockError",
    "UnixAddress",
    "__version__",
    "exchange",
    "increment",
    "open_stream",
    "parse_address",
    "send_char",
    "serve",
]
