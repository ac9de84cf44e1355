"""The command line, a thin layer over the library: ``main`` (run a command, exit
codes), ``options`` (the parser; ``server_options``, ``client_options`` and
``values``, argparse over ``config``'s rules), ``logs`` (text or JSON on stderr).
Serving is ``trio_sock.service``'s.

The only package that picks exit codes; nothing outside it imports it.  Its
``__init__`` imports nothing, so ``python -m trio_sock`` can take charge of
signals before anything heavy is imported.
"""
