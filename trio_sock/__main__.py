"""``python -m trio_sock`` and the ``trio-sock`` script."""

from typing import NoReturn

from trio_sock import _early_signals


def run() -> NoReturn:
    """Take charge of signals first, then import and run the command line."""
    _early_signals.hold()
    from trio_sock.cli import main_exit

    main_exit()


if __name__ == "__main__":
    run()
