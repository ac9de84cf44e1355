"""trio_sock: the sockets chapter's increment server and client, as a Trio service.

Serve under your own nursery::

    server = await nursery.start(trio_sock.serve, trio_sock.ServerConfig())
    print(server.addresses)

and ask it with ``await trio_sock.send_char(trio_sock.ClientConfig(char="A"))``.
Serve your own protocol with ``serve(config, handler)``, or run a whole server
process, signals and workers included, with ``trio_sock.run(config, handler)``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from trio_sock._version import __version__ as __version__

if TYPE_CHECKING:
    from .client import exchange as exchange
    from .client import open_stream as open_stream
    from .client import send_char as send_char
    from .config.addresses import Address as Address
    from .config.addresses import TcpAddress as TcpAddress
    from .config.addresses import UnixAddress as UnixAddress
    from .config.addresses import parse_address as parse_address
    from .config.client import ClientConfig as ClientConfig
    from .config.server import ServerConfig as ServerConfig
    from .errors import ClientTimeoutError as ClientTimeoutError
    from .errors import ConnectError as ConnectError
    from .errors import HandlerError as HandlerError
    from .errors import ListenError as ListenError
    from .errors import ProtocolError as ProtocolError
    from .errors import TrioSockError as TrioSockError
    from .protocol import Increment as Increment
    from .protocol import increment as increment
    from .server.connection import Connection as Connection
    from .server.handlers import Handler as Handler
    from .server.handlers import SansIOProtocol as SansIOProtocol
    from .server.serve import Server as Server
    from .server.serve import serve as serve
    from .server.stats import ServerStats as ServerStats
    from .service.run import run as run

# Each name is imported from its module on first use: ``python -m trio_sock``
# can then take charge of signals before Trio is imported, and a program
# that only uses the client never imports the server.  The block above says
# the same to type checkers; tests/test_packaging.py checks that the two agree.
_EXPORTS = {
    "exchange": "client",
    "open_stream": "client",
    "send_char": "client",
    "Address": "config.addresses",
    "TcpAddress": "config.addresses",
    "UnixAddress": "config.addresses",
    "parse_address": "config.addresses",
    "ClientConfig": "config.client",
    "ServerConfig": "config.server",
    "ClientTimeoutError": "errors",
    "ConnectError": "errors",
    "HandlerError": "errors",
    "ListenError": "errors",
    "ProtocolError": "errors",
    "TrioSockError": "errors",
    "Increment": "protocol",
    "increment": "protocol",
    "Connection": "server.connection",
    "Handler": "server.handlers",
    "SansIOProtocol": "server.handlers",
    "Server": "server.serve",
    "serve": "server.serve",
    "ServerStats": "server.stats",
    "run": "service.run",
}

__all__ = ["__version__", *_EXPORTS]


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
