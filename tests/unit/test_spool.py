"""The durable spool: what is in ready/ survives a restart, hostile UIDs never choose a path,
claims are exclusive across threads, the byte budget holds."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from adapter.deadletter import DeadLetterQueue
from adapter.spool import Spool, SpoolFullError, SpoolMeta, adopt_into_spool, read_spool_meta
from tests.peers.datasets import make_ct_series

CT = "1.2.840.10008.5.1.4.1.1.2"
HOSTILE_UIDS = ["../../etc/x", "1." * 5000 + "1", "1.2\x00.3", "/abs/path", "..", ""]


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(
        tmp_path / "spool",
        max_bytes=10**9,
        dead_letters=DeadLetterQueue(tmp_path / "deadletter", "importer"),
    )
    yield s
    s.close()


def received(tmp_path: Path, name: str = "rx", size: int = 1000) -> Path:
    """A file as the DIMSE layer leaves it: fully written, somewhere outside ready/."""
    path = tmp_path / f"{name}-{time.monotonic_ns()}.tmp"
    path.write_bytes(os.urandom(size))
    return path


def meta(uid: str | None = None) -> SpoolMeta:
    return SpoolMeta(sop_class_uid=CT, sop_instance_uid=generate_uid() if uid is None else uid)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_put_file_moves_the_file_into_ready_under_a_generated_name(
    spool: Spool, tmp_path: Path
) -> None:
    src = received(tmp_path)
    entry = spool.put_file(src, meta("1.2.3"))
    assert not src.exists()
    assert entry.path.parent == spool.ready_dir
    assert "1.2.3" not in entry.path.name
    assert (spool.depth(), spool.bytes_used) == (1, 1000)


@pytest.mark.parametrize(
    "uid", HOSTILE_UIDS, ids=["dotdot", "10000chars", "nul", "abs", "dots", "empty"]
)
def test_hostile_uids_never_leave_the_spool_directory(
    spool: Spool, tmp_path: Path, uid: str
) -> None:
    before = files_under(tmp_path)
    entry = spool.put_file(received(tmp_path), meta(uid))
    created = files_under(tmp_path) - before
    assert created == {entry.path}
    assert entry.path.parent == spool.ready_dir
    [claimed] = spool.claim_batch(10, 10**9)
    assert claimed.meta.sop_instance_uid == uid
    spool.complete(claimed)
    assert files_under(spool.ready_dir) == set()


def test_two_instances_with_one_sop_instance_uid_never_overwrite_each_other(
    spool: Spool, tmp_path: Path
) -> None:
    a = spool.put_file(received(tmp_path, "a"), meta("1.2.3"))
    b = spool.put_file(received(tmp_path, "b"), meta("1.2.3"))
    assert a.path != b.path and a.path.exists() and b.path.exists()
    first = spool.claim_batch(10, 10**9)
    assert first == [a]  # the same instance is never twice in one batch or in flight
    assert spool.claim_batch(10, 10**9) == []
    spool.complete(a)
    assert spool.claim_batch(10, 10**9) == [b]


def test_restart_resumes_ready_files_unclaimed_and_deletes_incomplete_ones(
    tmp_path: Path,
) -> None:
    files = make_ct_series(tmp_path / "src", 3, rows=16, cols=16)
    uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    s1 = Spool(tmp_path / "spool", max_bytes=10**9)
    for f in files:
        s1.put_file(f, read_spool_meta(f))
    assert len(s1.claim_batch(2, 10**9)) == 2  # claimed, then the process dies
    (s1.incoming_dir / "partial.dcm").write_bytes(b"half a data set")
    s1.close()

    s2 = Spool(tmp_path / "spool", max_bytes=10**9)
    try:
        assert list(s2.incoming_dir.iterdir()) == []
        batch = s2.claim_batch(10, 10**9)
        assert {e.meta.sop_instance_uid for e in batch} == uids
        assert all(e.meta.study_instance_uid for e in batch)
        assert s2.bytes_used == sum(f.stat().st_size for f in s2.ready_dir.iterdir())
    finally:
        s2.close()


def test_an_unreadable_file_found_at_start_is_dead_lettered_not_fatal(tmp_path: Path) -> None:
    ready = tmp_path / "spool" / "ready"
    ready.mkdir(parents=True)
    (ready / "00000000000000000001-deadbeef.dcm").write_bytes(b"not DICOM at all")
    dlq = DeadLetterQueue(tmp_path / "deadletter", "importer")
    s = Spool(tmp_path / "spool", max_bytes=10**9, dead_letters=dlq)
    try:
        assert s.depth() == 0
        [letter] = dlq.entries()
        assert "unreadable spool file" in letter.reason and letter.has_payload
    finally:
        s.close()


def test_a_second_process_cannot_open_the_same_spool(spool: Spool) -> None:
    with pytest.raises(RuntimeError, match="in use"):
        Spool(spool.path, max_bytes=10)


def test_budget_counts_spooled_bytes_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool", max_bytes=2500)
    try:
        s.put_file(received(tmp_path), meta())
        s.put_file(received(tmp_path), meta())
        assert not s.has_room(1000)
        src = received(tmp_path)
        with pytest.raises(SpoolFullError, match="2000 of 2500"):
            s.put_file(src, meta())
        assert src.exists()  # left for the caller
        [entry, _] = s.claim_batch(10, 10**9)
        s.complete(entry)
        assert s.has_room(1000) and s.bytes_used == 1000
    finally:
        s.close()


def test_min_free_bytes_floor_refuses_when_the_disk_is_nearly_full(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    s = Spool(tmp_path / "spool", max_bytes=10**15, min_free_bytes=st.f_bavail * st.f_frsize * 2)
    try:
        assert not s.has_room(1)
    finally:
        s.close()


def test_claim_batch_respects_count_and_bytes_but_always_takes_one(
    spool: Spool, tmp_path: Path
) -> None:
    for _ in range(5):
        spool.put_file(received(tmp_path, size=1000), meta())
    assert len(spool.claim_batch(2, 10**9)) == 2
    assert len(spool.claim_batch(10, 1500)) == 1
    assert len(spool.claim_batch(10, 10)) == 1  # bigger than the byte bound, still progress
    assert spool.claimed_count() == 4


def test_release_with_delay_hides_the_entry_until_its_time(spool: Spool, tmp_path: Path) -> None:
    entry = spool.put_file(received(tmp_path), meta())
    [claimed] = spool.claim_batch(1, 10**9)
    spool.release(claimed, delay=0.3)
    assert spool.claim_batch(1, 10**9) == []
    start = time.monotonic()
    assert spool.claim_batch(1, 10**9, timeout=5) == [entry]
    assert 0.2 < time.monotonic() - start < 2


def test_a_waiting_claimer_wakes_as_soon_as_a_file_arrives(spool: Spool, tmp_path: Path) -> None:
    got: list[float] = []

    def worker() -> None:
        if spool.claim_batch(1, 10**9, timeout=10):
            got.append(time.monotonic())

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.2)
    put_at = time.monotonic()
    spool.put_file(received(tmp_path), meta())
    thread.join(5)
    assert got and got[0] - put_at < 0.1


def test_linger_gathers_batch_mates_arriving_shortly_after(spool: Spool, tmp_path: Path) -> None:
    spool.put_file(received(tmp_path), meta())

    def more() -> None:
        for _ in range(3):
            time.sleep(0.02)
            spool.put_file(received(tmp_path), meta())

    thread = threading.Thread(target=more)
    thread.start()
    batch = spool.claim_batch(4, 10**9, timeout=1, linger=2.0)
    thread.join()
    assert len(batch) == 4  # ended as soon as the batch was full, not after 2 s


def test_concurrent_workers_never_claim_the_same_entry(spool: Spool, tmp_path: Path) -> None:
    for _ in range(200):
        spool.put_file(received(tmp_path, size=10), meta())
    seen: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while batch := spool.claim_batch(7, 10**9):
            with lock:
                seen.extend(e.id for e in batch)
            spool.complete(*batch)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == len(set(seen)) == 200
    assert spool.depth() == 0 and spool.bytes_used == 0
    assert list(spool.ready_dir.iterdir()) == []


def test_dead_letter_moves_the_file_with_its_reason(spool: Spool, tmp_path: Path) -> None:
    entry = spool.put_file(received(tmp_path), meta("1.2.3.4"))
    [claimed] = spool.claim_batch(1, 10**9)
    claimed.attempts = 3
    spool.dead_letter(claimed, {"reason": "store rejected it", "failure_reason": 0xC000})
    assert not entry.path.exists() and spool.depth() == 0
    assert spool.dead_letters is not None
    [letter] = spool.dead_letters.entries()
    assert (letter.sop_instance_uid, letter.failure_reason, letter.attempts) == (
        "1.2.3.4",
        0xC000,
        3,
    )
    assert spool.dead_letters.payload_path(letter) is not None


def test_a_requeued_dead_letter_is_picked_up_by_the_running_spool(
    spool: Spool, tmp_path: Path
) -> None:
    [f] = make_ct_series(tmp_path / "src", 1, rows=16, cols=16)
    adopt_into_spool(spool.path, f)  # what 'deadletters retry' does from another process
    assert spool.depth() == 0
    assert spool.rescan() == 1
    [entry] = spool.claim_batch(1, 10**9)
    assert entry.meta.sop_instance_uid == str(pydicom.dcmread(entry.path).SOPInstanceUID)


def test_depth_and_oldest_age_describe_the_backlog(spool: Spool, tmp_path: Path) -> None:
    assert (spool.depth(), spool.oldest_age()) == (0, 0.0)
    spool.put_file(received(tmp_path), meta())
    time.sleep(0.05)
    spool.put_file(received(tmp_path), meta())
    assert spool.depth() == 2
    assert 0.04 < spool.oldest_age() < 5
