"""Hostile data sets for the C-STORE fuzz suite: a base data set (names and IDs that must never
reach a log) encoded as it travels on the wire, then one mutation drawn from a seeded RNG:
truncation, wrong VR lengths, undefined lengths without delimiters, odd lengths, deep
nesting, repeated attributes, bytes after Pixel Data, the wrong transfer syntax, hostile UIDs.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

__all__ = ["LEAKS", "Case", "make_case"]

CT = "1.2.840.10008.5.1.4.1.1.2"
NAME, PID, BIRTH = "LEAKNAME^SECRET", "LEAKID90210", "19010203"
LEAKS = ("LEAKNAME", "SECRET", "LEAKID")  # letters: a UID cannot hold them
_LONG = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_VRS = (
    "AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR"
    " US UT UV"
)


@dataclass(frozen=True)
class Case:
    """One C-STORE to send: the announced UIDs, the context's syntax, the data set's bytes."""

    mutation: str
    sop_instance_uid: str
    transfer_syntax: str
    data: bytes


def _base(uid: str, syntax: str, rng: random.Random) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID, ds.SOPInstanceUID = CT, uid
    ds.StudyDate, ds.Modality = "20240101", "CT"
    ds.AccessionNumber = "LEAKID90210A"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, BIRTH
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CT, generate_uid()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "X", "99", NAME
    ref.PurposeOfReferenceCodeSequence = Sequence([code])
    ds.ReferencedImageSequence = Sequence([ref])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if syntax == RLELossless:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = bytes(rng.randrange(256) for _ in range(64))
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(RLELossless, generate_instance_uid=False)
    elif syntax == JPEGBaseline8Bit:
        frame = b"\xff\xd8" + rng.randbytes(50) + b"\xff\xd9"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    else:
        ds.PixelData = rng.randbytes(128)
    return ds


def _encode(ds: Dataset, syntax: str) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(CT)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(str(ds.SOPInstanceUID))
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    return data[144 + struct.unpack_from("<L", data, 140)[0] :]


def _el(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr.encode() in _LONG:
        return head + b"\0\0" + struct.pack("<L", n & 0xFFFFFFFF) + value
    return head + struct.pack("<H", n & 0xFFFF) + value


def _headers(data: bytes) -> list[int]:
    """Offsets of top-level Explicit VR element headers (a cheap walk, stops at Pixel Data)."""
    found, pos = [], 0
    while pos + 8 <= len(data):
        found.append(pos)
        tag = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        if tag == (0x7FE0, 0x0010):
            break
        if vr in _LONG:
            (n,) = struct.unpack_from("<L", data, pos + 8)
            pos += 12 + (0 if n == 0xFFFFFFFF else n)
            if n == 0xFFFFFFFF:
                break
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return found


def _sop_at(data: bytes) -> int:
    return data.index(b"\x08\x00\x18\x00UI")


def _deep(rng: random.Random, undefined: bool) -> bytes:
    inner = _el(0x00080100, "SH", b"LEAKID")
    for _ in range(rng.choice((17, 40, 200, 2000))):
        if undefined:
            item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + inner + b"\xfe\xff\x0d\xe0\0\0\0\0"
            inner = _el(0x00081140, "SQ", b"", 0xFFFFFFFF) + item + b"\xfe\xff\xdd\xe0\0\0\0\0"
        else:
            item = b"\xfe\xff\x00\xe0" + struct.pack("<L", len(inner)) + inner
            inner = _el(0x00081140, "SQ", item)
    return inner


def _splice_before(data: bytes, tag: bytes, raw: bytes) -> bytes:
    at = data.index(tag)
    return data[:at] + raw + data[at:]


Mutation = Callable[[bytes, random.Random, str], tuple[bytes, str]]


def _truncate(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    return data[: rng.randrange(1, len(data))], syntax


def _length(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    at = rng.choice(_headers(data))
    long = data[at + 4 : at + 6] in _LONG
    value = rng.choice((0, 1, 3, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 16)))
    if long:
        return data[: at + 8] + struct.pack("<L", value) + data[at + 12 :], syntax
    return data[: at + 6] + struct.pack("<H", value & 0xFFFF) + data[at + 8 :], syntax


def _odd(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    vr = rng.choice(("US", "UL", "FD", "AT", "SS"))
    return _splice_before(data, b"\xe0\x7f\x10\x00", _el(0x00431001, vr, b"\x01\x02\x03")), syntax


def _undelimited(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    seq = _el(0x00400275, "SQ", b"", 0xFFFFFFFF) + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    seq += _el(0x00100010, "PN", NAME.encode() + b" ")
    return _splice_before(data, b"\xe0\x7f\x10\x00", seq), syntax


def _nesting(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    at = data.index(b"\x08\x00\x40\x11")  # (0008,1140) Referenced Image Sequence
    end = _headers(data)[_headers(data).index(at) + 1]
    return data[:at] + _deep(rng, rng.random() < 0.5) + data[end:], syntax


def _repeat(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    at = _sop_at(data)
    decoy = _el(0x00080018, rng.choice(("CS", "UI")), b"ORIGINAL\\PRIMARY\\AXIAL ")
    return data[:at] + decoy + data[at:], syntax


def _after_pixels(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    return data + rng.choice((bytes(64), rng.randbytes(64), NAME.encode() * 4)), syntax


def _wrong_syntax(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    other = [
        s for s in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit) if s != syntax
    ]
    return data, rng.choice(other)


def _hostile_uid(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    at = _sop_at(data)
    (n,) = struct.unpack_from("<H", data, at + 6)
    kind = rng.randrange(4)
    if kind == 0:  # the value runs into the following elements (432, 744 bytes)
        return data[: at + 6] + struct.pack("<H", rng.choice((432, 744))) + data[at + 8 :], syntax
    value = rng.choice((b"1.2." + PID.encode(), NAME.encode(), b"1.02.3", b" 1.2.3", b"1." * 40))
    value += b"\0" * (len(value) % 2)
    return data[:at] + _el(0x00080018, "UI", value) + data[at + 8 + n :], syntax


def _every_vr(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    vr = rng.choice(_VRS.split())
    value = (NAME + PID).encode()
    raw = _el(0x00091010, vr, value, length=rng.choice((len(value), len(value) + 999, 7)))
    creator = _el(0x00090010, "LO", b"FUZZ")
    pixel = _headers(data)[-1]
    return data[:pixel] + creator + raw + data[pixel:], syntax


def _flip(data: bytes, rng: random.Random, syntax: str) -> tuple[bytes, str]:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.choice(
            (0x00, 0xFF, 0xFE, 0xE0, 0xDD, rng.randrange(256))
        )
    return bytes(out), syntax


MUTATIONS: dict[str, Mutation] = {
    "truncate": _truncate,
    "length": _length,
    "odd-length": _odd,
    "undelimited": _undelimited,
    "nesting": _nesting,
    "repeat": _repeat,
    "after-pixels": _after_pixels,
    "wrong-syntax": _wrong_syntax,
    "hostile-uid": _hostile_uid,
    "every-vr": _every_vr,
    "flip": _flip,
    "none": lambda data, rng, syntax: (data, syntax),
}


def make_case(rng: random.Random, mutation: str | None = None) -> Case:
    """One case; ``mutation`` None = drawn from MUTATIONS."""
    name = mutation or rng.choice(sorted(MUTATIONS))
    syntax = rng.choice(
        (ExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit)
    )
    uid = generate_uid()
    data = _encode(_base(uid, syntax, rng), syntax)
    mutated, context = MUTATIONS[name](data, rng, syntax)
    return Case(name, uid, context, mutated)
