"""The edge of the adapter's logging: what libraries say is rewritten before it is written.

Library records (pydicom, pynetdicom, socketserver, ...) and Python warnings can quote the raw
bytes of a hostile data set -- names and IDs inside a broken UID. Here they lose every quoted
value (valid UIDs excepted), are rate-limited per logger, and uncaught thread exceptions and
stray stderr writes become one JSON record each, without the traceback's lines.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
import traceback
import warnings
from types import TracebackType
from typing import TextIO

__all__ = ["EdgeFilter", "StderrToLog", "install_hooks", "redact", "safe_uid"]

_OWN = ("adapter", "importer", "exporter", "__main__")
_QUOTED = re.compile(r"""b?'(?:[^'\\\n]|\\.)*'|b?"(?:[^"\\\n]|\\.)*"|<[^<>\n]{0,400}>""")
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt))\b")
_MAX_MESSAGE = 300
_WINDOW, _PER_WINDOW = 10.0, 20


def safe_uid(value: object) -> str:
    """``value`` if it is a valid UID (PS3.5 9.1), else a placeholder naming only its size."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= 64 and _UID.fullmatch(text):
        return text
    return f"<not a UID, {len(text)} chars>"


def _keep_uid(match: re.Match[str]) -> str:
    inner = match.group(0).lstrip("b")[1:-1]
    if len(inner) <= 64 and _UID.fullmatch(inner):
        return match.group(0)
    return "<redacted>" if not match.group(0).startswith("<") else "<...>"


def redact(text: str) -> str:
    """``text`` without quoted values (valid UIDs kept), control characters escaped, capped."""
    out = _QUOTED.sub(_keep_uid, text)
    out = out.encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in out)
    return out if len(out) <= _MAX_MESSAGE else out[:_MAX_MESSAGE] + "...(cut)"


class EdgeFilter(logging.Filter):
    """On the handler: library records redacted and rate-limited; own records pass as they are
    (their call sites log UIDs and reasons only)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in _OWN and not getattr(record, "_edge_redact", False):
            return True
        now = time.monotonic()
        with self._lock:
            key = record.name.split(".")[0]
            start, count = self._windows.get(key, (now, 0))
            if now - start >= _WINDOW:
                dropped = count - _PER_WINDOW
                start, count = now, 0
                if dropped > 0:
                    record.msg = f"[{dropped} more record(s) of {key} dropped] {record.msg}"
            count += 1
            self._windows[key] = (start, count)
        if count > _PER_WINDOW:
            return False
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg += f" ({type(exc).__name__}{_where(record.exc_info[2])})"
            record.exc_info, record.exc_text = None, None
        record.stack_info = None
        return True


def _where(tb: TracebackType | None) -> str:
    frames = traceback.extract_tb(tb)[-3:] if tb is not None else []
    return "".join(f" at {f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames)


class StderrToLog(io.TextIOBase):
    """``sys.stderr`` replacement: whole lines become WARNING records of logger ``stderr``
    (redacted, rate-limited); traceback lines are dropped, the exception line keeps its type."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target
        self._buffer = ""
        self._lock = threading.Lock()
        self._log = logging.getLogger("stderr")
        self._inside = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self._emit(rest)

    def isatty(self) -> bool:
        return False

    def _emit(self, line: str) -> None:
        if getattr(self._inside, "active", False):  # logging itself complaining: no loop
            self.target.write(redact(line) + "\n")
            return
        self._inside.active = True
        try:
            self._emit_record(line)
        finally:
            self._inside.active = False

    def _emit_record(self, line: str) -> None:
        stripped = line.strip()
        if not stripped or line[:1].isspace() or set(stripped) <= {"-", "^", "~", "="}:
            return
        if stripped.startswith(("Traceback ", "During handling", "The above exception")):
            return
        match = _EXCEPTION_LINE.match(stripped)
        self._log.warning("%s", match.group(1) if match else stripped)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("uncaught").error(
        "uncaught %s in thread %s%s", args.exc_type.__name__, name, _where(args.exc_traceback)
    )


def _excepthook(et: type[BaseException], e: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("uncaught").critical("uncaught %s%s", et.__name__, _where(tb))


def _showwarning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    logging.getLogger("py.warnings").warning(
        "%s from %s:%d: %s", category.__name__, filename.rsplit("/", 1)[-1], lineno, message
    )


def install_hooks(json_stderr: bool) -> None:
    """Warnings, uncaught exceptions (main and other threads) and, with ``json_stderr``, any
    stray write to ``sys.stderr`` go through logging (and so through :class:`EdgeFilter`)."""
    warnings.showwarning = _showwarning
    threading.excepthook = _thread_excepthook
    sys.excepthook = _excepthook
    if json_stderr and not isinstance(sys.stderr, StderrToLog):
        sys.stderr = StderrToLog(sys.stderr)
