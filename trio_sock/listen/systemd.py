"""systemd socket activation: the listening sockets systemd passes (sd_listen_fds(3)).

Plain environment variables, so no library is needed.  Outside systemd none
is set and ``listen_fds`` finds nothing.  Readiness (sd_notify) is the command
line's business: ``trio_sock.service.notify``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import resource
from typing import Final

from trio_sock.config.defaults import MAX_FD
from trio_sock.config.server import ListenFd
from trio_sock.errors import ListenError

_log = logging.getLogger("trio_sock.systemd")

#: sd_listen_fds(3): passed descriptors start right after stdin, stdout, stderr.
LISTEN_FDS_START: Final = 3
#: A pid and a descriptor count are C ints, so at most ten digits; longer text is
#: no number systemd writes, and stops here before ``int`` spends time on it.
_MAX_DIGITS: Final = 10
#: Only ASCII digits: ``str.isdigit`` accepts ``²``, which ``int`` then refuses,
#: and ``int`` alone accepts ``" 1"``, ``"1_0"`` and other scripts' digits.
_ASCII_DIGITS: Final = re.compile(f"[0-9]{{1,{_MAX_DIGITS}}}")
#: How every warning about ignored variables starts: one phrase to search the logs for.
_IGNORED: Final = "ignoring socket activation: "
#: Enough of a bad value to recognise it; a variable can be megabytes long, a log line should not.
_SHOWN_CHARS: Final = 40


def _ascii_int(text: str) -> int | None:
    """``text`` as a number if it is one to ten ASCII digits, else ``None``."""
    return int(text) if _ASCII_DIGITS.fullmatch(text) else None


def _shown(text: str) -> str:
    """``text`` quoted for a log line, escapes and all, and cut short if long."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"


def _open_file_limit() -> int:
    """This process's soft limit on open files (``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Linux never allows an infinite RLIMIT_NOFILE; were it so, descriptors are C ints.
    return MAX_FD + 1 if soft == resource.RLIM_INFINITY else soft


def listen_fds(*, fd_limit: int | None = None) -> tuple[ListenFd, ...]:
    """The sockets systemd passed to this process, with their names; then forget them.

    As sd_listen_fds(3) asks, the variables are unset once read, so that child
    processes do not take the sockets for theirs.  They count only if
    ``LISTEN_PID`` is this process.

    Error handling: variables meant for another process, or that are not plain
    ASCII numbers, are ignored, as systemd's own sd_listen_fds() ignores them,
    with one warning saying which and why.  A count that no parent can have
    passed (descriptors at or above the open-file limit) is an error, raised
    before anything is built for it, so that any count costs the same.

    Args:
        fd_limit: Every passed descriptor is below this; ``None`` means this
            process's open-file soft limit.

    Returns:
        One ``ListenFd`` per descriptor, from fd 3 up; none if nothing is for us.

    Raises:
        ListenError: ``LISTEN_FDS`` counts more descriptors than the limit allows.
    """
    pid_text, count_text, names = (
        os.environ.pop(v, None) for v in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
    )
    if pid_text is None and count_text is None:
        return ()
    if pid_text is None:
        shown = _shown(count_text or "")  # never None here: both None returned above
        _log.warning("%sLISTEN_FDS=%s is set, but LISTEN_PID is not set", _IGNORED, shown)
        return ()
    if count_text is None:
        _log.warning(
            "%sLISTEN_PID=%s is set, but LISTEN_FDS is not set", _IGNORED, _shown(pid_text)
        )
        return ()
    pid = _ascii_int(pid_text)
    if pid is None:
        _log.warning("%sLISTEN_PID=%s is not a process id", _IGNORED, _shown(pid_text))
        return ()
    if pid != os.getpid():
        _log.warning(
            "%sLISTEN_PID=%s is another process, not this one (%s); LISTEN_FDS=%s",
            _IGNORED, pid, os.getpid(), _shown(count_text),
        )  # fmt: skip
        return ()
    count = _ascii_int(count_text)
    if count is None:
        _log.warning("%sLISTEN_FDS=%s is not a count of descriptors", _IGNORED, _shown(count_text))
        return ()
    limit = _open_file_limit() if fd_limit is None else fd_limit
    last = LISTEN_FDS_START + count - 1
    if last >= limit:
        raise ListenError(
            f"cannot take the sockets systemd passed: LISTEN_FDS={count} means descriptors"
            f" {LISTEN_FDS_START} to {last}, but the open-file limit (ulimit -n) is {limit};"
            " raise it (LimitNOFILE= in the service unit) or correct LISTEN_FDS",
            errno=errno.EMFILE,
        )
    # Only the first ``count`` names matter, however long the variable.
    labels = (names or "").split(":", count)
    return tuple(
        ListenFd(LISTEN_FDS_START + i, labels[i] if i < len(labels) and labels[i] else None)
        for i in range(count)
    )
