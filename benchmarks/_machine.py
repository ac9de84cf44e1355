"""What a benchmark runs on: the open-file limit, raised for the run, and a description.

Shared by the scripts in this directory, which import it as a top-level module:
run as ``python benchmarks/NAME.py``, a script's own directory is first on sys.path.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import resource
import sys


def raise_fd_limit() -> None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (also the servers' preexec_fn)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        # An unlimited hard limit cannot be the soft one (Linux caps it at fs.nr_open).
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fd_limit() -> int:
    """The soft open-file limit, as a number."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def machine_info() -> dict[str, object]:
    """The machine, the versions and the moment of a run, for its results files."""
    uname = platform.uname()
    return {
        "uname": f"{uname.system} {uname.release} {uname.machine}",
        "python": platform.python_version(),
        "trio": importlib.metadata.version("trio"),
        "trio_sock": importlib.metadata.version("trio_sock"),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "open_file_limit": fd_limit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
