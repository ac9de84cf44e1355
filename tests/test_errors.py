"""The error hierarchy: one base to catch, and each error still what it really is."""

from __future__ import annotations

import errno

import pytest

from trio_sock import (
    ClientTimeoutError,
    ConnectError,
    ListenError,
    ProtocolError,
    TrioSockError,
)


@pytest.mark.parametrize("error_type", [ListenError, ConnectError])
def test_os_errors_are_catchable_as_os_error_and_keep_their_errno(
    error_type: type[ListenError | ConnectError],
) -> None:
    error = error_type("unix:s: No such file or directory; start one", errno=errno.ENOENT)
    assert isinstance(error, OSError)
    assert isinstance(error, TrioSockError)
    assert error.errno == errno.ENOENT
    assert str(error) == "unix:s: No such file or directory; start one"  # no [Errno 2] prefix


def test_a_client_timeout_is_a_timeout_error() -> None:
    error = ClientTimeoutError("no reply within 1s")
    assert isinstance(error, TimeoutError)
    assert isinstance(error, TrioSockError)


def test_a_protocol_error_is_only_a_trio_sock_error() -> None:
    error = ProtocolError("closed without replying")
    assert isinstance(error, TrioSockError)
    assert not isinstance(error, OSError)


def test_one_except_clause_catches_them_all() -> None:
    for error in (
        ListenError("x"),
        ConnectError("x"),
        ClientTimeoutError("x"),
        ProtocolError("x"),
    ):
        with pytest.raises(TrioSockError):
            raise error
