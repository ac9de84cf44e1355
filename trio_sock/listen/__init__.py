"""Listening: opening the sockets a server accepts on, and every rule about them.

The rooms: ``listeners`` (opening Unix, TCP and inherited listeners, all or
none), ``lockfile`` (one server per socket path), ``private_dir`` (binding a
socket file where no one can swap its name), ``unix_diag`` (asking the kernel
which socket files have a listener), ``systemd`` (socket activation).

May import ``config`` and ``errors``; never ``server``, ``workers`` or ``cli``.
"""
