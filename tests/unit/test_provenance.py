"""The provenance log behind the echo guard: who sent what, shared across opens, expiring."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from adapter.provenance import ProvenanceLog


def test_an_instance_received_from_an_ae_would_echo_back_to_it(tmp_path: Path) -> None:
    log = ProvenanceLog(tmp_path / "provenance.sqlite")
    log.record("1.2.3", "PACS1 ")
    assert log.came_from("1.2.3", "PACS1")
    assert not log.came_from("1.2.3", "PACS2")
    assert not log.came_from("1.2.4", "PACS1")


def test_a_second_process_sees_what_the_first_recorded(tmp_path: Path) -> None:
    ProvenanceLog(tmp_path / "provenance.sqlite").record("1.2.3", "PACS1")
    assert ProvenanceLog(tmp_path / "provenance.sqlite").sources("1.2.3") == {"PACS1"}


def test_entries_past_the_ttl_are_dropped_when_the_log_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "provenance.sqlite"
    ProvenanceLog(path).record("1.2.3", "PACS1")
    reopened = ProvenanceLog(path, ttl=0.0)
    assert not reopened.came_from("1.2.3", "PACS1")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM received").fetchone() == (0,)


def _open_and_record(directory: str, index: int) -> None:
    for n in range(15):
        ProvenanceLog(Path(directory) / f"provenance-{n}.sqlite").record(f"1.2.{index}", "AE")


def test_processes_opening_one_new_log_at_once_all_succeed(tmp_path: Path) -> None:
    """Receiving processes start together and open the same file: switching it to WAL can
    answer "database is locked" at once, which must not stop a receiver from starting."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_record, args=(str(tmp_path), i)) for i in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0] * 6
    assert ProvenanceLog(tmp_path / "provenance-0.sqlite").sources("1.2.0") == {"AE"}
