"""STOW-RS / QIDO-RS / WADO-RS clients against a real Orthanc 1.10 + DICOMweb plugin, and the
plugin's quirks the clients rely on (see adapter/dicomweb/stow.py and wado.py docstrings)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from adapter.dicomweb.qido import QidoClient
from adapter.dicomweb.session import SessionSettings, build_session
from adapter.dicomweb.stow import StowClient, StowItem
from adapter.dicomweb.wado import WadoClient
from adapter.errors import PermanentError
from tests.peers.datasets import make_ct_series
from tests.peers.orthanc import OrthancPeer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    """A private Orthanc for this module, stopped by PID at the end."""
    orthanc = OrthancPeer(tmp_path_factory.mktemp("orthanc-dicomweb"), aet="DWTEST")
    orthanc.start()
    try:
        yield orthanc
    finally:
        orthanc.stop()


@pytest.fixture(scope="module")
def base_url(peer: OrthancPeer) -> str:
    return peer.dicomweb_url


@pytest.fixture(scope="module")
def stow(base_url: str) -> StowClient:
    return StowClient(build_session(SessionSettings(base_url, read_timeout=60)), base_url)


def _item(path: Path) -> StowItem:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return StowItem(path, ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID)


def _series(tmp_path: Path, n: int = 3, seed: int = 0) -> list[StowItem]:
    return [_item(p) for p in make_ct_series(tmp_path, n, rows=16, cols=16, seed=seed)]


def test_stow_batch_of_three_is_stored_and_found_by_qido(
    stow: StowClient, base_url: str, tmp_path: Path
) -> None:
    items = _series(tmp_path)
    outcomes = stow.store_instances(items)
    assert {uid: o.stored for uid, o in outcomes.items()} == {
        i.sop_instance_uid: True for i in items
    }
    assert all(o.retrieve_url and o.retrieve_url.endswith(uid) for uid, o in outcomes.items())
    qido = QidoClient(build_session(SessionSettings(base_url)), base_url)
    found = list(qido.search_for_instances(items[0].study_instance_uid))
    assert sorted(f["00080018"]["Value"][0] for f in found) == sorted(outcomes)


def test_wado_retrieve_gives_byte_equal_pixel_data_and_file(
    stow: StowClient, base_url: str, tmp_path: Path
) -> None:
    (item,) = _series(tmp_path / "src", n=1, seed=7)
    assert stow.store_instances([item])[item.sop_instance_uid].stored
    ds = pydicom.dcmread(item.path)
    wado = WadoClient(build_session(SessionSettings(base_url)), base_url)
    dest = wado.retrieve_instance(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, tmp_path / "out" / "got.dcm"
    )
    got = pydicom.dcmread(dest)
    assert got["PixelData"].value == ds["PixelData"].value
    assert dest.read_bytes() == item.path.read_bytes()  # Orthanc keeps the file as sent
    assert not dest.with_name(dest.name + ".part").exists()


def test_qido_paging_with_page_size_two_returns_all(
    stow: StowClient, base_url: str, tmp_path: Path
) -> None:
    items = _series(tmp_path, n=5, seed=3)
    stow.store_instances(items)
    qido = QidoClient(build_session(SessionSettings(base_url)), base_url, page_size=2)
    found = list(qido.search_for_instances(items[0].study_instance_uid))
    assert sorted(f["00080018"]["Value"][0] for f in found) == sorted(
        i.sop_instance_uid for i in items
    )
    studies = list(qido.search_for_studies(includefield=["PatientName"]))
    assert items[0].study_instance_uid in {s["0020000D"]["Value"][0] for s in studies}


def test_stow_with_a_non_dicom_part_fails_only_that_part(
    stow: StowClient, peer: OrthancPeer, tmp_path: Path
) -> None:
    (good,) = _series(tmp_path, n=1, seed=11)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not a DICOM file" * 20)
    bad = StowItem(junk, good.sop_class_uid, "1.2.826.0.1.3680043.8.498.999", None)
    outcomes = stow.store_instances([good, bad])  # Orthanc answers 400 naming the good one
    assert outcomes[good.sop_instance_uid].stored
    assert not outcomes[bad.sop_instance_uid].stored
    assert outcomes[bad.sop_instance_uid].failure_reason == 0xC000
    assert peer.find_instance_id(good.sop_instance_uid) is not None


def test_stow_of_only_non_dicom_parts_is_a_permanent_400(stow: StowClient, tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 300)
    with pytest.raises(PermanentError) as caught:
        stow.store_instances([StowItem(junk, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5")])
    assert (caught.value.http_status, caught.value.failure_reason) == (400, 0xC000)


def test_resent_duplicate_is_reported_stored_by_orthanc(stow: StowClient, tmp_path: Path) -> None:
    items = _series(tmp_path, n=2, seed=5)
    stow.store_instances(items)
    again = stow.store_instances(items)
    assert all(o.stored for o in again.values())


def test_stow_to_another_study_url_is_a_409_with_failure_reason(
    stow: StowClient, tmp_path: Path
) -> None:
    items = _series(tmp_path, n=2, seed=9)
    outcomes = stow.store_instances(items, study_instance_uid="1.2.3.4.5.6.7")
    assert {o.stored for o in outcomes.values()} == {False}
    assert {o.failure_reason for o in outcomes.values()} == {0x0110}


def test_delete_is_not_supported_by_orthanc_dicomweb(stow: StowClient, tmp_path: Path) -> None:
    (item,) = _series(tmp_path, n=1, seed=13)
    stow.store_instances([item])
    ds = pydicom.dcmread(item.path, stop_before_pixels=True)
    with pytest.raises(PermanentError, match="does not support deleting") as caught:
        stow.delete_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert caught.value.http_status == 405


def test_wado_of_unknown_instance_is_permanent_404(base_url: str, tmp_path: Path) -> None:
    wado = WadoClient(build_session(SessionSettings(base_url)), base_url)
    with pytest.raises(PermanentError, match="HTTP 404"):
        wado.retrieve_instance("1.2.3", "1.2.3.4", "1.2.3.4.5", tmp_path / "x.dcm")
    assert list(tmp_path.iterdir()) == []


def test_qido_with_no_match_is_empty(base_url: str) -> None:
    qido = QidoClient(build_session(SessionSettings(base_url)), base_url)
    assert list(qido.search_for_studies({"PatientID": "NO-SUCH-PATIENT"})) == []
