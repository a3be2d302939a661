"""Synthetic but valid DICOM Part-10 files (pydicom 3 + numpy), and dcmtk-made compressed copies.

Every generated instance has fresh UIDs (``pydicom.uid.generate_uid``), a patient named like
``TEST^PATIENT`` and pixel content that differs from instance to instance, so that byte-exact
round-trip checks cannot pass by accident.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from tests.peers.dcmtk import DCMTK_TIMEOUT, dcmtk_env, dcmtk_tool

IMPLEMENTATION_CLASS_UID: Final = "1.2.826.0.1.3680043.8.498.1"
IMPLEMENTATION_VERSION: Final = "DICOMADAPTTEST"

#: compress() kinds -> (tool, arguments, expected transfer syntax UID)
COMPRESSIONS: Final[dict[str, tuple[str, tuple[str, ...], str]]] = {
    # JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14, SV1): 8 or 16 bit.
    "jpeg-lossless": ("dcmcjpeg", ("+e1", "+un"), "1.2.840.10008.1.2.4.70"),
    # JPEG Lossless, Non-Hierarchical (Process 14), selection value 6 by default.
    "jpeg-lossless-p14": ("dcmcjpeg", ("+el", "+un"), "1.2.840.10008.1.2.4.57"),
    # JPEG Baseline (Process 1): lossy, 8-bit input only (use on the RGB secondary capture).
    "jpeg-baseline": ("dcmcjpeg", ("+eb", "+un"), "1.2.840.10008.1.2.4.50"),
    # JPEG Extended (Process 2 & 4): lossy, up to 12 bits stored (CT of this module: 12 bits).
    "jpeg-extended": ("dcmcjpeg", ("+ee", "+un"), "1.2.840.10008.1.2.4.51"),
    "jpeg-ls-lossless": ("dcmcjpls", ("+el", "+un"), "1.2.840.10008.1.2.4.80"),
    "jpeg-ls-near-lossless": ("dcmcjpls", ("+en", "+un"), "1.2.840.10008.1.2.4.81"),
    "rle": ("dcmcrle", ("+un",), "1.2.840.10008.1.2.5"),
    "deflate": ("dcmconv", ("+td",), DeflatedExplicitVRLittleEndian),
    "implicit": ("dcmconv", ("+ti",), ImplicitVRLittleEndian),
    "explicit": ("dcmconv", ("+te",), ExplicitVRLittleEndian),
    "explicit-big-endian": ("dcmconv", ("+tb",), "1.2.840.10008.1.2.2"),
}
LOSSY_KINDS: Final = frozenset({"jpeg-baseline", "jpeg-extended", "jpeg-ls-near-lossless"})


class CompressionError(RuntimeError):
    """A dcmtk compression tool failed or produced an unexpected transfer syntax."""


# ------------------------------------------------------------------------------------ helpers
def _now() -> tuple[str, str]:
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def _base_dataset(
    sop_class_uid: str,
    modality: str,
    *,
    study_uid: str | None,
    series_uid: str | None,
    patient_name: str,
    patient_id: str,
    accession_number: str,
    series_number: int,
    instance_number: int,
    transfer_syntax: str,
) -> Dataset:
    date, time = _now()
    ds = Dataset()
    sop_instance_uid = generate_uid()
    ds.file_meta = _file_meta(sop_class_uid, sop_instance_uid, transfer_syntax)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.ContentDate = date
    ds.StudyTime = time
    ds.SeriesTime = time
    ds.ContentTime = time
    ds.AccessionNumber = accession_number
    ds.Modality = modality
    ds.Manufacturer = "dicom-adapter tests"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic test study"
    ds.SeriesDescription = f"Synthetic {modality} series"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _grayscale(rows: int, cols: int, seed: int, bits_stored: int) -> np.ndarray[Any, Any]:
    """A smooth body-like pattern plus noise, different for every ``seed``."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[:rows, :cols]
    cy = rows / 2 + rng.uniform(-rows / 8, rows / 8)
    cx = cols / 2 + rng.uniform(-cols / 8, cols / 8)
    r2 = ((y - cy) / (rows * 0.4)) ** 2 + ((x - cx) / (cols * 0.35)) ** 2
    maximum = (1 << bits_stored) - 1
    body = np.where(r2 < 1.0, 1000.0 + 200.0 * np.cos(x / 9.0 + seed) * np.sin(y / 7.0), 24.0)
    noise = rng.normal(0.0, 20.0, size=(rows, cols))
    pixels = np.clip(body + noise, 0, maximum).astype(np.uint16)
    pixels[0, 0] = seed % maximum  # never two identical frames, even with equal noise
    return pixels


