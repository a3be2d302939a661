"""Logging: one JSON object per line (Cloud Logging's fields) or readable text on a terminal.

Call sites pass context with ``extra={"sop_instance_uid": ..., "calling_ae": ..., "peer": ...,
"status": ...}``; never patient data (names, IDs, birth dates): UIDs only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from adapter.log_edge import EdgeFilter, StderrToLog, install_hooks, safe_uid

__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "TextFormatter", "configure_logging"]

CONTEXT_FIELDS = (
    "sop_instance_uid",
    "study_instance_uid",
    "calling_ae",
    "called_ae",
    "peer",
    "status",
    "http_status",
    "plugin",
    "destination",
    "message_id",
    "dead_letter_id",
    "attempt",
)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in CONTEXT_FIELDS:
        value = getattr(record, key, None)
        if value is None:
            continue
        if key == "status" and isinstance(value, int):
            value = f"0x{value:04X}"
        elif key.endswith("_uid"):
            value = safe_uid(value)  # a hostile "UID" may carry a name
        out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """Cloud Logging structured format: ``severity``, ``message``, ``time`` plus context."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        payload.update(_context(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, context as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = _context(record)
        if ctx:
            line += " [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]"
        return line


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Install one handler on the root logger; ``auto`` = text on a TTY, JSON otherwise.
    Library output is redacted and rate-limited at the edge (adapter/log_edge.py)."""
    current = sys.stderr.target if isinstance(sys.stderr, StderrToLog) else sys.stderr
    # the process's own stderr (not a test's capture of it) is taken over for stray writes
    process_stderr = stream is None and current is sys.__stderr__ and "pytest" not in sys.modules
    out = stream or current
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(EdgeFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom is chatty at INFO (every PDU); keep it at WARNING unless debugging.
    logging.getLogger("pynetdicom").setLevel("DEBUG" if level == "DEBUG" else "WARNING")
    logging.getLogger("urllib3").setLevel("WARNING")
    install_hooks(json_stderr=use_json and process_stderr)
