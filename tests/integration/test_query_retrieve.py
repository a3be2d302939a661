"""C-FIND, C-MOVE, C-GET and storage commitment against the adapter, answered from the store.

Real dcmtk findscu/movescu/getscu and storescp; Orthanc holds the instances; the adapter runs as
operators run it. Storage commitment has no dcmtk tool: a pynetdicom AE plays the requester.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import StoreScpPeer, count_find_responses, findscu, getscu, movescu
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five small CT instances stored straight into Orthanc (the 'cloud' store)."""
    files = make_ct_series(tmp_path_factory.mktemp("qr-study"), 5, rows=32, cols=32)
    for path in files:
        orthanc.upload_file(path)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    return {
        "files": files,
        "study_uid": str(first.StudyInstanceUID),
        "series_uid": str(first.SeriesInstanceUID),
        "by_uid": {
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files
        },
    }


@pytest.fixture
def adapter(
    orthanc: OrthancPeer, storescp: StoreScpPeer, tmp_path: Path, study: dict[str, Any]
) -> Iterator[tuple[AdapterProcess, int]]:
    commit_port = free_port()
    config = {
        "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
        "importer": {
            "dimse": {"ae_title": "IMPORTADAPTER"},
            "query": {"page_size": 2, "commitment_wait": 5},
            "move_destinations": [
                {"name": storescp.aet, "host": "127.0.0.1", "port": storescp.port},
                {"name": "COMMITSCU", "host": "127.0.0.1", "port": commit_port},
            ],
        },
    }
    with AdapterProcess(config, tmp_path).start() as proc:
        yield proc, commit_port


def test_c_find_returns_every_match_across_qido_pages(
    adapter: tuple[AdapterProcess, int], study: dict[str, Any]
) -> None:
    proc, _ = adapter
    result = findscu(
        proc.port,
        {
            "StudyInstanceUID": study["study_uid"],
            "SeriesInstanceUID": study["series_uid"],
            "SOPInstanceUID": "",
        },
        level="IMAGE",
        called_aet="IMPORTADAPTER",
    )
    assert result.ok, result.output
    assert count_find_responses(result) == 5  # page size 2: three QIDO pages, nothing truncated


def test_c_find_study_level_returns_requested_keys(
    adapter: tuple[AdapterProcess, int], study: dict[str, Any], tmp_path: Path
) -> None:
    proc, _ = adapter
    out = tmp_path / "rsp"
    result = findscu(
        proc.port,
        {"StudyInstanceUID": study["study_uid"], "PatientID": ""},
        level="STUDY",
        called_aet="IMPORTADAPTER",
        output_dir=out,
    )
    assert result.ok, result.output
    responses = sorted(out.glob("rsp*.dcm"))
    assert len(responses) == 1
    ds = pydicom.dcmread(responses[0])
    assert ds.StudyInstanceUID == study["study_uid"] and ds.QueryRetrieveLevel == "STUDY"


def test_c_find_with_a_bad_level_fails_precisely(adapter: tuple[AdapterProcess, int]) -> None:
    proc, _ = adapter
    result = findscu(proc.port, {"PatientID": "*"}, level="FRAME", called_aet="IMPORTADAPTER")
    assert count_find_responses(result) == 0
    out = result.output.lower()
    assert "a900" in out or "datasetdoesnotmatchsopclass" in out, result.output


def test_c_move_sends_the_study_byte_equal_to_the_destination(
    adapter: tuple[AdapterProcess, int], study: dict[str, Any], storescp: StoreScpPeer
) -> None:
    proc, _ = adapter
    result = movescu(
        proc.port,
        {"StudyInstanceUID": study["study_uid"]},
        storescp.aet,
        called_aet="IMPORTADAPTER",
    )
    assert result.ok, result.output
    received = storescp.wait_for_files(5)
    assert storescp.received_sop_instance_uids() == set(study["by_uid"])
    for path in received:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        original = pydicom.dcmread(study["by_uid"][uid])
        assert pydicom.dcmread(path).PixelData == original.PixelData


def test_c_move_to_an_unknown_destination_is_refused(
    adapter: tuple[AdapterProcess, int], study: dict[str, Any]
) -> None:
    proc, _ = adapter
    result = movescu(
        proc.port, {"StudyInstanceUID": study["study_uid"]}, "NOSUCHAE", called_aet="IMPORTADAPTER"
    )
    assert "refused: movedestinationunknown" in result.output.lower(), result.output


