"""Logging of the gateway: readable text by default, one JSON object per line with LOG_FORMAT=json.

Every record gets the current request id (:mod:`gateway.request_ids`) as attribute ``request_id``
from a log-record factory installed once per process, so lines written by any module during a
request carry it, whichever handler writes them. The access line written at the
end of each request adds ``endpoint``, ``method``, ``status``, ``latency_ms``, ``version`` and
``cache`` as record attributes; the JSON formatter writes them as keys, the text formatter as
``key=value`` words.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from gateway import request_ids

ACCESS_FIELDS = ("endpoint", "method", "status", "latency_ms", "version", "cache")
"""Attributes of the per-request access line, in output order."""

_HANDLER_NAME = "gateway"


_factory_installed = False


def _install_record_factory() -> None:
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_ids.current()
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601, ms), ``level``, ``logger``,
    ``message``, ``request_id`` and, where set, the access fields and ``exc_info``."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key in ACCESS_FIELDS:
            if hasattr(record, key):
                body[key] = getattr(record, key)
        if record.exc_info:
            body["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [request-id] message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        line = super().format(record)
        extra = [f"{k}={getattr(record, k)}" for k in ACCESS_FIELDS if hasattr(record, k)]
        return " ".join([line, *extra]) if extra else line


def configure(level: str, fmt: str) -> None:
    """Install the gateway's handler on the root logger (replacing one installed earlier).

    Args:
        level: a logging level name, e.g. ``INFO``.
        fmt: ``text`` or ``json``.
    """
    _install_record_factory()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
