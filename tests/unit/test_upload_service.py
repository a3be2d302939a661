"""The STOW-RS destination's delivery workers against a loopback STOW-RS stub: batching,
per-instance outcomes, retries with backoff, splitting a rejected batch, 409 policies,
after-upload verdicts, shutdown."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from adapter import cli
from adapter.deadletter import DeadLetterQueue
from adapter.delivery import DeliveryService
from adapter.destinations.dicomweb import StowDestination
from adapter.dicomweb.session import SessionSettings, build_session
from adapter.dicomweb.stow import StowClient
from adapter.pipeline.waiter import DeliveryWaiter, Verdict
from adapter.retry import RetryPolicy
from adapter.spool import Spool, SpoolEntry, SpoolMeta
from adapter.status import Status
from tests.peers.http_stub import HttpStub, RecordedRequest, StubResponse
from tests.peers.wait import wait_until

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY = "1.2.3.4"
SERIES = "1.2.3.4.5"


def _uid(tag: str, value: str) -> dict[str, Any]:
    return {tag: {"vr": "UI", "Value": [value]}}


def stow_answer(stored: list[str], failed: dict[str, int] | None = None) -> dict[str, Any]:
    """A Store Instances Response (PS3.18 Table 10.5.3-1)."""
    body: dict[str, Any] = {"00081198": {"vr": "SQ"}, "00081199": {"vr": "SQ"}}
    if stored:
        body["00081199"]["Value"] = [
            {**_uid("00081150", CT), **_uid("00081155", u)} for u in stored
        ]
    if failed:
        body["00081198"]["Value"] = [
            {**_uid("00081150", CT), **_uid("00081155", u), "00081197": {"vr": "US", "Value": [r]}}
            for u, r in failed.items()
        ]
    return body


def uids_in(request: RecordedRequest) -> list[str]:
    """The instances in a STOW body (each fake file carries its UID between markers)."""
    return list(dict.fromkeys(re.findall(r"<uid:([0-9.]+)>", request.body.decode("latin-1"))))


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(
        tmp_path / "spool",
        max_bytes=10**9,
        dead_letters=DeadLetterQueue(tmp_path / "deadletter", "importer"),
    )
    yield s
    s.close()


def write_instance(path: Path, uid: str) -> None:
    """A small Part-10 file whose bytes name its UID (so the stub can tell who is in a body)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CT, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.ImageComments = f"<uid:{uid}>"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(CT)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def spool_instances(
    spool: Spool, tmp_path: Path, n: int, waiter: Callable[[], DeliveryWaiter] | None = None
) -> list[SpoolEntry]:
    entries = []
    for _ in range(n):
        uid = generate_uid()
        src = tmp_path / f"rx-{uid}"
        write_instance(src, uid)
        meta = SpoolMeta(CT, uid, STUDY, SERIES, calling_ae="MODALITY")
        entries.append(spool.put_file(src, meta, waiter=waiter() if waiter else None))
    return entries


def make_service(
    stub: HttpStub,
    spool: Spool,
    *,
    attempts: int = 5,
    workers: int = 1,
    batch: int = 20,
    on_conflict: Literal["done", "overwrite"] = "done",
) -> DeliveryService:
    stow = StowClient(build_session(SessionSettings(stub.url, read_timeout=10)), stub.url)
    policy = RetryPolicy(max_attempts=attempts, initial_delay=0.05, max_delay=0.2, jitter=False)
    destination = StowDestination("store", stow, max_batch=batch, on_conflict=on_conflict)
    return DeliveryService("importer", spool, destination, policy, workers=workers, linger=0.0)


@pytest.fixture
def running(stub: HttpStub, spool: Spool) -> Iterator[Callable[..., DeliveryService]]:
    started: list[DeliveryService] = []

    def start(**kwargs: Any) -> DeliveryService:
        service = make_service(stub, spool, **kwargs)
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop(5)


def drained(spool: Spool) -> bool:
    return spool.depth() == 0