def test_c_get_returns_the_series_on_the_same_association(
    adapter: tuple[AdapterProcess, int], study: dict[str, Any], tmp_path: Path
) -> None:
    proc, _ = adapter
    out = tmp_path / "get"
    result = getscu(
        proc.port,
        {"StudyInstanceUID": study["study_uid"], "SeriesInstanceUID": study["series_uid"]},
        out,
        level="SERIES",
        called_aet="IMPORTADAPTER",
    )
    assert result.ok, result.output
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in out.iterdir()}
    assert uids == set(study["by_uid"]), result.output + proc.log_text()[-3000:]


def test_storage_commitment_commits_stored_and_fails_unknown_instances(
    adapter: tuple[AdapterProcess, int], study: dict[str, Any]
) -> None:
    proc, commit_port = adapter
    reports: list[Dataset] = []
    got = threading.Event()

    def on_event_report(event: Any) -> int:
        reports.append(event.event_information)
        got.set()
        return 0x0000

    listener = AE(ae_title="COMMITSCU")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listener.start_server(
        ("127.0.0.1", commit_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event_report)],
    )
    try:
        stored_uid = next(iter(study["by_uid"]))
        unknown_uid = generate_uid()
        request = Dataset()
        request.TransactionUID = generate_uid()
        request.ReferencedSOPSequence = []
        for uid in (stored_uid, unknown_uid):
            item = Dataset()
            item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            item.ReferencedSOPInstanceUID = uid
            request.ReferencedSOPSequence.append(item)
        requester = AE(ae_title="COMMITSCU")
        requester.add_requested_context(StorageCommitmentPushModel)
        assoc = requester.associate(
            "127.0.0.1",
            proc.port,
            ae_title="IMPORTADAPTER",
            ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True)],
        )
        assert assoc.is_established
        status, _ = assoc.send_n_action(
            request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
        )
        assoc.release()
        assert status.Status == 0x0000
        wait_until(got.is_set, timeout=30, what="the N-EVENT-REPORT")
        report = reports[0]
        assert report.TransactionUID == request.TransactionUID
        assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [stored_uid]
        failed = report.FailedSOPSequence
        assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in failed] == [
            (unknown_uid, 0x0112)
        ]
    finally:
        server.shutdown()


def test_storage_commitment_report_names_the_retrieve_ae_and_is_retried(
    adapter: tuple[AdapterProcess, int], study: dict[str, Any]
) -> None:
    """The requester is not listening when the report is due: the adapter tries again on a new
    association (the Java adapter gave up); each committed item names the Retrieve AE Title."""
    proc, commit_port = adapter
    reports: list[Dataset] = []
    got = threading.Event()

    def on_event_report(event: Any) -> int:
        reports.append(event.event_information)
        got.set()
        return 0x0000

    stored = list(study["by_uid"])[:2]
    request = Dataset()
    request.TransactionUID = generate_uid()
    request.ReferencedSOPSequence = []
    for uid in stored:
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = uid
        request.ReferencedSOPSequence.append(item)
    requester = AE(ae_title="COMMITSCU")
    requester.add_requested_context(StorageCommitmentPushModel)
    assoc = requester.associate(
        "127.0.0.1",
        proc.port,
        ae_title="IMPORTADAPTER",
        ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True)],
    )
    assert assoc.is_established
    status, _ = assoc.send_n_action(
        request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
    )
    assoc.release()
    assert status.Status == 0x0000
    proc.wait_for_log(r"report attempt 1 of \d+ failed", timeout=30)
    listener = AE(ae_title="COMMITSCU")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listener.start_server(
        ("127.0.0.1", commit_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event_report)],
    )
    try:
        wait_until(got.is_set, timeout=30, what="the retried N-EVENT-REPORT")
        [report] = [r for r in reports if r.TransactionUID == request.TransactionUID]
        items = report.ReferencedSOPSequence
        assert sorted(i.ReferencedSOPInstanceUID for i in items) == sorted(stored)
        assert all(i.RetrieveAETitle == "IMPORTADAPTER" for i in items)
        assert report.RetrieveAETitle == "IMPORTADAPTER"
        assert "FailedSOPSequence" not in report
    finally:
        server.shutdown()
