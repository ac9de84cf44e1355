"""The command line, a thin layer over the library: ``main`` (run a command, exit
codes), ``options`` (argparse over ``config``'s rules), ``logs`` (text or JSON on
stderr), ``status`` (what systemd shows), ``early_signals`` (signals that come
before Trio watches them).

The only package that prints or picks exit codes; nothing outside it imports it.
Its ``__init__`` imports nothing, so ``python -m trio_sock`` can take charge of
signals before anything heavy is imported.
"""
