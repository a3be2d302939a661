"""A fast, bounded scan of a Part-10 file (PS3.10 7.1, PS3.5 7.1) in the Little Endian transfer
syntaxes: the transfer syntax, the four UIDs the importer needs, where Pixel Data starts -- and
the structure a store trips on, checked before we acknowledge (docs/validation.md):

* every element header is whole and has a known VR (explicit VR); values of fixed-size VRs are
  a multiple of their size; UI values are digits and dots, at most 64 bytes each;
* no attribute twice in a data set or item, and after Pixel Data only higher tags (PS3.5 7.1);
* every value, item and sequence of defined length lies inside its parent (and the file);
  undefined lengths only on SQ, items and encapsulated Pixel Data, each closed by its
  delimiter (of length 0), delimiters nowhere else;
* sequences nest at most :data:`MAX_DEPTH` deep;
* Pixel Data is encapsulated (fragments ending with a Sequence Delimitation Item, PS3.5 A.4)
  exactly when the transfer syntax is, and whatever follows it is well-formed elements.

Values are skipped by seeking (pixel data is never read), so a 1 GiB instance costs a few
seeks. :class:`InvalidError` means malformed: refuse it. Another :class:`ScanError` means "not
read here" (Big Endian, Deflate, UN of undefined length, ...): the caller falls back to pydicom.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom._dicom_dict import DicomDictionary
from pynetdicom.dsutils import split_dataset

__all__ = [
    "MAX_DEPTH",
    "FileMeta",
    "HeaderFacts",
    "InvalidError",
    "NotADataSetError",
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
_VRS = _LONG_VRS | frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split()
)
_WIDTH = {b"AT": 4, b"FL": 4, b"FD": 8, b"OD": 8, b"OF": 4, b"OL": 4, b"OV": 8, b"OW": 2}
_WIDTH |= {b"SL": 4, b"SS": 2, b"SV": 8, b"UL": 4, b"US": 2, b"UV": 8}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = frozenset({_PIXEL_DATA, 0x7FE00008, 0x7FE00009})
_WANTED = {
    0x00080016: "SOP Class UID",
    0x00080018: "SOP Instance UID",
    0x0020000D: "Study Instance UID",
    0x0020000E: "Series Instance UID",
}
_UID_BYTES = frozenset(b"0123456789.\\")
#: Sequences nested deeper than this are refused: real data sets use a handful of levels, and
#: recursive parsers (dcmtk under Orthanc) crash on thousands.
MAX_DEPTH = 16
_MAX_ELEMENTS = 200_000
_MAX_UI_LENGTH = 64 * 64  # a UI of up to 64 values of 64 bytes
_HEAD = struct.Struct("<HHL")


class ScanError(Exception):
    """Not something this scanner reads: use the full parser."""


class InvalidError(ScanError):
    """The data set is malformed (the message is a short reason naming tags, never values)."""


class NotADataSetError(InvalidError):
    """Not even the first element of the data set reads: garbage, no SOP Instance UID."""


class TruncatedError(InvalidError):
    """The file ends inside an element: it was cut off (PS3.10 7.1)."""


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
        raise InvalidError("a UID that is not ASCII") from None


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _implicit_vr(tag: int) -> bytes:
    entry = DicomDictionary.get(tag)
    return entry[0].encode() if entry is not None and len(entry[0]) == 2 else b""


class _Reader:
    """The walk; ``found`` and ``pixel_pos`` describe the top-level data set."""

    def __init__(self, fp: BinaryIO, size: int, implicit: bool, encapsulated: bool) -> None:
        self.fp, self.size, self.implicit, self.encapsulated = fp, size, implicit, encapsulated
        self.budget = _MAX_ELEMENTS
        self.found: dict[int, str] = {}
        self.pixel_pos: int | None = None

    def _cut(self, what: str, limit: int) -> InvalidError:
        """Cut off by the end of the file, or running past the end of the enclosing item."""
        return TruncatedError(what) if limit >= self.size else InvalidError(f"{what} (item)")

    def header(self, pos: int, limit: int) -> tuple[int, bytes, int, int]:
        """(tag, VR or b'', value length, value offset) of the element at ``pos``."""
        self.budget -= 1
        if self.budget <= 0:
            raise ScanError("too many elements")
        if pos + 8 > limit:
            raise self._cut("element header cut off", limit)
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
            if len(more) < 4 or pos + 12 > limit:
                raise self._cut(f"{_tag(tag)} header cut off", limit)
            return tag, vr, struct.unpack("<L", more)[0], pos + 12
        if vr not in _VRS:
            raise InvalidError(f"{_tag(tag)} has no valid VR")
        return tag, vr, struct.unpack("<H", head[6:8])[0], pos + 8

    def elements(self, pos: int, limit: int, depth: int, delimited: bool) -> int:
        """A data set or item from ``pos``: to ``limit``, or (``delimited``) to its Item
        Delimitation Item; returns the offset after it."""
        seen: set[int] = set()
        while delimited or pos < limit:
            try:
                tag, vr, length, value_pos = self.header(pos, limit)
            except TruncatedError:
                raise
            except InvalidError as exc:
                if depth == 0 and not seen:  # not even a first element: garbage
                    raise NotADataSetError(str(exc)) from None
                raise
            if tag == _ITEM_END and delimited and depth:
                if length:
                    raise InvalidError("Item Delimitation Item with a length")
                return value_pos
            if tag >> 16 == 0xFFFE:
                raise InvalidError(f"{_tag(tag)} where a data element belongs")
            if tag in seen:
                raise InvalidError(f"repeated attribute {_tag(tag)}")
            seen.add(tag)
            if depth == 0 and self.pixel_pos is not None and tag < _PIXEL_DATA:
                raise InvalidError(f"{_tag(tag)} after Pixel Data")
            if depth == 0:
                self._top(tag, vr, length, value_pos)
            pos = self.value(tag, vr or _implicit_vr(tag), length, value_pos, limit, depth)
        return pos

    def _top(self, tag: int, vr: bytes, length: int, value_pos: int) -> None:
        if tag in _PIXEL_TAGS and self.pixel_pos is None:
            self.pixel_pos = value_pos - (8 if self.implicit or vr not in _LONG_VRS else 12)
            encapsulated = length == _UNDEFINED
            if tag == _PIXEL_DATA and encapsulated != self.encapsulated:
                raise InvalidError(
                    "encapsulated Pixel Data in a native transfer syntax"
                    if encapsulated
                    else "native Pixel Data in an encapsulated transfer syntax"
                )
        name = _WANTED.get(tag)
        if name is None:
            return
        if vr not in (b"", b"UI"):
            raise InvalidError(f"{name} {_tag(tag)} is not a UI")
        if length > 64:
            raise InvalidError(f"{name} too long ({length} bytes)")
        self.fp.seek(value_pos)
        self.found[tag] = _text(self.fp.read(length))

    def value(self, tag: int, vr: bytes, length: int, pos: int, limit: int, depth: int) -> int:
        """Past the value at ``pos``, checked against its VR and its parent's ``limit``."""
        if length == _UNDEFINED:
            if tag == _PIXEL_DATA and vr in (b"", b"OB", b"OW"):
                return self.fragments(pos, limit)
            if vr == b"UN":
                raise ScanError("UN of undefined length (implicit VR inside)")
            if vr not in (b"", b"SQ") and not self.implicit:
                raise InvalidError(f"{_tag(tag)} {vr.decode()} of undefined length")
            return self.sequence(pos, limit, depth + 1, None)
        end = pos + length
        if end > limit:
            if limit >= self.size:
                raise TruncatedError(f"{_tag(tag)} needs {length} bytes, {self.size - pos} left")
            raise InvalidError(f"{_tag(tag)} runs past the end of its item")
        if vr == b"SQ":
            return self.sequence(pos, end, depth + 1, end)
        width = _WIDTH.get(vr)
        if width and length % width:
            raise InvalidError(f"{_tag(tag)} {vr.decode()} of length {length}")
        if vr == b"UI" and tag not in _WANTED and length:
            self._check_ui(tag, pos, length)
        return end

    def _check_ui(self, tag: int, pos: int, length: int) -> None:
        if length > _MAX_UI_LENGTH:
            raise InvalidError(f"{_tag(tag)} UI of {length} bytes")
        self.fp.seek(pos)
        raw = self.fp.read(length).rstrip(b"\x00 ")
        if not set(raw) <= _UID_BYTES or any(
            len(uid) > 64 or not uid or b".." in uid or uid[:1] == b"." or uid[-1:] == b"."
            for uid in raw.split(b"\\")
        ):
            raise InvalidError(f"{_tag(tag)} is not a valid UID")

    def sequence(self, pos: int, limit: int, depth: int, end: int | None) -> int:
        """Items from ``pos`` up to ``end`` (defined length) or the Sequence Delimitation Item."""
        if depth > MAX_DEPTH:
            raise InvalidError(f"sequences nested deeper than {MAX_DEPTH}")
        while end is None or pos < end:
            tag, _, length, value_pos = self.header(pos, end if end is not None else limit)
            if tag == _SEQ_END and end is None:
                if length:
                    raise InvalidError("Sequence Delimitation Item with a length")
                return value_pos
            if tag != _ITEM:
                raise InvalidError(f"{_tag(tag)} where a sequence item belongs")
            outer = end if end is not None else limit
            if length == _UNDEFINED:
                pos = self.elements(value_pos, outer, depth, delimited=True)
            elif value_pos + length > outer:
                raise self._cut("item longer than its sequence", outer)
            else:
                pos = self.elements(value_pos, value_pos + length, depth, delimited=False)
        return pos

    def fragments(self, pos: int, limit: int) -> int:
        """Encapsulated Pixel Data (PS3.5 A.4): items of defined length, then the delimiter."""
        while True:
            tag, _, length, value_pos = self.header(pos, limit)
            if tag == _SEQ_END:
                if length:
                    raise InvalidError("Pixel Data delimiter with a length")
                return value_pos
            if tag != _ITEM or length == _UNDEFINED:
                raise InvalidError("encapsulated Pixel Data: bad fragment item")
            pos = value_pos + length
            if pos > limit:
                raise self._cut("Pixel Data fragment cut off", limit)


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
    """Scan the open Part-10 file ``fp`` of ``size`` bytes (Implicit or Explicit VR LE, and the
    encapsulated syntaxes); InvalidError if it is malformed, ScanError if not read here."""
    fp.seek(0)
    meta = _meta(fp)
    syntax, pos = meta.transfer_syntax_uid, meta.data_set_offset
    # Explicit/Implicit VR LE, and the encapsulated syntaxes (JPEG family .4.x, RLE .5) whose
    # data sets are Explicit VR LE too; Deflated and Big Endian go to pydicom.
    encapsulated = syntax.startswith("1.2.840.10008.1.2.4.") or syntax == "1.2.840.10008.1.2.5"
    plain = syntax in (_EXPLICIT_LE, _IMPLICIT_LE)
    if syntax in _DEFLATED_JPIP or not (plain or encapsulated):
        raise ScanError("transfer syntax not scanned here")
    reader = _Reader(fp, size, implicit=syntax == _IMPLICIT_LE, encapsulated=encapsulated)
    reader.elements(pos, size, 0, delimited=False)
    found = reader.found
    return HeaderFacts(
        transfer_syntax_uid=syntax,
        sop_class_uid=found.get(0x00080016),
        sop_instance_uid=found.get(0x00080018),
        study_instance_uid=found.get(0x0020000D),
        series_instance_uid=found.get(0x0020000E),
        pixel_pos=size if reader.pixel_pos is None else reader.pixel_pos,
    )


def element_end(fp: BinaryIO, size: int, pos: int, implicit: bool) -> int:
    """The offset just past the element that starts at ``pos`` (e.g. Pixel Data: a native
    value, or encapsulated fragments up to their Sequence Delimitation Item)."""
    reader = _Reader(fp, size, implicit=implicit, encapsulated=False)
    tag, vr, length, value_pos = reader.header(pos, size)
    end: int = reader.value(tag, vr or _implicit_vr(tag), length, value_pos, size, 0)
    return end
