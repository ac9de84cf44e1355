"""The server's logs on stderr: text for people, JSON for log collectors.

Only the command line sets logging up (``configure``); the library just logs,
each concern under its own ``trio_sock.*`` logger.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Final

#: The fields of a log record that are not ``extra=...``; everything else goes into JSON.
_STANDARD_FIELDS: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
#: A stats line is asked for (SIGUSR1) or closes the run: it shows at every level
#: up to this one, so that ``--log-level warning`` keeps it; only error and
#: critical silence it.
_STATS_SHOWN_UP_TO: Final = logging.WARNING


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any ``extra`` fields.

    ``time`` is ISO 8601 in UTC with its offset (``2026-12-03T21:12:51.691+00:00``):
    what log collectors parse without guessing the server's time zone.
    """

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        fields: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_FIELDS:
                fields[key] = value
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        return json.dumps(fields, default=str)


class _WorkerLabel(logging.Filter):
    """Marks every record with the worker's number: ``worker=N`` in text, a field in JSON."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.number
        return True


def configure(level: str, form: str, worker: int | None = None) -> logging.Handler:
    """Send every ``trio_sock`` record at ``level`` or above to stderr.

    Args:
        level: ``--log-level``: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        form: ``--log-format``: ``text`` or ``json``.
        worker: This process's worker number, if it is one, to mark each record with.

    Returns:
        The handler, which replaces any the ``trio_sock`` logger had.
    """
    handler = logging.StreamHandler(sys.stderr)
    label = ""
    if worker is not None:
        handler.addFilter(_WorkerLabel(worker))
        label = "worker=%(worker)s "
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {label}%(name)s: %(message)s")
        )
    root = logging.getLogger("trio_sock")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("trio_sock.stats").setLevel(
        min(root.level, logging.INFO) if root.level <= _STATS_SHOWN_UP_TO else root.level
    )
    return handler
