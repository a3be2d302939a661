"""Logs: JSON lines with Cloud Logging's fields when piped, readable text on a terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from adapter.log import configure_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_piped_output_is_one_json_object_per_line_with_context() -> None:
    out = io.StringIO()
    configure_logging("auto", "INFO", stream=out)
    logging.getLogger("importer").warning(
        "store rejected the instance",
        extra={"sop_instance_uid": "1.2.3", "calling_ae": "PACS1", "status": 0xC000},
    )
    record = json.loads(out.getvalue().strip())
    assert record["severity"] == "WARNING"
    assert record["message"] == "store rejected the instance"
    assert record["sop_instance_uid"] == "1.2.3" and record["calling_ae"] == "PACS1"
    assert record["status"] == "0xC000"
    assert record["time"].endswith("Z")


def test_terminal_output_is_readable_text() -> None:
    out = Terminal()
    configure_logging("auto", "INFO", stream=out)
    logging.getLogger("importer").info("stored", extra={"sop_instance_uid": "1.2.3"})
    line = out.getvalue().strip()
    assert not line.startswith("{")
    assert "INFO" in line and "stored" in line and "sop_instance_uid=1.2.3" in line


def test_level_filters_debug() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    logging.getLogger("x").debug("noise")
    assert out.getvalue() == ""
