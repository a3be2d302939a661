"""The test peers themselves work: Orthanc + DICOMweb, dcmtk, the Pub/Sub emulator."""

from __future__ import annotations

from collections.abc import Callable

import pydicom
import pytest

from tests.peers import dcmtk
from tests.peers.datasets import SampleSet
from tests.peers.orthanc import OrthancPeer
from tests.peers.pubsub import PubSubEmulator

pytestmark = pytest.mark.integration


def test_orthanc_answers_qido(orthanc: OrthancPeer) -> None:
    assert orthanc.dicomweb_url == f"http://127.0.0.1:{orthanc.http_port}/dicom-web"
    assert isinstance(orthanc.qido_studies(), list)
    assert dcmtk.echoscu(orthanc.dicom_port, called_aet=orthanc.aet).check().ok


def test_storescu_to_orthanc_all_found_by_qido(
    orthanc: OrthancPeer, sample_files: SampleSet
) -> None:
    result = dcmtk.storescu(orthanc.dicom_port, sample_files.files, called_aet=orthanc.aet)
    result.check()
    assert dcmtk.count_store_successes(result) == len(sample_files), result.output[-2000:]

    assert sample_files.uids <= orthanc.sop_instance_uids(sample_files.study_uid)
    # Stored byte for byte, in the transfer syntax it was sent in.
    jpeg_ls = sample_files.by_kind["jpeg-ls-lossless"]
    stored = orthanc.get_instance_file(sample_files.sop_instance_uids[jpeg_ls])
    assert stored == jpeg_ls.read_bytes()


def test_orthanc_restart_keeps_ports_and_data(
    orthanc_factory: Callable[..., OrthancPeer], sample_files: SampleSet
) -> None:
    peer = orthanc_factory(aet="RESTARTME")
    first = sample_files.by_kind["ct-explicit"]
    peer.upload_file(first)
    ports = (peer.http_port, peer.dicom_port)
    peer.stop()
    assert not peer.is_running
    peer.start()
    assert (peer.http_port, peer.dicom_port) == ports
    assert peer.instance_count() == 1
    peer.clear()
    assert peer.instance_count() == 0


def test_storescu_to_storescp(storescp: dcmtk.StoreScpPeer, sample_files: SampleSet) -> None:
    files = list(sample_files.files)
    result = dcmtk.storescu(storescp.port or 0, files, called_aet=storescp.aet).check()
    assert dcmtk.count_store_successes(result) == len(files)
    received = storescp.wait_for_files(len(files), timeout=10)
    assert storescp.received_sop_instance_uids() == {
        sample_files.sop_instance_uids[f] for f in files
    }
    # Bit-preserving: the transfer syntax is the one sent.
    by_uid = {sample_files.sop_instance_uids[f]: sample_files.transfer_syntaxes[f] for f in files}
    for path in received:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert str(ds.file_meta.TransferSyntaxUID) == by_uid[str(ds.SOPInstanceUID)]


def test_pubsub_emulator_round_trip(pubsub_emulator: PubSubEmulator) -> None:
    pubsub_emulator.create_topic("smoke-topic")
    pubsub_emulator.create_subscription(
        "smoke-sub",
        "smoke-topic",
        ack_deadline_seconds=10,
        dead_letter_topic="smoke-dlq",
        max_delivery_attempts=5,
    )
    pubsub_emulator.publish("smoke-topic", b"projects/p/instances/1.2.3", kind="smoke")
    messages = pubsub_emulator.pull("smoke-sub", timeout=20)
    assert [m.message.data for m in messages] == [b"projects/p/instances/1.2.3"]
    assert pubsub_emulator.attributes(messages[0]) == {"kind": "smoke"}
    assert pubsub_emulator.pull("smoke-sub", timeout=1, min_messages=0) == []