def test_one_stow_request_per_batch_and_stored_instances_leave_the_spool(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    entries = spool_instances(spool, tmp_path, 5)
    stub.handler = lambda r: StubResponse.json(200, stow_answer(uids_in(r)))
    running(batch=20)
    wait_until(lambda: drained(spool), 10, what="spool drained")
    assert len(stub.requests) == 1
    assert sorted(uids_in(stub.requests[0])) == sorted(e.sop_instance_uid for e in entries)
    assert stub.requests[0].path == "/studies"
    assert list(spool.ready_dir.iterdir()) == []


def test_a_worker_wakes_at_once_when_an_instance_arrives(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    stub.handler = lambda r: StubResponse.json(200, stow_answer(uids_in(r)))
    running()
    time.sleep(0.3)  # the worker is idle, waiting on the spool
    start = time.monotonic()
    spool_instances(spool, tmp_path, 1)
    wait_until(lambda: stub.requests, 5, interval=0.005, what="a STOW request")
    assert time.monotonic() - start < 0.25


def test_partial_202_stores_the_others_and_dead_letters_the_rejected_one(
    stub: HttpStub,
    spool: Spool,
    tmp_path: Path,
    running: Callable[..., DeliveryService],
    capsys: pytest.CaptureFixture[str],
) -> None:
    entries = spool_instances(spool, tmp_path, 3)
    bad = entries[1].sop_instance_uid
    stub.handler = lambda r: StubResponse.json(
        202, stow_answer([u for u in uids_in(r) if u != bad], {bad: 0xA900})
    )
    running()
    wait_until(lambda: drained(spool), 10, what="spool drained")
    assert spool.dead_letters is not None
    [letter] = spool.dead_letters.entries()
    assert (letter.sop_instance_uid, letter.failure_reason) == (bad, 0xA900)
    assert "FailureReason 0xA900" in letter.reason
    assert len(stub.requests) == 1  # the good ones were not sent again

    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "dicomweb": {"url": stub.url},
                "importer": {
                    "spool": {"path": str(spool.path)},
                    "dead_letter_path": str(spool.dead_letters.directory),
                },
            }
        )
    )
    assert cli.main(["deadletters", "list", "--config", str(site)]) == 0
    listing = capsys.readouterr().out
    assert bad in listing and "FailureReason 0xA900" in listing and "1 dead letter" in listing


