"""The importer started with the Java flag --store_compress_to_transfer_syntax (JPEG 2000
lossless): dcmsend a CT, an MR and a colour ultrasound (JPEG baseline); Orthanc holds JPEG 2000
lossless instances whose decoded pixels equal the source's decoded pixels."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess, legacy_health_env
from tests.peers.datasets import (
    compress,
    make_ct_series,
    make_mr_instance,
    make_secondary_capture,
)
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


@pytest.fixture
def start_legacy(tmp_path: Path) -> Iterator[Callable[..., AdapterProcess]]:
    started: list[AdapterProcess] = []

    def start(*flags: str) -> AdapterProcess:
        port = free_port()
        name = f"legacy{len(started)}"
        argv = [
            f"--dimse_aet={AET}",
            f"--dimse_port={port}",
            f"--persistent_file_storage_location={tmp_path / name / 'spool'}",
            *flags,
        ]
        env = legacy_health_env()
        proc = AdapterProcess(None, tmp_path, argv=argv, dimse_port=port, name=name, env=env)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.terminate()


def colour_ultrasound(directory: Path) -> Path:
    """An RGB Ultrasound Image, JPEG baseline (lossy, YBR_FULL_422) as a scanner sends it."""
    source = make_secondary_capture(directory / "src", rows=120, cols=160, seed=21)
    ds = pydicom.dcmread(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    ds.Modality = "US"
    rgb = directory / "us-rgb.dcm"
    ds.save_as(rgb, enforce_file_format=True)
    out = directory / "us-jpeg-baseline.dcm"
    compress(rgb, out, "jpeg-baseline")
    return out


def test_legacy_compression_flag_stores_jpeg2000_lossless_with_equal_pixels(
    orthanc: OrthancPeer, start_legacy: Callable[..., AdapterProcess], tmp_path: Path
) -> None:
    ct = make_ct_series(tmp_path / "ct", 1, rows=128, cols=128)[0]
    mr = make_mr_instance(tmp_path / "mr", rows=96, cols=96)
    us = colour_ultrasound(tmp_path / "us")
    adapter = start_legacy(
        f"--dicomweb_address={orthanc.dicomweb_url}",
        f"--store_compress_to_transfer_syntax={J2K_LOSSLESS}",
    )
    result = dcmtk.dcmsend(adapter.port, [ct, mr, us], called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == 3
    # answered after the upload (Java semantics without --auto_ack_cstore)
    for path in (ct, mr, us):
        source = pydicom.dcmread(path)
        stored = pydicom.dcmread(io.BytesIO(orthanc.get_instance_file(str(source.SOPInstanceUID))))
        assert stored.file_meta.TransferSyntaxUID == J2K_LOSSLESS, path.name
        assert np.array_equal(stored.pixel_array, source.pixel_array), path.name
        assert stored.SOPInstanceUID == source.SOPInstanceUID
    stored_us = pydicom.dcmread(
        io.BytesIO(orthanc.get_instance_file(str(pydicom.dcmread(us).SOPInstanceUID)))
    )
    assert stored_us.PhotometricInterpretation == "YBR_RCT"  # PS3.5 8.2.4: colour transform
    assert stored_us.LossyImageCompression == "01"  # the JPEG baseline history is kept
