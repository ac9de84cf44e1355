"""Several processes: ``supervisor`` (the parent that starts, restarts and stops
workers), ``process`` (one worker as the parent sees it) and ``worker`` (a
worker's side: who it is, its parent's orders, its parent's death, and the
figures it reports for ``--metrics``).

May import ``config``, ``errors``, ``tls``, ``listen`` and ``server``; never ``cli``.
"""
