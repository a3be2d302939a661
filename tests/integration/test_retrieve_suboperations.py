"""C-MOVE and C-GET when sub-operations fail (PS3.4 C.4.2.1.5, C.4.3.1.4, C.4.2.3.1): an
instance the store lists but cannot deliver (WADO-RS 404) is counted as a failed sub-operation,
the retrieve goes on, the final response has the right status, counts that add up and the Failed
SOP Instance UID List, nothing follows it, and dcmtk's movescu/getscu end cleanly.

Real dcmtk getscu/movescu/storescp; Orthanc holds the study behind a DICOMweb proxy that answers
404 for the instances a test chooses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
)

from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import StoreScpPeer, ToolResult, getscu, movescu
from tests.peers.dicomweb_proxy import DicomwebProxy
from tests.peers.orthanc import OrthancPeer

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
COUNT = 6


@pytest.fixture(scope="module")
def study(orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    files = make_ct_series(tmp_path_factory.mktemp("subops"), COUNT, rows=16, cols=16)
    for path in files:
        orthanc.upload_file(path)
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    return {"study_uid": str(first.StudyInstanceUID), "uids": uids}


@pytest.fixture(scope="module")
def proxy(orthanc: OrthancPeer) -> Iterator[DicomwebProxy]:
    with DicomwebProxy(orthanc.dicomweb_url) as p:
        yield p


@pytest.fixture
def failing(proxy: DicomwebProxy) -> Iterator[dict[str, int]]:
    proxy.fail_paths.clear()
    yield proxy.fail_paths
    proxy.fail_paths.clear()


@pytest.fixture(scope="module")
def storescp_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScpPeer]:
    peer = StoreScpPeer(tmp_path_factory.mktemp("movedest") / "in", aet="MOVEDEST")
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="module")
def adapter(
    proxy: DicomwebProxy, storescp_module: StoreScpPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    config = {
        "dicomweb": {"url": proxy.url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 1, "initial_delay": 0.1, "max_delay": 0.2},
        "importer": {
            "dimse": {"ae_title": AET},
            "move_destinations": [
                {"name": "MOVEDEST", "host": "127.0.0.1", "port": storescp_module.port},
                {"name": "NOBODY", "host": "127.0.0.1", "port": 9},  # nothing listens
            ],
        },
    }
    with AdapterProcess(config, tmp_path_factory.mktemp("subops-adapter")).start() as proc:
        yield proc


def responses(result: ToolResult) -> list[str]:
    """dcmtk's dumps (-d) of each C-GET/C-MOVE response, in order."""
    blocks = re.split(r"Message Type\s*: C-(?:GET|MOVE) RSP", result.output)[1:]
    return [b.split("END DIMSE MESSAGE")[0] for b in blocks]


def final_response(result: ToolResult) -> str:
    """The last response's dump and what dcmtk logged after it (the identifier, for movescu)."""
    text = result.output
    return text[text.rfind("C-GET RSP") if "C-GET RSP" in text else text.rfind("C-MOVE RSP") :]


def count(final: str, name: str) -> int:
    found = re.findall(rf"{name} Suboperations\s*:\s*(\d+)", final)
    assert found, final
    return int(found[-1])


def assert_clean_end(result: ToolResult) -> None:
    """Released normally after the final response (movescu exits 1 on a Warning status)."""
    out = result.output
    assert "Releasing Association" in out, out
    assert "Release Failed" not in out and "P-Data PDU arrived" not in out, out
    assert "Aborted" not in out, out
    assert not result.timed_out, out


def test_c_get_with_unfetchable_instances_counts_them_and_goes_on(
    adapter: AdapterProcess, study: dict[str, Any], failing: dict[str, int], tmp_path: Path
) -> None:
    missing = study["uids"][1:3]
    for uid in missing:
        failing[uid] = 404
    out = tmp_path / "get"
    result = getscu(
        adapter.port,
        {"StudyInstanceUID": study["study_uid"]},
        out,
        called_aet=AET,
        extra_args=["-d"],
    )
    assert_clean_end(result)
    got = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in out.iterdir()}
    assert got == set(study["uids"]) - set(missing)
    final = final_response(result)
    assert "0xb000" in final.lower(), final
    assert (count(final, "Completed"), count(final, "Failed"), count(final, "Warning")) == (4, 2, 0)
    assert result.ok, result.output


