"""The provenance log behind the echo guard: who sent what, shared across opens, expiring."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import threading
import time
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


def _open_files(name: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += name in os.readlink(f"/proc/self/fd/{fd}")
    return count


def test_a_finished_threads_connection_is_closed_while_its_thread_object_lives(
    tmp_path: Path,
) -> None:
    """pynetdicom keeps an association's Thread objects in reference cycles: the connection
    must close when the thread ends, not when the cyclic GC collects the Thread (the PDU fuzz
    suite found one open provenance fd per finished association)."""
    log = ProvenanceLog(tmp_path / "provenance.sqlite")
    log.record("1.2.3", "PACS")  # this thread's connection, with its WAL open
    kept = []

    def record_in_a_thread(n: int) -> None:
        thread = threading.Thread(target=log.record, args=(f"1.2.3.{n}", "PACS"))
        thread.start()
        thread.join()
        kept.append(thread)

    record_in_a_thread(0)  # SQLite keeps one closed fd of the file for reuse (POSIX locks)
    before = _open_files("provenance.sqlite")
    for n in range(1, 10):
        record_in_a_thread(n)
    deadline = time.monotonic() + 2  # a thread drops its locals just after join() returns
    while _open_files("provenance.sqlite") > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _open_files("provenance.sqlite") == before
    assert log.sources("1.2.3.9") == {"PACS"}
