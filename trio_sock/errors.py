"""The errors trio_sock raises on purpose.

A flat hierarchy (the httpcore way): one base class to catch everything, and
subclasses that stay catchable as the built-in error they really are, so
``except OSError`` around a connect keeps working.  Every message says what
happened and what to do next; the CLI prints it as it is.
"""

import ssl


def why_broken(exc: BaseException) -> str:
    """The OS's (or TLS's) words for why a stream broke, from the error Trio chained.

    Trio raises ``BrokenResourceError`` from the original ``OSError``; the
    server's departure log and the client's messages both show that cause.
    """
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError):
        return str(cause.reason or cause)
    return cause.strerror if isinstance(cause, OSError) and cause.strerror else "broken"


class TrioSockError(Exception):
    """Base class of every error trio_sock raises on purpose."""


class TrioSockOSError(TrioSockError, OSError):
    """An operating-system failure, explained.

    ``str(error)`` is the whole explanation (no ``[Errno N]`` prefix); the
    original number stays in ``errno`` for code that dispatches on it.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class ListenError(TrioSockOSError):
    """The server could not listen on an address (in use, permissions, bad path...)."""


class ConnectError(TrioSockOSError):
    """The client could not reach the server."""


class ClientTimeoutError(TrioSockError, TimeoutError):
    """The client gave up waiting for the server to connect or reply."""


class ProtocolError(TrioSockError):
    """The peer broke the protocol, e.g. closed the connection without a reply."""


class WorkerError(TrioSockError):
    """A worker process could not start, or was told who it is in words it cannot read."""


class HandlerError(TrioSockError):
    """A handler named as ``MODULE:NAME`` could not be loaded, or is not a handler."""
