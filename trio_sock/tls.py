"""TLS contexts for TCP: the server's certificate, the client's trusted CAs.

Built once, before anything listens or connects, so a bad file is one clear
error at start and never a failure per connection.  Python's defaults are kept
(``create_default_context``): TLS 1.2 or newer, certificates and host names
checked by the client.
"""

from __future__ import annotations

import ssl

from trio_sock.errors import ConnectError, ListenError


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        # Some OpenSSL builds give no reason code for a bad PEM file, only "PEM lib".
        reason = exc.reason or ("PEM_LIB" if "PEM lib" in str(exc) else None)
        return {
            "KEY_VALUES_MISMATCH": "the key does not belong to the certificate",
            "PEM_LIB": "not a PEM certificate and key, or the key does not match",
            "NO_START_LINE": "not a PEM file",
        }.get(reason or "", reason or str(exc))
    return exc.strerror or str(exc)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A context for serving with the certificate chain ``cert`` and its key ``key``.

    Raises:
        ListenError: a file is missing, unreadable, not PEM, or the two do not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:
        raise ListenError(
            f"cannot use the TLS certificate {cert!r} with the key {key!r}: {_reason(exc)};"
            " check --tls-cert and --tls-key",
            errno=exc.errno,
        ) from exc
    return context


def client_context(ca: str | None) -> ssl.SSLContext:
    """A context that trusts the CAs in ``ca`` (a PEM file), or the system's if None.

    Raises:
        ConnectError: the CA file is missing, unreadable or not PEM.
    """
    try:
        return ssl.create_default_context(cafile=ca)
    except OSError as exc:
        raise ConnectError(
            f"cannot use the CA file {ca!r}: {_reason(exc)}; check --tls-ca", errno=exc.errno
        ) from exc
