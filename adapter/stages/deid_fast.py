"""One Part-10 file through the fast path (:mod:`adapter.stages.deid_raw`): File Meta group,
header and what follows Pixel Data rewritten as bytes, Pixel Data copied by the kernel."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from adapter.part10_scan import HeaderFacts, element_end
from adapter.stages.deid_raw import (
    RawAction,
    UnsupportedError,
    element,
    find_top,
    rewrite,
    value_of,
)

__all__ = ["FastJob", "Written", "rewrite_file", "send_bytes"]

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_PIXEL_DATA = 0x7FE00010
_UIDS = {0x00080018: "sop", 0x0020000D: "study", 0x0020000E: "series"}


@dataclass(frozen=True)
class Written:
    """The UIDs and transfer syntax of the file written, and the header facts the
    burned-in policy reads."""

    sop: str | None
    study: str | None
    series: str | None
    transfer_syntax: str


@dataclass(frozen=True)
class FastJob:
    """What the fast path needs from the stage for one file."""

    decide: RawAction
    map_uid: Callable[[str], str]
    pseudonym: Callable[[str], str]
    #: patient id -> day shift (None: dates are not shifted)
    day_offset: Callable[[str], int] | None
    shift: Callable[[str, int], str]
    inserts: Callable[[bool], list[tuple[int, bytes]]]
    maps_media_storage_uid: bool
    nulls_pixel_data: bool
    #: (Burned In Annotation, Recognizable Visual Features, has pixels) -> raise or not
    check_burned_in: Callable[[str, str, bool], None]
    max_tail: int


def send_bytes(src: BinaryIO, dst: BinaryIO, start: int, end: int) -> None:
    """Copy bytes [start, end) of ``src`` to ``dst`` in the kernel where it can."""
    dst.flush()
    offset, out_fd, in_fd = start, dst.fileno(), src.fileno()
    try:
        while offset < end:
            sent = os.sendfile(out_fd, in_fd, offset, min(end - offset, 1 << 30))
            if sent == 0:
                raise EOFError("the file ended inside Pixel Data")
            offset += sent
        return
    except OSError:
        pass
    src.seek(offset)
    while offset < end:
        chunk = src.read(min(end - offset, 1 << 20))
        if not chunk:
            raise EOFError("the file ended inside Pixel Data")
        dst.write(chunk)
        offset += len(chunk)


def _text(raw: bytes | None) -> str:
    return raw.decode("latin-1").rstrip("\x00 ").strip() if raw else ""


_LONG_META_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT")


def _meta_elements(meta: bytes) -> Iterator[tuple[int, str, int, int, int]]:
    """(tag, VR, element offset, value offset, value length) of each File Meta element
    (explicit VR LE, PS3.10 7.1)."""
    pos = 0
    while pos + 8 <= len(meta):
        group, elem = struct.unpack_from("<HH", meta, pos)
        vr = meta[pos + 4 : pos + 6].decode("latin-1")
        if vr in _LONG_META_VRS:
            (length,) = struct.unpack_from("<L", meta, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", meta, pos + 6)
            start = pos + 8
        yield (group << 16) | elem, vr, pos, start, length
        pos = start + length


def _meta(meta: bytes, replace: dict[int, bytes]) -> bytes:
    """The File Meta group (explicit VR LE) with ``replace``d values and its group length."""
    out: list[bytes] = []
    for tag, vr, pos, start, length in _meta_elements(meta):
        if tag >> 16 != 0x0002:
            raise UnsupportedError("non-meta element in the meta group")
        if tag in replace:
            out.append(element(tag, vr, replace[tag], implicit=False))
        elif tag & 0xFFFF != 0:
            out.append(meta[pos : start + length])
    body = b"".join(out)
    return element(0x00020000, "UL", struct.pack("<L", len(body)), implicit=False) + body


def rewrite_file(src: BinaryIO, size: int, scan: HeaderFacts, out: Path, job: FastJob) -> Written:
    implicit = scan.transfer_syntax_uid == _IMPLICIT_LE
    src.seek(0)
    head = src.read(scan.pixel_pos)
    (group_length,) = struct.unpack_from("<L", head, 140)
    offset = 144 + group_length
    dataset = head[offset:]
    shift = None
    if job.day_offset is not None:
        days = job.day_offset(_text(find_top(dataset, implicit, 0x00100020)))
        if days:
            shift = lambda v: job.shift(v, days)  # noqa: E731
    header, top = rewrite(
        dataset, implicit, job.decide, job.map_uid, job.pseudonym, shift, job.inserts(implicit)
    )

    def value(tag: int) -> str:
        return _text(value_of(top[tag], implicit)) if tag in top else ""

    start = scan.pixel_pos
    job.check_burned_in(value(0x00280301), value(0x00280302), start < size)
    end = element_end(src, size, start, implicit) if start < size else size
    syntax = scan.transfer_syntax_uid
    replace: dict[int, bytes] = {}
    if start < size and job.nulls_pixel_data:  # the Java redactor's keep list without it
        encapsulated = syntax not in (_IMPLICIT_LE, _EXPLICIT_LE)
        header += element(_PIXEL_DATA, "OB" if encapsulated else "OW", b"", implicit)
        if encapsulated:
            syntax = _EXPLICIT_LE
            replace[0x00020010] = syntax.encode()
        start = end
    tail = b""
    if end < size:
        if size - end > job.max_tail:
            raise UnsupportedError("more after Pixel Data than padding or signatures")
        src.seek(end)
        tail, _ = rewrite(src.read(size - end), implicit, job.decide, job.map_uid, job.pseudonym)
    meta = head[132:offset]
    media = _text(find_meta(meta, 0x00020003))
    if media and job.maps_media_storage_uid:
        replace[0x00020003] = job.map_uid(media).encode()
    with open(out, "wb") as dst:
        dst.write(head[:132])
        dst.write(_meta(meta, replace))
        dst.write(header)
        if start < end:
            send_bytes(src, dst, start, end)
        dst.write(tail)
    uids = {name: value(tag) or None for tag, name in _UIDS.items()}
    return Written(uids["sop"], uids["study"], uids["series"], syntax)


def find_meta(meta: bytes, tag: int) -> bytes | None:
    """The value of one File Meta element (None: absent)."""
    for found, _, _, start, length in _meta_elements(meta):
        if found == tag:
            return meta[start : start + length]
    return None
