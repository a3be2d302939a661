"""A fast, bounded scan of a Part-10 file's header (PS3.10 7.1, PS3.5 7.1) in the Little Endian
transfer syntaxes: the transfer syntax, the four UIDs the importer needs, and where Pixel Data
starts. Values are skipped by seeking; sequences of undefined length are walked item by item.

pydicom's reader does the same in ~1 ms per instance, which at hundreds of instances per second
is most of a core; this costs tens of microseconds. Anything it does not expect raises
:class:`ScanError` and the caller falls back to pydicom (which then names the problem).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pynetdicom.dsutils import split_dataset

__all__ = [
    "FileMeta",
    "HeaderFacts",
    "ScanError",
    "TruncatedError",
    "element_end",
    "read_file_meta",
    "scan_part10_header",
]

_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_DEFLATED_JPIP = frozenset({"1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"})  # deflated
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_WANTED = {
    0x00080016: "sop_class_uid",
    0x00080018: "sop_instance_uid",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
}
_MAX_DEPTH = 32
_MAX_ELEMENTS = 200_000
_HEAD = struct.Struct("<HHL")


class ScanError(Exception):
    """Not something this scanner reads: use the full parser."""


class TruncatedError(ScanError):
    """The file ends inside an element header: it was cut off (PS3.10 7.1)."""


@dataclass(frozen=True)
class HeaderFacts:
    """What the scan found; ``pixel_pos`` is the offset of the Pixel Data element (or the end
    of the file when there is none)."""

    transfer_syntax_uid: str
    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    pixel_pos: int


def _text(raw: bytes) -> str:
    try:
        return raw.rstrip(b"\x00 ").decode("ascii")
    except UnicodeDecodeError:
        raise ScanError("a UID that is not ASCII") from None


class _Reader:
    def __init__(self, fp: BinaryIO, size: int, implicit: bool) -> None:
        self.fp, self.size, self.implicit = fp, size, implicit
        self.budget = _MAX_ELEMENTS

    def header(self, pos: int) -> tuple[int, bytes, int, int]:
        """(tag, VR or b'', value length, value offset) of the element at ``pos``."""
        self.budget -= 1
        if self.budget <= 0:
            raise ScanError("too many elements")
        self.fp.seek(pos)
        head = self.fp.read(8)
        if len(head) < 8:
            raise TruncatedError("element header cut off")
        group, element, length = _HEAD.unpack(head)
        tag = (group << 16) | element
        if self.implicit or group == 0xFFFE:
            return tag, b"", length, pos + 8
        vr = head[4:6]
        if vr in _LONG_VRS:
            more = self.fp.read(4)
            if len(more) < 4:
                raise ScanError("element header cut off")
            return tag, vr, struct.unpack("<L", more)[0], pos + 12
        if not vr.isalpha() or not vr.isupper():
            raise ScanError("not a VR")
        return tag, vr, struct.unpack("<H", head[6:8])[0], pos + 8

    def skip_undefined(self, pos: int, depth: int) -> int:
        """Past a sequence of undefined length whose items start at ``pos``."""
        if depth > _MAX_DEPTH:
            raise ScanError("sequences nested too deep")
        while True:
            tag, _, length, pos = self.header(pos)
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM:
                raise ScanError("not an item")
            pos = self.skip_item(pos, length, depth)

    def skip_item(self, pos: int, length: int, depth: int) -> int:
        if length != _UNDEFINED:
            return pos + length
        while True:
            tag, vr, value_length, value_pos = self.header(pos)
            if tag == _ITEM_END:
                return value_pos
            pos = self.skip_value(value_pos, value_length, depth + 1, vr)

    def skip_value(self, pos: int, length: int, depth: int, vr: bytes) -> int:
        if vr == b"UN" and length == _UNDEFINED:
            raise ScanError("UN of undefined length (implicit VR inside)")
        end = self.skip_undefined(pos, depth) if length == _UNDEFINED else pos + length
        if end > self.size:
            raise ScanError("value runs past the end of the file")
        return end


@dataclass(frozen=True)
class FileMeta:
    """The File Meta Information a sender needs (PS3.10 7.1) and where the data set starts."""

    transfer_syntax_uid: str
    media_storage_sop_class_uid: str
    media_storage_sop_instance_uid: str
    data_set_offset: int


def _meta(fp: BinaryIO) -> FileMeta:
    """The File Meta Information of the file at ``fp`` (positioned at 0)."""
    head = fp.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ScanError("no File Meta Information group length")
    if head[136:138] != b"UL":
        raise ScanError("meta group length is not UL")
    (group_length,) = struct.unpack("<L", head[140:144])
    if group_length > 1 << 20:
        raise ScanError("meta group too long")
    meta = fp.read(group_length)
    if len(meta) < group_length:
        raise ScanError("meta cut off")
    values: dict[int, str] = {}
    pos = 0
    while pos + 8 <= len(meta):
        group, element = struct.unpack_from("<HH", meta, pos)
        vr = meta[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(meta):
                raise ScanError("meta element header cut off")
            (length,) = struct.unpack_from("<L", meta, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", meta, pos + 6)
            pos += 8
        if group != 0x0002:
            raise ScanError("non-meta element in the meta group")
        if element in (0x0002, 0x0003, 0x0010):
            values[element] = _text(meta[pos : pos + length])
        pos += length
    if 0x0010 not in values:
        raise ScanError("no Transfer Syntax UID")
    return FileMeta(
        transfer_syntax_uid=values[0x0010],
        media_storage_sop_class_uid=values.get(0x0002, ""),
        media_storage_sop_instance_uid=values.get(0x0003, ""),
        data_set_offset=144 + group_length,
    )


def read_file_meta(path: Path) -> FileMeta:
    """The File Meta Information of the Part-10 file at ``path``: this reader, or pydicom for
    what it does not read. Raises ValueError (or OSError) when the file has none."""
    try:
        with open(path, "rb") as fp:
            return _meta(fp)
    except (ScanError, struct.error):
        pass
    try:
        meta, offset = split_dataset(path)
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise ValueError(f"no readable File Meta Information: {type(exc).__name__}") from exc
    return FileMeta(
        transfer_syntax_uid=str(meta.get("TransferSyntaxUID", "")),
        media_storage_sop_class_uid=str(meta.get("MediaStorageSOPClassUID", "")),
        media_storage_sop_instance_uid=str(meta.get("MediaStorageSOPInstanceUID", "")),
        data_set_offset=offset,
    )


def scan_part10_header(fp: BinaryIO, size: int) -> HeaderFacts:
    """Scan the open Part-10 file ``fp`` of ``size`` bytes (Implicit or Explicit VR LE)."""
    fp.seek(0)
    meta = _meta(fp)
    syntax, pos = meta.transfer_syntax_uid, meta.data_set_offset
    # Explicit/Implicit VR LE, and the encapsulated syntaxes (JPEG family .4.x, RLE .5) whose
    # data sets are Explicit VR LE too; Deflated and Big Endian go to pydicom.
    encapsulated = syntax.startswith("1.2.840.10008.1.2.4.") or syntax == "1.2.840.10008.1.2.5"
    plain = syntax in (_EXPLICIT_LE, _IMPLICIT_LE)
    if syntax in _DEFLATED_JPIP or not (plain or encapsulated):
        raise ScanError("transfer syntax not scanned here")
    reader = _Reader(fp, size, implicit=syntax == _IMPLICIT_LE)
    found: dict[str, str] = {}
    while pos < size:
        tag, vr, length, value_pos = reader.header(pos)
        if tag in _PIXEL_TAGS:
            break
        name = _WANTED.get(tag)
        if name is not None:
            if vr not in (b"", b"UI"):
                raise ScanError("a UID element whose VR is not UI")
            if length > 64:
                raise ScanError("UID value too long")  # the full parser names it
            fp.seek(value_pos)
            found[name] = _text(fp.read(length))
        pos = reader.skip_value(value_pos, length, 0, vr)
    return HeaderFacts(
        transfer_syntax_uid=syntax,
        sop_class_uid=found.get("sop_class_uid"),
        sop_instance_uid=found.get("sop_instance_uid"),
        study_instance_uid=found.get("study_instance_uid"),
        series_instance_uid=found.get("series_instance_uid"),
        pixel_pos=min(pos, size),
    )


def element_end(fp: BinaryIO, size: int, pos: int, implicit: bool) -> int:
    """The offset just past the element that starts at ``pos`` (e.g. Pixel Data: a native
    value, or encapsulated fragments up to their Sequence Delimitation Item)."""
    reader = _Reader(fp, size, implicit=implicit)
    _, vr, length, value_pos = reader.header(pos)
    end = reader.skip_value(value_pos, length, 0, vr)
    if end > size:
        raise TruncatedError("the element runs past the end of the file")
    return end