# ------------------------------------------------------------------------------------ makers
def make_ct_series(
    directory: Path | str,
    n: int,
    rows: int = 512,
    cols: int = 512,
    study_uid: str | None = None,
    series_uid: str | None = None,
    *,
    patient_name: str = "TEST^PATIENT",
    patient_id: str = "TEST-0001",
    accession_number: str = "ACC0001",
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
) -> list[Path]:
    """Write ``n`` CT Image Storage instances of one series (16-bit allocated, 12 stored).

    Files are named ``ct-{series_uid}-{i:05d}.dcm`` in ``directory``; returns their paths in
    instance order. A 512x512 instance is about 0.5 MB.
    """
    out = Path(directory)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference = generate_uid()
    paths: list[Path] = []
    for i in range(n):
        ds = _base_dataset(
            CTImageStorage,
            "CT",
            study_uid=study_uid,
            series_uid=series_uid,
            patient_name=patient_name,
            patient_id=patient_id,
            accession_number=accession_number,
            series_number=1,
            instance_number=i + 1,
            transfer_syntax=transfer_syntax,
        )
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        ds.SliceThickness = "1.0"
        ds.ImagePositionPatient = ["-150.0", "-150.0", f"{i * 1.0:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{i * 1.0:.1f}"
        ds.PixelSpacing = ["0.5859375", "0.5859375"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = _grayscale(rows, cols, seed * 1_000_003 + i, 12).tobytes()
        paths.append(_save(ds, out / f"ct-{series_uid}-{i:05d}.dcm"))
    return paths


def make_mr_instance(
    directory: Path | str,
    rows: int = 256,
    cols: int = 256,
    study_uid: str | None = None,
    series_uid: str | None = None,
    *,
    transfer_syntax: str = ImplicitVRLittleEndian,
    patient_name: str = "TEST^PATIENT^MR",
    patient_id: str = "TEST-0002",
    seed: int = 1,
) -> Path:
    """One MR Image Storage instance, Implicit VR Little Endian by default."""
    ds = _base_dataset(
        MRImageStorage,
        "MR",
        study_uid=study_uid,
        series_uid=series_uid,
        patient_name=patient_name,
        patient_id=patient_id,
        accession_number="ACC0002",
        series_number=2,
        instance_number=1,
        transfer_syntax=transfer_syntax,
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = "10"
    ds.RepetitionTime = "500"
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = "1.5"
    ds.SliceThickness = "5.0"
    ds.ImagePositionPatient = ["-120.0", "-120.0", "0.0"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = ["0.9375", "0.9375"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = _grayscale(rows, cols, seed, 16).tobytes()
    return _save(ds, Path(directory) / f"mr-{ds.SOPInstanceUID}.dcm")


def make_secondary_capture(
    directory: Path | str,
    rows: int = 256,
    cols: int = 256,
    study_uid: str | None = None,
    series_uid: str | None = None,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    patient_name: str = "TEST^PATIENT^SC",
    patient_id: str = "TEST-0003",
    seed: int = 2,
) -> Path:
    """One Secondary Capture Image Storage instance, 8-bit RGB (PlanarConfiguration 0)."""
    ds = _base_dataset(
        SecondaryCaptureImageStorage,
        "OT",
        study_uid=study_uid,
        series_uid=series_uid,
        patient_name=patient_name,
        patient_id=patient_id,
        accession_number="ACC0003",
        series_number=3,
        instance_number=1,
        transfer_syntax=transfer_syntax,
    )
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:rows, :cols]
    rgb = np.stack(
        [(x * 255 // max(cols - 1, 1)), (y * 255 // max(rows - 1, 1)), ((x + y + seed * 37) % 256)],
        axis=-1,
    ).astype(np.int16)
    rgb += rng.integers(-8, 9, size=rgb.shape, dtype=np.int16)
    ds.PixelData = np.clip(rgb, 0, 255).astype(np.uint8).tobytes()
    return _save(ds, Path(directory) / f"sc-{ds.SOPInstanceUID}.dcm")


def make_multiframe(
    directory: Path | str,
    size_bytes: int,
    rows: int = 512,
    cols: int = 512,
    study_uid: str | None = None,
    series_uid: str | None = None,
    *,
    patient_name: str = "TEST^PATIENT^MF",
    patient_id: str = "TEST-0004",
    chunk_frames: int = 16,
) -> Path:
    """A Multi-frame Grayscale Word Secondary Capture instance whose Pixel Data is at least
    ``size_bytes`` long (whole 16-bit frames of ``rows`` x ``cols``), Explicit VR LE.

    The pixel data are never all in memory: pydicom writes the header (everything but Pixel
    Data, which is the last element), then the (7FE0,0010) OW element is appended by hand with
    its explicit 32-bit length and the frames are streamed ``chunk_frames`` at a time.
    Pixel Data must stay below 4 GiB (the explicit length is 32-bit).
    """
    frame_bytes = rows * cols * 2
    frames = max(1, -(-size_bytes // frame_bytes))
    pixel_length = frames * frame_bytes
    if pixel_length >= 0xFFFFFFFE:
        raise ValueError(f"Pixel Data of {pixel_length} bytes does not fit a 32-bit length")
    ds = _base_dataset(
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        "OT",
        study_uid=study_uid,
        series_uid=series_uid,
        patient_name=patient_name,
        patient_id=patient_id,
        accession_number="ACC0004",
        series_number=4,
        instance_number=1,
        transfer_syntax=ExplicitVRLittleEndian,
    )
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = Tag("FrameTime")
    ds.FrameTime = "33.3"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    path = Path(directory) / f"mf-{ds.SOPInstanceUID}.dcm"
    _save(ds, path)  # no Pixel Data yet
    base = _grayscale(rows, cols, 4, 12)
    with open(path, "ab") as f:
        # (7FE0,0010) OW, 2 reserved bytes, 32-bit length: Explicit VR Little Endian.
        f.write(struct.pack("<HH2s2sI", 0x7FE0, 0x0010, b"OW", b"\0\0", pixel_length))
        written = 0
        index = 0
        while written < pixel_length:
            count = min(chunk_frames, frames - index)
            chunk = np.empty((count, rows, cols), dtype="<u2")
            for k in range(count):
                np.add(base, (index + k) & 0xFF, out=chunk[k], dtype="<u2")
                chunk[k, 0, 0] = (index + k) & 0x0FFF
            data = chunk.tobytes()
            f.write(data)
            written += len(data)
            index += count
    return path


# ------------------------------------------------------------------------------------ dcmtk
def transfer_syntax_of(path: Path | str) -> str:
    """The Transfer Syntax UID in a Part-10 file's meta header."""
    meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return str(meta.file_meta.TransferSyntaxUID)


def compress(path: Path | str, out: Path | str, kind: str, extra_args: Sequence[str] = ()) -> str:
    """Re-encode ``path`` into ``out`` with a dcmtk tool; returns the output's transfer syntax.

    ``kind`` is a key of :data:`COMPRESSIONS`: ``jpeg-lossless`` (dcmcjpeg +e1, any bit depth
    up to 16), ``jpeg-lossless-p14`` (+el), ``jpeg-baseline`` (+eb, 8-bit input only),
    ``jpeg-extended`` (+ee, up to 12 bits), ``jpeg-ls-lossless`` (dcmcjpls +el),
    ``jpeg-ls-near-lossless`` (+en), ``rle`` (dcmcrle), ``deflate`` (dcmconv +td), ``implicit``,
    ``explicit``, ``explicit-big-endian``. The SOP Instance UID is kept (``+un``) even for lossy
    kinds, so the output is "the same instance in another transfer syntax".
    """
    try:
        tool, args, expected = COMPRESSIONS[kind]
    except KeyError:
        raise ValueError(f"unknown compression {kind!r}; one of {sorted(COMPRESSIONS)}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [dcmtk_tool(tool), *args, *extra_args, os.fspath(path), os.fspath(out)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=DCMTK_TIMEOUT, env=dcmtk_env(), check=False
    )
    if proc.returncode != 0:
        raise CompressionError(
            f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}"
        )
    got = transfer_syntax_of(out)
    if got != expected:
        raise CompressionError(f"{' '.join(cmd)} wrote transfer syntax {got}, expected {expected}")
    return got


# ------------------------------------------------------------------------------------ sample set
@dataclass(frozen=True)
class SampleSet:
    """A directory of distinct instances in several SOP classes and transfer syntaxes.

    ``by_kind`` maps a label (``ct-explicit``, ``mr-implicit``, ``sc-rgb``, ``jpeg-lossless``,
    ``jpeg-baseline``, ``jpeg-ls-lossless``, ``rle``, ``deflate``) to one file (the CT series
    has several files: ``ct_series``). All instances belong to one patient (TEST^PATIENT,
    TEST-0001) and one study (``study_uid``); every file has its own SOP Instance UID.
    """

    directory: Path
    files: tuple[Path, ...]
    by_kind: Mapping[str, Path]
    ct_series: tuple[Path, ...]
    study_uid: str
    sop_instance_uids: Mapping[Path, str]
    transfer_syntaxes: Mapping[Path, str]

    def __iter__(self) -> Iterator[Path]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def uids(self) -> set[str]:
        return set(self.sop_instance_uids.values())


def make_sample_set(directory: Path | str, ct_instances: int = 3) -> SampleSet:
    """Write the standard mixed sample set (see :class:`SampleSet`) into ``directory``.

    Compressed variants are made from their own freshly generated sources (in a temporary
    directory, deleted afterwards), so no two files share a SOP Instance UID and the directory
    holds exactly ``files``.
    """
    out = Path(directory)
    with tempfile.TemporaryDirectory(prefix="sample-sources-") as tmp:
        return _make_sample_set(out, Path(tmp), ct_instances)


def _make_sample_set(out: Path, src: Path, ct_instances: int) -> SampleSet:
    study = generate_uid()
    who: dict[str, Any] = {"patient_name": "TEST^PATIENT", "patient_id": "TEST-0001"}
    by_kind: dict[str, Path] = {}
    ct = make_ct_series(out, ct_instances, study_uid=study, **who)
    by_kind["ct-explicit"] = ct[0]
    by_kind["mr-implicit"] = make_mr_instance(out, study_uid=study, **who)
    by_kind["sc-rgb"] = make_secondary_capture(out, study_uid=study, **who)
    recipes: list[tuple[str, Path]] = [
        ("jpeg-lossless", make_ct_series(src, 1, 256, 256, study_uid=study, seed=11, **who)[0]),
        ("jpeg-baseline", make_secondary_capture(src, study_uid=study, seed=12, **who)),
        ("jpeg-ls-lossless", make_ct_series(src, 1, 256, 256, study_uid=study, seed=13, **who)[0]),
        ("rle", make_ct_series(src, 1, 256, 256, study_uid=study, seed=14, **who)[0]),
        ("deflate", make_mr_instance(src, study_uid=study, seed=15, **who)),
    ]
    for kind, source in recipes:
        target = out / f"{kind}-{source.stem}.dcm"
        compress(source, target, kind)
        by_kind[kind] = target
    files = tuple(sorted({*ct, *by_kind.values()}))
    uids: dict[Path, str] = {}
    syntaxes: dict[Path, str] = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        uids[f] = str(ds.SOPInstanceUID)
        syntaxes[f] = str(ds.file_meta.TransferSyntaxUID)
    if len(set(uids.values())) != len(files):
        raise AssertionError("sample set has duplicate SOP Instance UIDs")
    return SampleSet(out, files, by_kind, tuple(ct), study, uids, syntaxes)
