"""The import path end to end: real dcmtk senders -> the adapter (a subprocess, as deployed)
-> Orthanc's STOW-RS; checked the way a user would, with QIDO-RS and the stored files."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import SampleSet, make_ct_series, make_sample_set
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port
from tests.peers.raw_scu import raw_c_store
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def site(orthanc_url: str, **importer: Any) -> dict[str, Any]:
    """A site config: this Orthanc as the store, quick retries, the importer section given."""
    return {
        "dicomweb": {"url": orthanc_url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 1.0},
        "importer": {"dimse": {"ae_title": AET}, **importer},
    }


@pytest.fixture
def start_adapter(tmp_path: Path) -> Iterator[Callable[..., AdapterProcess]]:
    started: list[AdapterProcess] = []

    def start(config: dict[str, Any] | None = None, **kwargs: Any) -> AdapterProcess:
        proc = AdapterProcess(config, tmp_path, name=f"adapter{len(started)}", **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.terminate()


@pytest.fixture
def samples(tmp_path: Path) -> SampleSet:
    """Fresh UIDs per test (the session Orthanc is shared): CT, MR implicit, RGB SC, JPEG
    lossless/baseline, JPEG-LS, RLE, deflate."""
    return make_sample_set(tmp_path / "samples")


def wait_in_store(orthanc: OrthancPeer, uids: set[str], timeout: float = 30.0) -> None:
    wait_until(
        lambda: uids <= orthanc.sop_instance_uids(),
        timeout,
        interval=0.2,
        what=f"{len(uids)} instances in Orthanc (QIDO-RS)",
    )


def assert_stored_as_sent(orthanc: OrthancPeer, samples: SampleSet, converted_ok: bool) -> None:
    """Same transfer syntax (uncompressed may be re-encoded by the sender when
    ``converted_ok``) and byte-equal Pixel Data, for every file."""
    for path in samples.files:
        sent = pydicom.dcmread(path)
        stored = pydicom.dcmread(
            io.BytesIO(orthanc.get_instance_file(samples.sop_instance_uids[path]))
        )
        sent_ts, stored_ts = sent.file_meta.TransferSyntaxUID, stored.file_meta.TransferSyntaxUID
        if not (converted_ok and sent_ts in UNCOMPRESSED and stored_ts in UNCOMPRESSED):
            assert stored_ts == sent_ts, f"{path.name}: stored as {stored_ts.name}"
        assert stored.PixelData == sent.PixelData, f"{path.name}: pixel data differs"


def test_dcmsend_delivers_every_sop_class_and_syntax_with_identical_pixel_data(
    orthanc: OrthancPeer, samples: SampleSet, start_adapter: Callable[..., AdapterProcess]
) -> None:
    adapter = start_adapter(site(orthanc.dicomweb_url))
    result = dcmtk.dcmsend(adapter.port, samples.files, called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == len(samples.files)
    wait_in_store(orthanc, samples.uids)
    # dcmsend proposes Explicit VR LE first for an Implicit VR file and re-encodes it itself;
    # every compressed (and deflated) file arrives and is stored in its own syntax.
    assert_stored_as_sent(orthanc, samples, converted_ok=True)


def test_storescu_delivers_every_file_in_its_own_transfer_syntax(
    orthanc: OrthancPeer, samples: SampleSet, start_adapter: Callable[..., AdapterProcess]
) -> None:
    adapter = start_adapter(site(orthanc.dicomweb_url))
    result = dcmtk.storescu(adapter.port, samples.files, called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == len(samples.files)
    wait_in_store(orthanc, samples.uids)
    assert_stored_as_sent(orthanc, samples, converted_ok=False)


def test_the_gke_guides_legacy_flags_import_end_to_end(
    orthanc: OrthancPeer, tmp_path: Path, start_adapter: Callable[..., AdapterProcess]
) -> None:
    port = free_port()
    wait_until(lambda: not _listening(8080), 30, what="port 8080 (legacy health) to be free")
    adapter = start_adapter(
        argv=[
            f"--dimse_aet={AET}",
            f"--dimse_port={port}",
            f"--dicomweb_address={orthanc.dicomweb_url}",
        ],
        dimse_port=port,
    )
    files = make_ct_series(tmp_path / "ct", 2, rows=32, cols=32)
    result = dcmtk.dcmsend(adapter.port, files, called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == 2
    # without a persistent location the Java semantics hold: answered after the upload
    uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    assert uids <= orthanc.sop_instance_uids()


def _listening(port: int) -> bool:
    from tests.peers.ports import is_listening

    return is_listening(port)


def test_an_unknown_calling_ae_is_rejected_when_an_allow_list_is_set(
    orthanc: OrthancPeer, start_adapter: Callable[..., AdapterProcess]
) -> None:
    adapter = start_adapter(
        site(orthanc.dicomweb_url, dimse={"ae_title": AET, "allowed_calling_aets": ["GOODPACS"]})
    )
    refused = dcmtk.echoscu(adapter.port, aet="INTRUDER", called_aet=AET)
    assert not refused.ok
    assert "Calling AE Title Not Recognized" in refused.output
    assert dcmtk.echoscu(adapter.port, aet="GOODPACS", called_aet=AET).ok
    adapter.wait_for_log("association rejected: calling AE title not recognized")
    [record] = [r for r in adapter.log_records() if r["message"].startswith("association rej")]
    assert record["calling_ae"] == "INTRUDER" and record["peer"].startswith("127.0.0.1:")


def test_an_unreachable_store_with_ack_after_upload_answers_out_of_resources(
    tmp_path: Path, start_adapter: Callable[..., AdapterProcess]
) -> None:
    config = site(f"http://127.0.0.1:{free_port()}/dicom-web", ack="after-upload")
    config["retry"] = {"max_attempts": 2, "initial_delay": 0.1, "max_delay": 0.2}
    adapter = start_adapter(config)
    [file] = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)
    result = dcmtk.storescu(adapter.port, [file], called_aet=AET)
    assert dcmtk.store_response_statuses(result) == ["Refused: OutOfResources"], result.output
    uid = str(pydicom.dcmread(file).SOPInstanceUID)
    adapter.wait_for_log("C-STORE refused")
    [record] = [r for r in adapter.log_records() if r["message"].startswith("C-STORE refused")]
    assert record["status"] == "0xA700" and record["sop_instance_uid"] == uid
    assert record["calling_ae"] == "STORESCU" and "store unavailable" in record["message"]
    assert list((adapter.workdir / "spool" / "ready").iterdir()) == []  # the sender has it


def test_a_malformed_data_set_is_refused_and_the_importer_keeps_serving(
    orthanc: OrthancPeer, tmp_path: Path, start_adapter: Callable[..., AdapterProcess]
) -> None:
    adapter = start_adapter(site(orthanc.dicomweb_url))
    [good] = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)
    ds = pydicom.dcmread(good)
    garbage = raw_c_store(
        adapter.port, ds.SOPClassUID, "1.2.3.4.5.6", b"\x07" * 3000, called_aet=AET
    )
    assert garbage.status == 0xC000
    assert garbage.error_comment == "data set has no SOP Instance UID"

    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_dataset(encoded, ds)
    truncated = raw_c_store(
        adapter.port,
        ds.SOPClassUID,
        ds.SOPInstanceUID,
        encoded.getvalue()[:-500],
        transfer_syntax=ExplicitVRLittleEndian,
        called_aet=AET,
    )
    assert truncated.status == 0xC000
    assert truncated.error_comment is not None and "truncated" in truncated.error_comment

    dcmtk.dcmsend(adapter.port, [good], called_aet=AET).check()
    wait_in_store(orthanc, {str(ds.SOPInstanceUID)})
    assert adapter.is_running
