"""Configuration: small frozen attrs classes that validate themselves.

The rooms, in reading order:

- ``defaults``: every default and limit, each with the reason for its value;
- ``rules``: every value rule, written once, used by the attrs validators here and
  by the command line's argparse types alike;
- ``addresses``: ``UnixAddress``, ``TcpAddress`` and ``parse_address``;
- ``client``: ``ClientConfig``;
- ``server``: ``ServerConfig`` and ``ListenFd``.

Nothing here opens a socket, and nothing here imports another part of trio_sock:
checks that need the filesystem or the kernel belong to ``trio_sock.listen``.
This package's ``__init__`` imports nothing, so a one-shot client that imports
``config.client`` never builds the server's classes.
"""
