"""Synthetic benchmark data, generated once per parameter set and cached under ``out/data``.

A CT series of 512x512 16-bit instances (Explicit VR Little Endian, every instance's pixels
different) and one Multi-frame Grayscale Word Secondary Capture instance of at least N MB whose
Pixel Data is streamed to disk frame by frame, never held in memory.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = ["Instance", "Series", "big_instance", "ct_series"]

_VERSION = 1  # bump when the generated content changes, to invalidate the cache
_ROWS = _COLS = 512
_FRAME_BYTES = _ROWS * _COLS * 2
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Instance:
    """One generated Part-10 file and its UIDs."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    size: int


@dataclass(frozen=True)
class Series:
    """A generated series (or the one big instance): files in instance order."""

    directory: Path
    instances: list[Instance]

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.instances)

    @property
    def study_uid(self) -> str:
        return self.instances[0].study_uid

    @property
    def series_uid(self) -> str:
        return self.instances[0].series_uid

    @property
    def paths(self) -> list[Path]:
        return [i.path for i in self.instances]


def _meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    meta.ImplementationVersionName = "DICOMADAPTBENCH"
    return meta


def _header(sop_class: str, modality: str, study: str, series: str, number: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = _meta(sop_class, ds.SOPInstanceUID)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "BENCH0001"
    ds.Modality = modality
    ds.Manufacturer = "dicom-adapter benchmarks"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "BENCH^PATIENT"
    ds.PatientID = "BENCH-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = _ROWS
    ds.Columns = _COLS
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def _base_pixels(seed: int) -> np.ndarray[Any, np.dtype[np.uint16]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, size=(_ROWS, _COLS), dtype=np.uint16)


def _instance(ds: Dataset, path: Path) -> Instance:
    return Instance(
        path=path,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        size=path.stat().st_size,
    )


def _cached(directory: Path, make: Callable[[Path], list[Instance]], progress: bool) -> Series:
    """The series in ``directory`` if its manifest (written last) is there, else made anew."""
    manifest = directory / _MANIFEST
    if manifest.is_file():
        rows = json.loads(manifest.read_text())
        instances = [Instance(**{**r, "path": directory / r["path"]}) for r in rows]
        if all(i.path.is_file() and i.path.stat().st_size == i.size for i in instances):
            return Series(directory, instances)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    if progress:
        print(f"  generating {directory.name} ...", flush=True)
    instances = make(directory)
    rows = [{**asdict(i), "path": i.path.name} for i in instances]
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(manifest)
    return Series(directory, instances)


def ct_series(cache: Path, n: int, *, progress: bool = True) -> Series:
    """``n`` CT Image Storage instances of one series, 512x512, 16 bits allocated, 12 stored."""

    def make(directory: Path) -> list[Instance]:
        study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
        base = _base_pixels(1)
        out: list[Instance] = []
        for i in range(n):
            ds = _header(CTImageStorage, "CT", study, series, i + 1)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.FrameOfReferenceUID = frame_of_reference
            ds.ImagePositionPatient = ["-150.0", "-150.0", f"{i:.1f}"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.PixelSpacing = ["0.5859375", "0.5859375"]
            ds.SliceThickness = "1.0"
            ds.KVP = "120"
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
            pixels = np.roll(base, i * 7, axis=1) ^ np.uint16(i & 0x0FF)
            pixels[0, 0] = i & 0x0FFF  # distinct even where the roll wraps around
            ds.PixelData = pixels.tobytes()
            path = directory / f"ct-{i + 1:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            out.append(_instance(ds, path))
        return out

    return _cached(cache / f"ct-n{n}-{_ROWS}x{_COLS}-v{_VERSION}", make, progress)


def big_instance(cache: Path, megabytes: int, *, progress: bool = True) -> Instance:
    """One multi-frame instance with at least ``megabytes`` MiB of Pixel Data.

    pydicom writes the header (every element but Pixel Data); then the (7FE0,0010) OW element
    header with its explicit 32-bit length is appended by hand and the frames are streamed in
    8 MiB chunks, so memory use stays flat whatever the size. pydicom reads the header back
    (``stop_before_pixels``) as a check.
    """
    frames = max(1, -(-megabytes * 1024 * 1024 // _FRAME_BYTES))
    length = frames * _FRAME_BYTES
    if length >= 0xFFFFFFFE:
        raise ValueError(f"{megabytes} MiB of Pixel Data does not fit a 32-bit element length")

    def make(directory: Path) -> list[Instance]:
        ds = _header(
            MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
            "OT",
            generate_uid(),
            generate_uid(),
            1,
        )
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ConversionType = "WSD"
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = Tag("FrameTime")
        ds.FrameTime = "33.3"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        path = directory / "multiframe.dcm"
        ds.save_as(path, enforce_file_format=True)  # no Pixel Data: it is the last element
        header_size = path.stat().st_size
        base = _base_pixels(2)
        per_chunk = 16
        with open(path, "ab") as f:
            f.write(struct.pack("<HH2s2sI", 0x7FE0, 0x0010, b"OW", b"\0\0", length))
            for first in range(0, frames, per_chunk):
                count = min(per_chunk, frames - first)
                offsets = np.arange(first, first + count, dtype=np.uint16) & 0x0FF
                chunk = base[None, :, :] ^ offsets[:, None, None]
                chunk[:, 0, 0] = np.arange(first, first + count) & 0x0FFF
                f.write(chunk.astype("<u2", copy=False).tobytes())
                if progress and first % (per_chunk * 128) == 0 and first:
                    print(f"    {first * _FRAME_BYTES >> 20} MiB written", flush=True)
        check = pydicom.dcmread(path, stop_before_pixels=True)
        expected = header_size + 12 + length
        if int(check.NumberOfFrames) != frames or path.stat().st_size != expected:
            raise RuntimeError(f"{path}: header or size check failed after writing")
        return [_instance(check, path)]

    series = _cached(cache / f"mf-{megabytes}MiB-v{_VERSION}", make, progress)
    return series.instances[0]
