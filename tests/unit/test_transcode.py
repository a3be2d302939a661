"""The transcoder: a lossless round trip for every target from every decodable source, for 8/12/16
-bit, signed, colour and multi-frame inputs; the pixel-module attributes PS3.5 requires; dcmdump
(dcmtk) reads every output; the stage's keep/reject/unchanged decisions; lossy on request."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from adapter.errors import PermanentError
from adapter.pipeline.instance import Instance
from adapter.spool_files import read_spool_meta
from adapter.stages.transcode import TranscodeStage
from adapter.stages.transcode_config import LOSSLESS_TARGETS, TranscodeStageConfig
from adapter.stages.transcoder import TranscodeOptions, Transcoder, UnsupportedError
from tests.peers.datasets import compress, make_ct_series, make_secondary_capture

TARGETS = list(LOSSLESS_TARGETS)


@pytest.fixture(scope="module")
def transcoder() -> Iterator[Transcoder]:
    t = Transcoder(2).acquire()
    yield t
    t.release()


def image(
    path: Path,
    arr: np.ndarray[Any, Any],
    *,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
) -> Path:
    """A Secondary Capture instance holding ``arr`` (frames, rows, cols[, samples])."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = arr.shape[-3:-1] if photometric == "RGB" else arr.shape[-2:]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def rng_image(shape: tuple[int, ...], dtype: str, bits: int, signed: bool = False) -> Any:
    rng = np.random.default_rng(7)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    y = np.linspace(low, high, shape[-1] if len(shape) < 3 or shape[-1] != 3 else shape[-2])
    arr = rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    arr[..., 0] = y[0]  # the full range appears
    return arr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    return {
        "8bit": image(d / "8.dcm", rng_image((32, 40), "u1", 8), bits_stored=8),
        "12bit": make_ct_series(d / "ct", 1, rows=40, cols=48)[0],
        "16bit": image(d / "16.dcm", rng_image((32, 48), "u2", 16), bits_stored=16),
        "signed": image(d / "s.dcm", rng_image((36, 32), "i2", 16, signed=True), bits_stored=16),
        "colour": make_secondary_capture(d, rows=40, cols=32),
        "multiframe": image(
            d / "mf.dcm", rng_image((5, 32, 32), "u2", 12), bits_stored=12, frames=5
        ),
        "colour-multiframe": image(
            d / "cmf.dcm",
            rng_image((3, 32, 36, 3), "u1", 8),
            bits_stored=8,
            photometric="RGB",
            frames=3,
        ),
    }


def dcmdump_reads(path: Path) -> None:
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmdump (dcmtk) not installed")
    done = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()[:300]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "kind", ["8bit", "12bit", "16bit", "signed", "colour", "multiframe", "colour-multiframe"]
)
def test_lossless_round_trip_for_every_target(
    transcoder: Transcoder, inputs: dict[str, Path], tmp_path: Path, kind: str, target: str
) -> None:
    src = inputs[kind]
    out = tmp_path / "out.dcm"
    meta = transcoder.transcode(src, out, TranscodeOptions(target))
    got, want = pydicom.dcmread(out), pydicom.dcmread(src)
    assert got.file_meta.TransferSyntaxUID == target == meta.transfer_syntax_uid
    assert got.SOPInstanceUID == want.SOPInstanceUID == meta.sop_instance_uid
    assert np.array_equal(got.pixel_array, want.pixel_array)
    assert got.get("NumberOfFrames", 1) == want.get("NumberOfFrames", 1)
    if want.SamplesPerPixel == 3:
        expected = "YBR_RCT" if target == JPEG2000Lossless else "RGB"
        assert got.PhotometricInterpretation == expected
        assert got.PlanarConfiguration == 0
    dcmdump_reads(out)


@pytest.mark.parametrize(
    "kind",
    ["implicit", "explicit-big-endian", "deflate", "rle", "jpeg-ls-lossless", "jpeg-lossless"],
)
@pytest.mark.parametrize("target", TARGETS)
def test_every_decodable_source_syntax_converts(
    transcoder: Transcoder, inputs: dict[str, Path], tmp_path: Path, kind: str, target: str
) -> None:
    src = tmp_path / "src.dcm"
    compress(inputs["12bit"], src, kind)
    out = tmp_path / "out.dcm"
    transcoder.transcode(src, out, TranscodeOptions(target))
    assert np.array_equal(pydicom.dcmread(out).pixel_array, pydicom.dcmread(src).pixel_array)
    dcmdump_reads(out)


def test_colour_jpeg_baseline_keeps_its_decoded_pixels_and_lossy_history(
    transcoder: Transcoder, inputs: dict[str, Path], tmp_path: Path
) -> None:
    src = tmp_path / "jpeg.dcm"
    compress(inputs["colour"], src, "jpeg-baseline")
    out = tmp_path / "out.dcm"
    transcoder.transcode(src, out, TranscodeOptions(JPEG2000Lossless))
    got, want = pydicom.dcmread(out), pydicom.dcmread(src)
    assert np.array_equal(got.pixel_array, want.pixel_array)  # RGB, as pydicom decodes it
    assert got.PhotometricInterpretation == "YBR_RCT"
    assert got.LossyImageCompression == "01"


