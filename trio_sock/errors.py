"""The errors trio_sock raises on purpose.

A flat hierarchy (the httpcore way): one base class to catch everything, and
subclasses that stay catchable as the built-in error they really are, so
``except OSError`` around a connect keeps working.  Every message says what
happened and what to do next; the CLI prints it as it is.
"""


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
