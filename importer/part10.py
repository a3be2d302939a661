"""Cheap checks of a received Part-10 file (PS3.10 7) before we accept responsibility for it.

Bounded work: the meta header, the few UIDs we need (every other value skipped), and the Pixel
Data element's framing (its length, or the fragment items of encapsulated data, PS3.5 A.4) --
never the pixel values, so a 2 GB instance costs a few seeks.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from adapter.dicomweb.json_model import is_strict_uid, is_valid_uid
from adapter.part10_scan import (
    InvalidError,
    NotADataSetError,
    ScanError,
    TruncatedError,
    scan_part10_header,
)
from adapter.status import Status

__all__ = ["DatasetFacts", "InvalidDatasetError", "check_part10", "is_valid_uid", "printable"]

_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_ITEM, _SEQ_DELIM = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)
_UNDEFINED = 0xFFFFFFFF
_MAX_FRAGMENTS = 10_000_000


class InvalidDatasetError(Exception):
    """The file cannot be accepted: ``status`` for the C-STORE response, ``comment`` short."""

    def __init__(self, status: Status, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass(frozen=True)
class DatasetFacts:
    """What the importer needs from the data set itself."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    transfer_syntax_uid: str


def printable(value: object, limit: int = 80) -> str:
    """A log-safe rendering of an untrusted string: control characters escaped, truncated."""
    text = value if isinstance(value, str) else repr(value)
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + (f"...({len(text)} chars)" if len(text) > limit else "")


def check_part10(path: Path, sop_class_uid: str, sop_instance_uid: str) -> DatasetFacts:
    """Check that ``path`` is a readable Part-10 file of the announced instance; its Study and
    Series UIDs. Raises InvalidDatasetError with the status to answer (PS3.4 B.2.3).

    The fast scan (part10_scan.py) reads the usual Little Endian files; pydicom reads the rest
    and whatever the scan does not expect."""
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            scanned = scan_part10_header(fp, size)
    except TruncatedError as exc:
        raise _truncated(str(exc)) from None
    except NotADataSetError:
        comment = "data set has no SOP Instance UID"
        raise InvalidDatasetError(Status.CANNOT_UNDERSTAND, comment) from None
    except InvalidError as exc:
        raise InvalidDatasetError(Status.CANNOT_UNDERSTAND, f"malformed: {exc}") from None
    except (ScanError, OSError, struct.error, UnicodeDecodeError, ValueError):
        pass  # pydicom decides, and names the problem
    else:
        return _facts(
            sop_class_uid,
            sop_instance_uid,
            scanned.transfer_syntax_uid,
            (
                scanned.sop_class_uid,
                scanned.sop_instance_uid,
                scanned.study_instance_uid,
                scanned.series_instance_uid,
            ),
        )
    return _check_with_pydicom(path, sop_class_uid, sop_instance_uid)


def _check_with_pydicom(path: Path, sop_class_uid: str, sop_instance_uid: str) -> DatasetFacts:
    try:
        with open(path, "rb") as fp:
            ds = dcmread(
                fp,
                stop_before_pixels=True,
                specific_tags=[
                    "SOPClassUID",
                    "SOPInstanceUID",
                    "StudyInstanceUID",
                    "SeriesInstanceUID",
                ],
            )
            syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
            pixel_pos = fp.tell()
            sop_instance = ds.get("SOPInstanceUID")
            sop_class = ds.get("SOPClassUID")
            study = ds.get("StudyInstanceUID")
            series = ds.get("SeriesInstanceUID")
            if syntax != DeflatedExplicitVRLittleEndian:
                _check_pixel_framing(fp, pixel_pos, path.stat().st_size, syntax)
    except InvalidDatasetError:
        raise
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise InvalidDatasetError(
            Status.CANNOT_UNDERSTAND, f"cannot parse data set: {type(exc).__name__}"
        ) from exc
    return _facts(
        sop_class_uid,
        sop_instance_uid,
        syntax,
        tuple(None if v is None else str(v) for v in (sop_class, sop_instance, study, series)),
    )


