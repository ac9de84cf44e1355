"""``python -m trio_sock`` and the ``trio-sock`` script."""

from typing import NoReturn

from trio_sock.service import early_signals


def run() -> NoReturn:
    """Take charge of signals first, then import and run the command line."""
    early_signals.hold()
    from trio_sock.cli.main import main_exit

    main_exit()


if __name__ == "__main__":
    run()