def test_c_get_pending_responses_carry_running_counts(
    adapter: AdapterProcess, study: dict[str, Any], failing: dict[str, int], tmp_path: Path
) -> None:
    failing[study["uids"][0]] = 404
    result = getscu(
        adapter.port,
        {"StudyInstanceUID": study["study_uid"]},
        tmp_path / "get",
        called_aet=AET,
        extra_args=["-d"],
    )
    assert_clean_end(result)
    pending = [r for r in responses(result) if "0xff00" in r]
    remaining = [count(r, "Remaining") for r in pending]
    assert remaining == list(range(COUNT - 1, -1, -1)), result.output
    done = [count(r, "Completed") + count(r, "Failed") + count(r, "Warning") for r in pending]
    assert done == list(range(1, COUNT + 1)), result.output  # the counts add up


def test_c_get_of_which_nothing_can_be_fetched_fails_with_a702(
    adapter: AdapterProcess, study: dict[str, Any], failing: dict[str, int], tmp_path: Path
) -> None:
    for uid in study["uids"]:  # WADO-RS of each instance; QIDO-RS still lists them
        failing[uid] = 404
    result = getscu(
        adapter.port,
        {"StudyInstanceUID": study["study_uid"]},
        tmp_path / "get",
        called_aet=AET,
        extra_args=["-d"],
    )
    assert_clean_end(result)
    final = final_response(result)
    assert "0xa702" in final.lower(), final  # Refused: unable to perform sub-operations
    assert (count(final, "Completed"), count(final, "Failed")) == (0, COUNT), final


def test_c_move_with_unfetchable_instances_counts_them_and_goes_on(
    adapter: AdapterProcess,
    study: dict[str, Any],
    failing: dict[str, int],
    storescp_module: StoreScpPeer,
) -> None:
    storescp_module.clear()
    missing = study["uids"][4]
    failing[missing] = 404
    result = movescu(
        adapter.port,
        {"StudyInstanceUID": study["study_uid"]},
        "MOVEDEST",
        called_aet=AET,
        extra_args=["-d"],
    )
    assert_clean_end(result)
    storescp_module.wait_for_files(COUNT - 1)
    assert storescp_module.received_sop_instance_uids() == set(study["uids"]) - {missing}
    final = final_response(result)
    assert "0xb000" in final.lower(), final
    assert (count(final, "Completed"), count(final, "Failed"), count(final, "Warning")) == (5, 1, 0)
    assert f"[{missing}]" in final and "FailedSOPInstanceUIDList" in final, final


def test_c_move_cancel_is_honoured(
    adapter: AdapterProcess, study: dict[str, Any], failing: dict[str, int]
) -> None:
    result = movescu(
        adapter.port,
        {"StudyInstanceUID": study["study_uid"]},
        "MOVEDEST",
        called_aet=AET,
        extra_args=["-d", "--cancel", "2"],
    )
    assert_clean_end(result)
    final = final_response(result)
    assert "0xfe00" in final.lower(), final
    assert count(final, "Completed") < COUNT, final


def test_c_move_to_an_unreachable_destination_fails_cleanly(
    adapter: AdapterProcess, study: dict[str, Any], failing: dict[str, int]
) -> None:
    result = movescu(
        adapter.port,
        {"StudyInstanceUID": study["study_uid"]},
        "NOBODY",
        called_aet=AET,
        extra_args=["-d"],
    )
    assert_clean_end(result)
    final = final_response(result)
    assert "0xa801" in final.lower(), final  # Refused: move destination unknown


def test_c_get_final_response_lists_the_failed_instances(
    adapter: AdapterProcess, study: dict[str, Any], failing: dict[str, int]
) -> None:
    """getscu never reads a C-GET-RSP identifier; a pynetdicom requestor does: the final
    response carries the Failed SOP Instance UID List (0008,0058)."""
    missing = study["uids"][5]
    failing[missing] = 404
    ae = AE(ae_title="PYGETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    role = build_role(CTImageStorage, scp_role=True)
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        adapter.port,
        ae_title=AET,
        ext_neg=[role],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study["study_uid"]
        answers = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    status, identifier = answers[-1]
    assert status.Status == 0xB000
    assert (
        status.NumberOfCompletedSuboperations,
        status.NumberOfFailedSuboperations,
        status.NumberOfWarningSuboperations,
    ) == (COUNT - 1, 1, 0)
    assert identifier is not None and identifier.FailedSOPInstanceUIDList == missing
    assert sorted(received) == sorted(set(study["uids"]) - {missing})