def test_colour_transform_off_keeps_rgb(
    transcoder: Transcoder, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.dcm"
    options = TranscodeOptions(JPEG2000Lossless, colour_transform=False)
    transcoder.transcode(inputs["colour"], out, options)
    got = pydicom.dcmread(out)
    assert got.PhotometricInterpretation == "RGB"
    assert np.array_equal(got.pixel_array, pydicom.dcmread(inputs["colour"]).pixel_array)


def test_multiframe_output_has_one_item_per_frame_and_a_basic_offset_table(
    transcoder: Transcoder, inputs: dict[str, Path], tmp_path: Path
) -> None:
    from pydicom.encaps import generate_fragments, parse_basic_offsets

    out = tmp_path / "out.dcm"
    transcoder.transcode(inputs["multiframe"], out, TranscodeOptions(JPEG2000Lossless))
    data = pydicom.dcmread(out).PixelData
    offsets = parse_basic_offsets(data)
    fragments = list(generate_fragments(data))[1:]  # after the Basic Offset Table item
    assert len(offsets) == len(fragments) == 5
    sizes = [len(f) + 8 for f in fragments]
    assert offsets == [sum(sizes[:i]) for i in range(5)]


@pytest.mark.parametrize(
    ("target", "lossy", "method"),
    [
        ("1.2.840.10008.1.2.4.91", {"compression_ratio": 5}, "ISO_15444_1"),
        ("1.2.840.10008.1.2.4.81", {"near_lossless_error": 2}, "ISO_14495_1"),
    ],
)
def test_lossy_only_on_request_marks_the_instance_and_gives_a_new_uid(
    inputs: dict[str, Path], tmp_path: Path, target: str, lossy: dict[str, Any], method: str
) -> None:
    with pytest.raises(ValidationError, match="lossy"):
        TranscodeStageConfig(transfer_syntax=target)
    stage = TranscodeStage("lossy", TranscodeStageConfig(transfer_syntax=target, lossy=lossy))
    try:
        src = inputs["12bit"]
        out = stage.process(Instance(src, read_spool_meta(src)), tmp_path)
    finally:
        stage.close()
    assert isinstance(out, Instance)
    got, want = pydicom.dcmread(out.path), pydicom.dcmread(src)
    assert got.LossyImageCompression == "01"
    assert got.LossyImageCompressionMethod == method
    if "compression_ratio" in lossy:
        assert float(got.LossyImageCompressionRatio) == lossy["compression_ratio"]
    assert got.SOPInstanceUID == out.sop_instance_uid != want.SOPInstanceUID
    difference = np.abs(got.pixel_array.astype(int) - want.pixel_array.astype(int))
    assert difference.max() > 0
    if "near_lossless_error" in lossy:
        assert difference.max() <= lossy["near_lossless_error"]


def test_config_refuses_unknown_targets_and_lossy_options_on_lossless_ones() -> None:
    with pytest.raises(ValidationError, match="not a target"):
        TranscodeStageConfig(transfer_syntax="1.2.840.10008.1.2.4.50")
    with pytest.raises(ValidationError, match="is lossless"):
        TranscodeStageConfig(lossy={"compression_ratio": 10})


def test_stage_passes_an_instance_already_in_the_target_and_keeps_its_origin(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    stage = TranscodeStage("tc", TranscodeStageConfig(transfer_syntax=ExplicitVRLittleEndian))
    j2k = TranscodeStage("tc", TranscodeStageConfig())
    try:
        src = inputs["12bit"]
        meta = read_spool_meta(src, "MODALITY", "ADAPTER")
        assert stage.process(Instance(src, meta), tmp_path).path == src  # type: ignore[union-attr]
        out = j2k.process(Instance(src, meta), tmp_path)
        assert isinstance(out, Instance)
        assert out.path.parent == tmp_path and out.path != src
        assert out.meta.transfer_syntax_uid == JPEG2000Lossless
        assert (out.meta.calling_ae, out.meta.called_ae) == ("MODALITY", "ADAPTER")
    finally:
        stage.close()
        j2k.close()


def test_an_image_the_target_cannot_hold_is_kept_or_rejected(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    tiny = image(tmp_path / "tiny.dcm", rng_image((8, 8), "u2", 12), bits_stored=12)
    with pytest.raises(UnsupportedError, match="under 32 pixels"):
        Transcoder(1).transcode(tiny, tmp_path / "x.dcm", TranscodeOptions(JPEG2000Lossless))
    tiny.unlink()
    src = image(tmp_path / "32.dcm", rng_image((8, 8), "u4", 32), bits_stored=32)
    with pytest.raises(UnsupportedError, match="cannot hold"):
        Transcoder(1).transcode(src, tmp_path / "x.dcm", TranscodeOptions("1.2.840.10008.1.2.5"))
    keep = TranscodeStage("k", TranscodeStageConfig(transfer_syntax="1.2.840.10008.1.2.4.80"))
    reject = TranscodeStage(
        "r",
        TranscodeStageConfig(transfer_syntax="1.2.840.10008.1.2.4.80", on_unsupported="reject"),
    )
    instance = Instance(src, read_spool_meta(src))
    try:
        assert keep.process(instance, tmp_path) is instance
        with pytest.raises(PermanentError, match="not transcoded to JPEG-LS"):
            reject.process(instance, tmp_path)
    finally:
        keep.close()
        reject.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["32.dcm"]  # no partial output


def test_a_frame_that_does_not_decode_names_the_syntax(
    transcoder: Transcoder, inputs: dict[str, Path], tmp_path: Path
) -> None:
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(inputs["12bit"])
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad, enforce_file_format=True)
    with pytest.raises(UnsupportedError, match="cannot decompress JPEG 2000"):
        transcoder.transcode(bad, tmp_path / "out.dcm", TranscodeOptions(ExplicitVRLittleEndian))
    assert not (tmp_path / "out.dcm").exists()
