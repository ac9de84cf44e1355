"""Listening: opening the sockets a server accepts on, and every rule about them.

The rooms: ``listener`` (a ``Listener``, OS errors explained, ``close_on_error``),
``unix`` (socket-file rules, with ``lockfile``, ``private_dir`` and
``unix_diag``), ``tcp`` (and ``SO_REUSEPORT``), ``inherited`` (``--fd``) and
``systemd`` (socket activation), ``open_all`` (every listener of a config, all
or none).

May import ``config`` and ``errors``; never ``server``, ``workers`` or ``cli``.
"""
