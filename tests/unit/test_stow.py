"""STOW-RS client against the loopback stub: request shape and every answer of PS3.18
Table 10.5.3-1 mapped to per-instance outcomes or to Transient/PermanentError."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from adapter.dicomweb.multipart import parse_content_type
from adapter.dicomweb.session import SessionSettings, build_session
from adapter.dicomweb.stow import InstanceOutcome, StowClient, StowItem
from adapter.errors import PermanentError, TransientError
from adapter.retry import RetryPolicy
from tests.peers.http_stub import HttpStub, StubResponse

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY = "1.2.3.4"
UIDS = ["1.2.3.4.5.1", "1.2.3.4.5.2", "1.2.3.4.5.3"]


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


@pytest.fixture
def client(stub: HttpStub) -> StowClient:
    return StowClient(build_session(SessionSettings(stub.url, read_timeout=5)), stub.url + "/dw/")


@pytest.fixture
def items(tmp_path: Path) -> list[StowItem]:
    result = []
    for n, uid in enumerate(UIDS):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(b"\0" * 128 + b"DICM" + uid.encode() * 10)
        result.append(StowItem(path, CT, uid, STUDY))
    return result


def _uid(tag: str, value: str) -> dict[str, Any]:
    return {tag: {"vr": "UI", "Value": [value]}}


def _response(
    stored: list[str] = (),  # type: ignore[assignment]
    failed: dict[str, int | None] | None = None,
    warnings: dict[str, int] | None = None,
) -> dict[str, Any]:
    referenced = []
    for uid in stored:
        entry = {
            **_uid("00081150", CT),
            **_uid("00081155", uid),
            "00081190": {"vr": "UR", "Value": [f"http://x/studies/{STUDY}/instances/{uid}"]},
        }
        if warnings and uid in warnings:
            entry["00081196"] = {"vr": "US", "Value": [warnings[uid]]}
        referenced.append(entry)
    failures = []
    for uid, reason in (failed or {}).items():
        entry = {**_uid("00081150", CT), **_uid("00081155", uid)}
        if reason is not None:
            entry["00081197"] = {"vr": "US", "Value": [reason]}
        failures.append(entry)
    body: dict[str, Any] = {"00081198": {"vr": "SQ"}, "00081199": {"vr": "SQ"}}
    if referenced:
        body["00081199"]["Value"] = referenced
    if failures:
        body["00081198"]["Value"] = failures
    return body


def _answer(status: int, payload: dict[str, Any], content_type: str | None = None) -> StubResponse:
    headers = {"Content-Type": content_type} if content_type else {}
    return StubResponse(status, headers, json.dumps(payload).encode())


# --------------------------------------------------------------------------- request shape
def test_batch_is_one_multipart_post_accepting_dicom_json(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(StubResponse.json(200, _response(stored=UIDS)))
    client.store_instances(items)
    (seen,) = stub.requests
    assert (seen.method, seen.path) == ("POST", "/dw/studies")
    assert seen.header("Accept") == "application/dicom+json"
    media, params = parse_content_type(seen.header("Content-Type") or "")
    assert media == "multipart/related"
    assert params["type"] == "application/dicom"
    assert seen.header("Content-Length") == str(len(seen.body))
    for item in items:
        assert item.path.read_bytes() in seen.body
    assert seen.body.count(b"Content-Type: application/dicom\r\n") == 3


def test_study_uid_goes_into_the_url(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(StubResponse.json(200, _response(stored=UIDS)))
    client.store_instances(items, study_instance_uid=STUDY)
    assert stub.requests[0].path == f"/dw/studies/{STUDY}"


def test_hostile_study_uid_never_reaches_the_url(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    with pytest.raises(PermanentError, match="invalid Study Instance UID"):
        client.store_instances(items, study_instance_uid="1.2/../../admin?x=")
    assert stub.requests == []


def test_missing_file_is_permanent_and_sends_nothing(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    items[1].path.unlink()
    with pytest.raises(PermanentError, match="cannot read"):
        client.store_instances(items)
    assert stub.requests == []


def test_empty_batch_sends_nothing(stub: HttpStub, client: StowClient) -> None:
    assert client.store_instances([]) == {}
    assert stub.requests == []


# --------------------------------------------------------------------------- per-instance outcomes
def test_200_marks_all_stored_with_retrieve_urls(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(StubResponse.json(200, _response(stored=UIDS)))
    outcomes = client.store_instances(items)
    assert set(outcomes) == set(UIDS)
    assert all(o.stored and o.failure_reason is None for o in outcomes.values())
    assert outcomes[UIDS[0]].retrieve_url == f"http://x/studies/{STUDY}/instances/{UIDS[0]}"


def test_instance_missing_from_a_200_that_lists_others_is_not_taken_as_stored(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    """Sending it again is harmless; believing the store has it could lose it."""
    stub.enqueue(StubResponse.json(200, _response(stored=UIDS[:1])))
    outcomes = client.store_instances(items)
    assert outcomes[UIDS[0]].stored
    assert not any(outcomes[u].stored for u in UIDS[1:])
    assert all(outcomes[u].failure_reason is None for u in UIDS[1:])  # retried, not rejected


def test_a_bare_200_means_every_instance_was_stored(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(StubResponse(200, {}, b""))
    outcomes = client.store_instances(items)
    assert all(o.stored for o in outcomes.values())


def test_partial_202_marks_only_failed_instance(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(
        StubResponse.json(
            202, _response(stored=UIDS[:2], failed={UIDS[2]: 0xA900}, warnings={UIDS[1]: 0xB000})
        )
    )
    outcomes = client.store_instances(items)
    assert outcomes[UIDS[0]] == InstanceOutcome(
        UIDS[0], True, retrieve_url=f"http://x/studies/{STUDY}/instances/{UIDS[0]}"
    )
    assert outcomes[UIDS[1]].stored
    assert outcomes[UIDS[1]].warning == "0xB000 coercion of data elements"
    assert outcomes[UIDS[2]] == InstanceOutcome(UIDS[2], False, failure_reason=0xA900)


def test_instance_missing_from_a_202_is_failed_without_reason(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(StubResponse.json(202, _response(stored=UIDS[:2])))
    outcome = client.store_instances(items)[UIDS[2]]
    assert not outcome.stored
    assert outcome.failure_reason is None
    assert outcome.warning and "202" in outcome.warning


def test_409_without_dicom_body_marks_all_duplicate(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    google_409 = {
        "error": {"code": 409, "message": "instance already exists", "status": "ALREADY_EXISTS"}
    }
    stub.enqueue(StubResponse.json(409, google_409, content_type="application/json"))
    outcomes = client.store_instances(items)
    assert all(not o.stored and o.failure_reason == 0x0111 for o in outcomes.values())
    assert "already exists" in (outcomes[UIDS[0]].warning or "")


def test_409_with_failed_sop_sequence_keeps_the_stores_reasons(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(_answer(409, _response(failed={UIDS[0]: 0x0110, UIDS[1]: None, UIDS[2]: 0x0111})))
    outcomes = client.store_instances(items)
    assert [outcomes[u].failure_reason for u in UIDS] == [0x0110, 0x0111, 0x0111]
    assert not any(o.stored for o in outcomes.values())


def test_orthanc_400_naming_stored_instances_is_read_per_instance(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    # Orthanc's DICOMweb plugin: 400 without Content-Type when one part is not DICOM; the good
    # instances are stored and listed.
    stub.enqueue(_answer(400, _response(stored=UIDS[:2])))
    outcomes = client.store_instances(items)
    assert outcomes[UIDS[0]].stored and outcomes[UIDS[1]].stored
    assert not outcomes[UIDS[2]].stored
    assert outcomes[UIDS[2]].failure_reason == 0xC000


# --------------------------------------------------------------------------- whole-batch errors
def test_400_naming_no_instance_is_permanent_cannot_understand(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(_answer(400, _response()))
    with pytest.raises(PermanentError) as caught:
        client.store_instances(items)
    assert (caught.value.http_status, caught.value.failure_reason) == (400, 0xC000)


def test_415_is_permanent(stub: HttpStub, client: StowClient, items: list[StowItem]) -> None:
    stub.enqueue(StubResponse(415, body=b"Unsupported media type"))
    with pytest.raises(PermanentError, match="HTTP 415"):
        client.store_instances(items)


def test_503_with_retry_after_is_transient(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(StubResponse(503, {"Retry-After": "12"}, b"overloaded"))
    with pytest.raises(TransientError) as caught:
        client.store_instances(items)
    assert (caught.value.http_status, caught.value.retry_after) == (503, 12)
    assert "overloaded" in str(caught.value)


def test_429_with_http_date_retry_after_is_transient(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)
    stub.enqueue(StubResponse(429, {"Retry-After": when}))
    with pytest.raises(TransientError) as caught:
        client.store_instances(items)
    assert caught.value.retry_after is not None and 30 < caught.value.retry_after <= 40


def test_dropped_connection_is_transient(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(StubResponse(drop=True))
    with pytest.raises(TransientError, match="connection"):
        client.store_instances(items)


def test_forbidden_is_permanent(stub: HttpStub, client: StowClient, items: list[StowItem]) -> None:
    stub.enqueue(StubResponse(403, body=b'{"error": {"status": "PERMISSION_DENIED"}}'))
    with pytest.raises(PermanentError, match=r"roles/healthcare\.dicomEditor"):
        client.store_instances(items)


def test_503_burst_then_success_resends_the_full_body_each_time(
    stub: HttpStub, client: StowClient, items: list[StowItem]
) -> None:
    stub.enqueue(
        StubResponse(503),
        StubResponse(503, {"Retry-After": "0"}),
        StubResponse.json(200, _response(stored=UIDS)),
    )
    retries: list[int] = []
    outcomes = RetryPolicy(initial_delay=0.01, jitter=False).call(
        lambda: client.store_instances(items), on_retry=lambda n, e, d: retries.append(n)
    )
    assert all(o.stored for o in outcomes.values())
    assert retries == [1, 2]
    assert len(stub.requests) == 3
    for seen in stub.requests:
        assert seen.body_size == int(seen.header("Content-Length") or 0)
        assert all(item.path.read_bytes() in seen.body for item in items)


# --------------------------------------------------------------------------- delete
def test_delete_instance_succeeds_on_2xx(stub: HttpStub, client: StowClient) -> None:
    stub.enqueue(StubResponse(204))
    client.delete_instance(STUDY, "1.2.3.4.9", UIDS[0])
    assert (stub.requests[0].method, stub.requests[0].path) == (
        "DELETE",
        f"/dw/studies/{STUDY}/series/1.2.3.4.9/instances/{UIDS[0]}",
    )


@pytest.mark.parametrize("status", [404, 405])
def test_delete_on_store_without_delete_support_is_permanent_and_says_so(
    stub: HttpStub, client: StowClient, status: int
) -> None:
    stub.enqueue(StubResponse(status, {"Allow": "GET"}))
    with pytest.raises(PermanentError, match="overwrite-on-409") as caught:
        client.delete_instance(STUDY, "1.2.3.4.9", UIDS[0])
    assert caught.value.http_status == status


def test_delete_validates_uids_before_sending(stub: HttpStub, client: StowClient) -> None:
    with pytest.raises(PermanentError, match="invalid Series Instance UID"):
        client.delete_instance(STUDY, "1.2.3/../x", UIDS[0])
    assert stub.requests == []
