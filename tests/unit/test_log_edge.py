"""The logging edge (issue #14): library records and warnings lose quoted values, floods are
cut, uncaught thread exceptions and stray stderr lines become single JSON records."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from adapter.log import configure_logging
from adapter.log_edge import StderrToLog, _showwarning, _thread_excepthook, redact, safe_uid

NAME, PID = "LEAKNAME^PATIENT", "LEAKID4711"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = (threading.excepthook, sys.excepthook)
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    threading.excepthook, sys.excepthook = hooks


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_redact_keeps_valid_uids_only() -> None:
    text = f"Invalid value for VR UI: '1.2.{NAME}' and b'{PID}\\x00' near '1.2.840.10008.1.2'"
    shown = redact(text)
    assert NAME not in shown and PID not in shown and "'1.2.840.10008.1.2'" in shown
    assert len(redact("x" * 10_000)) < 400
    assert safe_uid("1.2.3") == "1.2.3" and safe_uid(f"1.2.{NAME}") == "<not a UID, 20 chars>"
    assert safe_uid("1.02.3").startswith("<not a UID")


def test_library_records_and_warnings_are_redacted(out: io.StringIO) -> None:
    logging.getLogger("pydicom").warning("Invalid value for VR UI: %r", f"1.2.{NAME}")
    logging.getLogger("pynetdicom.dsutils").error("bad %s", f'"{PID}"')
    _showwarning(UserWarning(f"Invalid value '{NAME}'"), UserWarning, "/x/valuerep.py", 440)
    logging.getLogger("importer").warning("refused", extra={"sop_instance_uid": NAME})
    text = out.getvalue()
    assert NAME not in text and PID not in text
    assert [r["logger"] for r in records(out)] == [
        "pydicom",
        "pynetdicom.dsutils",
        "py.warnings",
        "importer",
    ]


def test_a_flood_of_library_records_is_cut(out: io.StringIO) -> None:
    for i in range(5000):
        logging.getLogger("pynetdicom.dul").error("garbage PDU %d", i)
    assert 1 <= len(records(out)) <= 20


def test_library_exceptions_lose_their_traceback(out: io.StringIO) -> None:
    try:
        raise ValueError(f"value {NAME}")
    except ValueError:
        logging.getLogger("socketserver").exception("error in %s", "handler")
    [record] = records(out)
    assert "exception" not in record and NAME not in json.dumps(record)
    assert "ValueError" in str(record["message"])


def test_an_uncaught_thread_exception_is_one_record(out: io.StringIO) -> None:
    threading.excepthook = _thread_excepthook

    def boom() -> None:
        raise RuntimeError(f"decoding {NAME}")

    thread = threading.Thread(target=boom, name="assoc-1")
    thread.start()
    thread.join()
    [record] = records(out)
    assert record["severity"] == "ERROR" and "RuntimeError" in str(record["message"])
    assert "assoc-1" in str(record["message"]) and NAME not in json.dumps(record)


def test_stray_stderr_writes_become_records_without_traceback_lines(out: io.StringIO) -> None:
    target = io.StringIO()
    writer = StderrToLog(target)
    writer.write("Traceback (most recent call last):\n  File 'x.py', line 1, in f\n")
    writer.write(f"    decode('{NAME}')\nValueError: bad value '{NAME}'\n")
    writer.write("Exception occurred during processing of request from ('127.0.0.1', 5)\n-----\n")
    writer.write("partial line")
    writer.flush()
    messages = [r["message"] for r in records(out)]
    assert messages == [
        "ValueError",
        "Exception occurred during processing of request from ('127.0.0.1', 5)",
        "partial line",
    ]
    assert target.getvalue() == ""