def test_a_transient_failure_retries_the_batch_with_backoff_until_stored(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    spool_instances(spool, tmp_path, 2)
    stub.enqueue(StubResponse(503), StubResponse(503))
    stub.handler = lambda r: StubResponse.json(200, stow_answer(uids_in(r)))
    running()
    wait_until(lambda: drained(spool), 10, what="spool drained")
    assert len(stub.requests) == 3
    assert uids_in(stub.requests[0]) == uids_in(stub.requests[2])
    assert spool.dead_letters is not None and spool.dead_letters.entries() == []


def test_gives_up_after_max_attempts_and_dead_letters_with_the_last_error(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    [entry] = spool_instances(spool, tmp_path, 1)
    stub.default = StubResponse(503, {"Content-Type": "text/plain"}, b"overloaded")
    running(attempts=3)
    wait_until(lambda: drained(spool), 10, what="spool drained")
    assert len(stub.requests) == 3
    assert spool.dead_letters is not None
    [letter] = spool.dead_letters.entries()
    assert letter.sop_instance_uid == entry.sop_instance_uid
    assert (letter.attempts, letter.http_status) == (3, 503)
    assert letter.reason.startswith("gave up after 3 attempts")


def test_a_whole_batch_rejection_is_split_to_dead_letter_only_the_bad_instance(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    entries = spool_instances(spool, tmp_path, 4)
    bad = entries[2].sop_instance_uid

    def answer(request: RecordedRequest) -> StubResponse:
        if bad in uids_in(request):
            return StubResponse(400, {"Content-Type": "text/plain"}, b"bad request")
        return StubResponse.json(200, stow_answer(uids_in(request)))

    stub.handler = answer
    running()
    wait_until(lambda: drained(spool), 10, what="spool drained")
    assert spool.dead_letters is not None
    [letter] = spool.dead_letters.entries()
    assert (letter.sop_instance_uid, letter.http_status) == (bad, 400)
    stored = {u for r in stub.requests[1:] if r.method == "POST" for u in uids_in(r)} - {bad}
    assert stored == {e.sop_instance_uid for e in entries} - {bad}


def test_an_instance_already_in_the_store_counts_as_delivered_by_default(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    [entry] = spool_instances(spool, tmp_path, 1)
    stub.handler = lambda r: StubResponse.json(
        409, stow_answer([], {entry.sop_instance_uid: 0x0111})
    )
    running()
    wait_until(lambda: drained(spool), 10, what="spool drained")
    assert spool.dead_letters is not None and spool.dead_letters.entries() == []
    assert len(stub.requests) == 1


def test_overwrite_policy_deletes_the_stored_copy_then_stores_again(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    [entry] = spool_instances(spool, tmp_path, 1)
    uid = entry.sop_instance_uid
    stub.enqueue(StubResponse.json(409, stow_answer([], {uid: 0x0111})), StubResponse(204))
    stub.handler = lambda r: StubResponse.json(200, stow_answer(uids_in(r)))
    running(on_conflict="overwrite")
    wait_until(lambda: drained(spool), 10, what="spool drained")
    assert [r.method for r in stub.requests] == ["POST", "DELETE", "POST"]
    assert stub.requests[1].path == f"/studies/{STUDY}/series/{SERIES}/instances/{uid}"


def test_after_upload_waiters_get_the_status_the_sender_should_see(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    def waiter() -> DeliveryWaiter:
        w = DeliveryWaiter("delivered", deadline=time.monotonic() + 30)
        w.expect(["store"])
        return w

    good, bad = spool_instances(spool, tmp_path, 2, waiter=waiter)
    stub.handler = lambda r: StubResponse.json(
        202,
        stow_answer(
            [u for u in uids_in(r) if u != bad.sop_instance_uid], {bad.sop_instance_uid: 0xC000}
        ),
    )
    running()
    assert good.waiter is not None and bad.waiter is not None
    assert good.waiter.wait(10) == Verdict(Status.SUCCESS)
    verdict = bad.waiter.wait(10)
    assert verdict is not None and verdict.status == Status.CANNOT_UNDERSTAND
    assert verdict.comment == "store rejected it: FailureReason 0xC000"


def test_after_upload_with_the_store_down_answers_out_of_resources_and_drops_the_copy(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    def waiter() -> DeliveryWaiter:
        w = DeliveryWaiter("delivered", deadline=time.monotonic() + 30)
        w.expect(["store"])
        return w

    [entry] = spool_instances(spool, tmp_path, 1, waiter=waiter)
    stub.default = StubResponse(503)
    running(attempts=2)
    assert entry.waiter is not None
    verdict = entry.waiter.wait(10)
    assert verdict is not None and verdict.status == Status.REFUSED_OUT_OF_RESOURCES
    assert verdict.comment is not None and verdict.comment.startswith("store unavailable")
    assert drained(spool)  # the sender still has it and will send it again
    assert spool.dead_letters is not None and spool.dead_letters.entries() == []


def test_stop_lets_the_batch_in_flight_finish_and_keeps_the_rest_spooled(
    stub: HttpStub, spool: Spool, tmp_path: Path
) -> None:
    spool_instances(spool, tmp_path, 5)
    stub.handler = lambda r: StubResponse(
        200,
        {"Content-Type": "application/dicom+json"},
        json.dumps(stow_answer(uids_in(r))).encode(),
        delay=0.5,
    )
    service = make_service(stub, spool, batch=2)
    service.start()
    wait_until(lambda: stub.requests, 5, what="first request")
    service.stop(timeout=5)
    assert len(stub.requests) == 1
    assert spool.depth() == 3  # the in-flight batch was stored; the rest waits on disk
    assert spool.claimed_count() == 0


def test_workers_resume_everything_the_spool_held_at_start(stub: HttpStub, tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool", max_bytes=10**9)
    entries = spool_instances(first, tmp_path, 30)
    first.close()  # as after a crash: nothing claimed survives
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    stub.handler = lambda r: StubResponse.json(200, stow_answer(uids_in(r)))
    service = make_service(stub, spool, workers=3, batch=7)
    service.start()
    try:
        wait_until(lambda: drained(spool), 10, what="spool drained")
    finally:
        service.stop(5)
        spool.close()
    sent = [u for r in stub.requests for u in uids_in(r)]
    assert sorted(sent) == sorted(e.sop_instance_uid for e in entries)  # each exactly once
    assert max(len(uids_in(r)) for r in stub.requests) <= 7


def test_concurrent_workers_upload_in_parallel(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def slow(request: RecordedRequest) -> StubResponse:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.2)
        with lock:
            in_flight -= 1
        return StubResponse.json(200, stow_answer(uids_in(request)))

    stub.handler = slow
    spool_instances(spool, tmp_path, 8)
    running(workers=4, batch=2)
    wait_until(lambda: drained(spool), 10, what="spool drained")
    assert peak == 4


def test_a_store_refusing_the_adapter_itself_is_retried_not_dead_lettered(
    stub: HttpStub, spool: Spool, tmp_path: Path, running: Callable[..., DeliveryService]
) -> None:
    """401/403/404 blame our credentials or URL, not the instances: no split, no dead letters
    while the operator fixes the configuration."""
    spool_instances(spool, tmp_path, 3)
    stub.enqueue(StubResponse(401), StubResponse(403))
    stub.handler = lambda r: StubResponse.json(200, stow_answer(uids_in(r)))
    running()
    wait_until(lambda: drained(spool), 10, what="spool drained")
    assert len(stub.requests) == 3  # the same batch three times, never split
    assert spool.dead_letters is not None and spool.dead_letters.entries() == []
