"""The command line, a thin layer over the library: ``main`` (run a command, exit
codes), ``options`` (the parser; ``server_options``, ``client_options`` and
``values``, argparse over ``config``'s rules), ``run`` (serve until signalled),
``logs`` (text or JSON on stderr), ``notify`` and ``status`` (what systemd is
told), ``early_signals`` (signals that come before Trio watches them).

The only package that picks exit codes; nothing outside it imports it.  Its
``__init__`` imports nothing, so ``python -m trio_sock`` can take charge of
signals before anything heavy is imported.
"""