def _facts(
    sop_class_uid: str,
    sop_instance_uid: str,
    syntax: str,
    found: tuple[str | None, ...],
) -> DatasetFacts:
    """Compare what the data set says with the request (PS3.4 B.2.3)."""
    sop_class, sop_instance, study, series = found
    if sop_instance is None:
        raise InvalidDatasetError(Status.CANNOT_UNDERSTAND, "data set has no SOP Instance UID")
    if not is_strict_uid(str(sop_instance)):
        raise InvalidDatasetError(
            Status.CANNOT_UNDERSTAND, "SOP Instance UID is not a valid UID (PS3.5 9.1)"
        )
    if str(sop_instance) != sop_instance_uid:
        raise InvalidDatasetError(
            Status.CANNOT_UNDERSTAND, "SOP Instance UID differs from AffectedSOPInstanceUID"
        )
    if sop_class is None:  # Type 1 in the SOP Common Module (PS3.3 C.12.1)
        raise InvalidDatasetError(
            Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "data set has no SOP Class UID"
        )
    if str(sop_class) != sop_class_uid:
        raise InvalidDatasetError(
            Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOP Class UID differs from the request"
        )
    for name, value in (("Study", study), ("Series", series)):
        if value is None:  # Type 1 in every composite IOD (PS3.3 C.7.2.1, C.7.3.1)
            raise InvalidDatasetError(
                Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, f"data set has no {name} Instance UID"
            )
        if not is_strict_uid(str(value)):
            raise InvalidDatasetError(Status.CANNOT_UNDERSTAND, f"invalid {name} Instance UID")
    return DatasetFacts(
        study_instance_uid=str(study) if study else None,
        series_instance_uid=str(series) if series else None,
        transfer_syntax_uid=syntax,
    )


def _truncated(what: str) -> InvalidDatasetError:
    return InvalidDatasetError(Status.CANNOT_UNDERSTAND, f"truncated data set: {what}")


def _check_pixel_framing(fp: BinaryIO, pos: int, size: int, syntax: str) -> None:
    """The Pixel Data element (if any) must fit in the file; encapsulated fragments must end
    with a Sequence Delimitation Item (PS3.5 A.4)."""
    if pos >= size:
        return  # no pixel data
    big = syntax == ExplicitVRBigEndian
    implicit = syntax == ImplicitVRLittleEndian
    e = ">" if big else "<"
    fp.seek(pos)
    head = fp.read(8)
    if len(head) < 8:
        raise _truncated("element header cut off")
    group, elem = struct.unpack(e + "HH", head[:4])
    if (group, elem) not in _PIXEL_TAGS:
        return
    if implicit:
        (length,), offset = struct.unpack(e + "I", head[4:8]), 8
    elif head[4:6] in _LONG_VRS:
        more = fp.read(4)
        if len(more) < 4:
            raise _truncated("Pixel Data header cut off")
        (length,), offset = struct.unpack(e + "I", more), 12
    else:
        (length,), offset = struct.unpack(e + "H", head[6:8]), 8
    start = pos + offset
    if length != _UNDEFINED:
        if start + length > size:
            raise _truncated(f"Pixel Data needs {length} bytes, {size - start} present")
        return
    _check_fragments(fp, start, size)


def _check_fragments(fp: BinaryIO, pos: int, size: int) -> None:
    for _ in range(_MAX_FRAGMENTS):
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            raise _truncated("encapsulated Pixel Data has no sequence delimiter")
        group, elem, length = struct.unpack("<HHI", head)
        if (group, elem) == _SEQ_DELIM:
            return
        if (group, elem) != _ITEM or length == _UNDEFINED:
            raise InvalidDatasetError(
                Status.CANNOT_UNDERSTAND, "encapsulated Pixel Data: bad fragment item"
            )
        pos += 8 + length
        if pos > size:
            raise _truncated("encapsulated Pixel Data fragment cut off")
    raise InvalidDatasetError(Status.CANNOT_UNDERSTAND, "encapsulated Pixel Data: too many items")
