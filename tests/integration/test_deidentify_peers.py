"""De-identification with real peers: the importer (a subprocess) started with the Java
--redact_* flags or a YAML site with a deidentify stage, dcmtk senders, Orthanc checked for
what it holds (Java-style UIDs, the listed attributes emptied, pixels untouched), dcmdump on
every stored file, and a study's UIDs consistent across a restart and two importers."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from adapter.stages.deid_uids import name_based_uid
from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess, legacy_health_env
from tests.peers.datasets import compress, make_ct_series, make_mr_instance, make_secondary_capture
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
CLI = [sys.executable, "-m", "adapter.cli"]
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
#: The processing flags of the legacy run; transcoding (--store_compress_to_transfer_syntax)
#: is appended here when it lands: the checks below hold for either.
LEGACY_FLAGS = ["--redact_remove_list=ContentTime,ContentDate"]


def colour_us_jpeg(directory: Path) -> Path:
    """A colour ultrasound image in JPEG Baseline (no Burned In Annotation: the Java mode
    passes it; the basic profile's default policy would quarantine it)."""
    source = make_secondary_capture(directory / "src", seed=21)
    ds = pydicom.dcmread(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_IMAGE
    ds.Modality = "US"
    ds.ContentDate, ds.ContentTime = "20200101", "101010"
    ds.save_as(source, enforce_file_format=True)
    out = directory / "us-jpeg.dcm"
    compress(source, out, "jpeg-baseline")
    return out


def header(path: Path | bytes) -> pydicom.Dataset:
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    return pydicom.dcmread(source, stop_before_pixels=True)


def dcmdump_reads(data: bytes, where: Path) -> None:
    where.write_bytes(data)
    result = dcmtk.run_tool("dcmdump", [where])
    assert result.ok and "E:" not in result.output, result.output[-500:]


@pytest.fixture
def start_legacy(tmp_path: Path) -> Iterator[Callable[..., AdapterProcess]]:
    started: list[AdapterProcess] = []

    def start(*flags: str) -> AdapterProcess:
        port = free_port()
        argv = [
            f"--dimse_aet={AET}",
            f"--dimse_port={port}",
            f"--persistent_file_storage_location={tmp_path / 'legacy' / 'spool'}",
            *flags,
        ]
        env = legacy_health_env()
        proc = AdapterProcess(None, tmp_path, argv=argv, dimse_port=port, name="legacy", env=env)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.terminate()


J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
COMPRESS = f"--store_compress_to_transfer_syntax={J2K_LOSSLESS}"


@pytest.mark.parametrize("compress", [False, True], ids=["redact", "redact+compress"])
def test_java_redact_flags_store_java_uids_and_emptied_attributes(
    orthanc: OrthancPeer,
    start_legacy: Callable[..., AdapterProcess],
    tmp_path: Path,
    compress: bool,
) -> None:
    """Issue #10's test: with --store_compress_to_transfer_syntax too, Orthanc holds JPEG 2000
    lossless instances under the Java-style UIDs, decoded pixels equal to the source's."""
    [ct] = make_ct_series(tmp_path / "ct", 1, rows=64, cols=64)
    mr = make_mr_instance(tmp_path / "mr")  # Implicit VR Little Endian
    us = colour_us_jpeg(tmp_path / "us")
    flags = [*LEGACY_FLAGS, COMPRESS] if compress else LEGACY_FLAGS
    adapter = start_legacy(f"--dicomweb_address={orthanc.dicomweb_url}", *flags)
    result = dcmtk.dcmsend(adapter.port, [ct, mr, us], called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == 3  # answered after the upload (Java)
    for sent in (ct, mr, us):
        original = pydicom.dcmread(sent)
        new_uid = name_based_uid(str(original.SOPInstanceUID))
        assert new_uid in orthanc.sop_instance_uids()
        assert str(original.SOPInstanceUID) not in orthanc.sop_instance_uids()
        data = orthanc.get_instance_file(new_uid)
        stored = pydicom.dcmread(io.BytesIO(data))
        assert stored.StudyInstanceUID == name_based_uid(str(original.StudyInstanceUID))
        assert stored.SeriesInstanceUID == name_based_uid(str(original.SeriesInstanceUID))
        assert stored.file_meta.MediaStorageSOPInstanceUID == new_uid
        for keyword in ("ContentDate", "ContentTime"):  # dcm4che setNull: present, empty
            assert keyword in stored and stored[keyword].value in ("", None), keyword
        assert stored.PatientName == original.PatientName  # not on the list: untouched
        assert stored.PatientID == original.PatientID
        if compress:  # de-identified, then transcoded (the Java order)
            assert stored.file_meta.TransferSyntaxUID == J2K_LOSSLESS, sent.name
            assert np.array_equal(stored.pixel_array, original.pixel_array), sent.name
        elif stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID:
            assert stored.PixelData == original.PixelData, sent.name
        dcmdump_reads(data, tmp_path / f"stored-{sent.name}")


def basic_site(url: str, **importer: Any) -> dict[str, Any]:
    return {
        "dicomweb": {"url": url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 0.5},
        "log": {"level": "DEBUG"},
        "stages": {"research": {"kind": "deidentify"}},
        "importer": {
            "dimse": {"ae_title": AET},
            "routing": {"default_stages": ["research"]},
            **importer,
        },
    }


def test_a_study_keeps_its_uids_across_a_restart_and_two_importers(
    orthanc: OrthancPeer, tmp_path: Path
) -> None:
    study = pydicom.uid.generate_uid()
    files = make_ct_series(tmp_path / "ct", 6, rows=32, cols=32, study_uid=study)
    new_study = name_based_uid(study)
    first = AdapterProcess(basic_site(orthanc.dicomweb_url), tmp_path, name="one").start()
    second = AdapterProcess(basic_site(orthanc.dicomweb_url), tmp_path, name="two").start()
    try:
        assert dcmtk.count_store_successes(dcmtk.storescu(first.port, files[:2], called_aet=AET))
        assert dcmtk.count_store_successes(dcmtk.storescu(second.port, files[2:4], called_aet=AET))
        first.terminate()
        first.start()  # a restart: nothing is remembered, the rule is a function
        assert dcmtk.count_store_successes(dcmtk.storescu(first.port, files[4:], called_aet=AET))
        wanted = {name_based_uid(str(header(f).SOPInstanceUID)) for f in files}
        wait_until(
            lambda: wanted <= orthanc.sop_instance_uids(new_study), 30, what="6 in one study"
        )
        for uid in wanted:
            data = orthanc.get_instance_file(uid)
            stored = header(data)
            assert stored.PatientIdentityRemoved == "YES" and stored.PatientName == ""
            assert stored.SeriesInstanceUID == name_based_uid(
                str(header(files[0]).SeriesInstanceUID)
            )
            dcmtk_ok = dcmtk.run_tool("dcmdump", [_write(tmp_path / f"{uid}.dcm", data)])
            assert dcmtk_ok.ok
        for adapter in (first, second):  # received files take the byte-level path
            assert "byte-level path passes" not in adapter.log_text()
    finally:
        first.terminate()
        second.terminate()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_burned_in_annotation_is_dead_lettered_with_the_reason(
    orthanc: OrthancPeer, tmp_path: Path
) -> None:
    [ct] = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)
    ds = pydicom.dcmread(ct)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(ct)
    site = basic_site(orthanc.dicomweb_url)
    adapter = AdapterProcess(site, tmp_path, name="burned").start()
    try:
        dcmtk.storescu(adapter.port, [ct], called_aet=AET)

        def listing() -> str | None:
            out = subprocess.run(
                [*CLI, "deadletters", "list", "--config", str(adapter.config_path)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            return out if "1 dead letter(s)" in out else None

        out = wait_until(listing, 30, interval=0.3, what="the dead letter")
        assert "Burned In Annotation is YES" in out
        assert name_based_uid(str(ds.SOPInstanceUID)) not in orthanc.sop_instance_uids()
    finally:
        adapter.terminate()
