"""Logging set up for a server process: a level and a format, text or JSON lines
(``kcprpc serve --log-level L --log-format text|json``; docs/logging.md).

kcprpc itself only logs (``logging.getLogger("kcprpc.server")`` ...); :func:`configure_logging` is
for programs that want what ``kcprpc serve`` does: the root logger's level and one handler on
stderr. JSON lines (:class:`JsonFormatter`) are for log collectors: one object per record, with
``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``, the record's extra
fields (``log.info("...", extra={"session": sid})``) and, with a traceback, ``exc``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from kcprpc.errors import UsageError

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "TEXT_FORMAT", "JsonFormatter", "configure_logging"]

LOG_LEVELS = ("debug", "info", "warning", "error")
"""The levels ``--log-level`` takes."""
LOG_FORMATS = ("text", "json")
"""The formats ``--log-format`` takes."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text format: ``time LEVEL logger: message``."""

# what every LogRecord has: the rest of its __dict__ came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time``, ``level``, ``logger``, ``message``, then
    the record's extra fields (values JSON cannot hold are written as ``str()``), then ``exc``
    (the formatted traceback) and ``stack`` when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_") and k not in out:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "warning", format: str = "text", stream: IO[str] | None = None) -> None:
    """Send every logger's records of ``level`` (``debug``, ``info``, ``warning``, ``error``) and
    above to ``stream`` (default stderr), as ``text`` (``time LEVEL logger: message``) or ``json``
    (one object per line: :class:`JsonFormatter`). Replaces the root logger's handlers. A level or
    format not in :data:`LOG_LEVELS` / :data:`LOG_FORMATS` raises :class:`~kcprpc.UsageError`."""
    if level.lower() not in LOG_LEVELS:
        raise UsageError(f"log level {level!r}: expected one of {', '.join(LOG_LEVELS)}")
    if format not in LOG_FORMATS:
        raise UsageError(f"log format {format!r}: expected one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
