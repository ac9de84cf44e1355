"""A server as a process runs it: ``run`` (activation, one server or worker
processes, until a signal), ``signalled`` (the ready line, then signals obeyed),
``notify`` and ``status`` (what systemd is told), ``early_signals`` (signals that
come before Trio watches them), ``metrics`` and ``metrics_endpoint`` (``--metrics``).

Its ``__init__`` imports nothing, so ``python -m trio_sock`` can take charge of
signals before anything heavy is imported.
"""
