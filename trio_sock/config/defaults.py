"""Every default and limit of the configuration, each with the reason for its value."""

from __future__ import annotations

from typing import Final

#: The book's Unix socket, created in the current directory.
DEFAULT_UNIX_PATH: Final = "server_socket"
#: The book's port, 9734, on loopback: reachable from other machines only when asked.
DEFAULT_TCP_HOST: Final = "127.0.0.1"
DEFAULT_TCP_PORT: Final = 9734
#: ``--metrics PORT`` on loopback too: figures are for the operator's scraper, not the world.
DEFAULT_METRICS_HOST: Final = "127.0.0.1"
#: Below the usual soft limit of 1024 open files, leaving room for the listeners,
#: stdio and logs, so the default never runs the process out of descriptors.
DEFAULT_MAX_CLIENTS: Final = 1000
#: Long enough for a person typing into ``nc``; short enough that an abandoned
#: connection frees its slot within a minute.
DEFAULT_IDLE_TIMEOUT: Final = 60.0
#: As the contract says: active clients get five seconds to finish at shutdown.
DEFAULT_GRACE: Final = 5.0
#: Only the server's own user may connect, unless asked otherwise.
DEFAULT_SOCKET_MODE: Final = 0o600
#: A TLS handshake takes a few round trips; a client that has not finished in
#: this long is not going to, and holds a slot meanwhile.
DEFAULT_TLS_HANDSHAKE_TIMEOUT: Final = 10.0
#: Connecting to a Unix socket takes microseconds; the reply, one scheduler tick.
#: Ten seconds means something is wrong, not slow.
DEFAULT_CLIENT_TIMEOUT: Final = 10.0
#: Linux stores the backlog in 16 bits (and caps it at net.core.somaxconn).
MAX_BACKLOG: Final = 0xFFFF
#: uid_t and gid_t are 32 bits; the all-ones value means "no change" to chown.
MAX_ID: Final = 2**32 - 2
#: A descriptor is a C int.
MAX_FD: Final = 2**31 - 1
#: Each worker is a whole Python process (tens of MB); far more than any machine
#: has CPUs to run them, so a larger number is a typo, not a plan.
MAX_WORKERS: Final = 256
