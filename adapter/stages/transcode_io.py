"""Streaming Part-10 I/O for the transcoder: the header up to Pixel Data, the source's frames one
at a time (encapsulated: PS3.5 A.4 items; native: by offset), the elements after Pixel Data, and
an output written incrementally (header, Pixel Data with one item per frame and a Basic Offset
Table, or native frames; a deflated data set goes through zlib as it is written, PS3.5 A.5).

No whole Pixel Data is ever held: memory is a frame (plus the header).
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from adapter.dimse.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from adapter.part10_scan import read_file_meta

__all__ = ["Part10Writer", "PixelSource", "open_source"]

_PIXEL_DATA = 0x7FE00010
_ITEM = b"\xfe\xff\x00\xe0"
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_COPY_CHUNK = 1 << 20


@dataclass
class PixelSource:
    """An open source file positioned for reading: its header, syntax and Pixel Data place."""

    fp: IO[bytes]
    file_meta: FileMetaDataset
    header: Dataset
    transfer_syntax: UID
    #: Where the (7FE0,0010) element's value starts; None without (7FE0,0010) Pixel Data.
    value_offset: int | None
    value_length: int  # 0xFFFFFFFF: encapsulated (undefined length)

    @property
    def frames(self) -> int:
        return int(self.header.get("NumberOfFrames", 1) or 1)

    def iter_frames(self) -> Iterator[bytes]:
        """Each frame's bytes (an encapsulated frame's fragments joined), one at a time."""
        assert self.value_offset is not None
        self.fp.seek(self.value_offset)
        if self.value_length == 0xFFFFFFFF:
            eot = None
            if "ExtendedOffsetTable" in self.header:
                eot = (
                    self.header.ExtendedOffsetTable,
                    self.header.ExtendedOffsetTableLengths,
                )
            yield from generate_frames(self.fp, number_of_frames=self.frames, extended_offsets=eot)
            return
        length = get_expected_length(self.header, "bytes") // self.frames
        for index in range(self.frames):
            self.fp.seek(self.value_offset + index * length)
            data = self.fp.read(length)
            if len(data) != length:
                raise ValueError(f"Pixel Data ends inside frame {index + 1} of {self.frames}")
            yield data

    def trailing(self) -> Dataset:
        """The elements after Pixel Data (less digital signatures and padding, now invalid)."""
        assert self.value_offset is not None
        if self.value_length == 0xFFFFFFFF:
            self._skip_items()
        else:
            self.fp.seek(self.value_offset + self.value_length)
        implicit = self.transfer_syntax == ImplicitVRLittleEndian
        ds = read_dataset(cast(BinaryIO, self.fp), implicit, self.transfer_syntax.is_little_endian)
        for tag in [elem.tag for elem in ds if elem.tag >= 0xFFFA0000]:
            del ds[tag]
        return ds

    def _skip_items(self) -> None:
        self.fp.seek(self.value_offset or 0)
        while True:
            head = self.fp.read(8)
            if len(head) < 8 or head == _SEQ_DELIMITER:
                return
            (length,) = struct.unpack("<I", head[4:])
            self.fp.seek(length, 1)


def _element_header(fp: IO[bytes], implicit: bool, little: bool) -> tuple[int, int, int] | None:
    """(tag, value length, header size) of the element at the file position, or None at EOF."""
    head = fp.read(8)
    if len(head) < 8:
        return None
    order = "<" if little else ">"
    group, elem = struct.unpack(order + "HH", head[:4])
    if implicit:
        return (group << 16) | elem, struct.unpack(order + "I", head[4:])[0], 8
    if head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"):
        (length,) = struct.unpack(order + "I", fp.read(4))
        return (group << 16) | elem, length, 12
    return (group << 16) | elem, struct.unpack(order + "H", head[6:])[0], 8


@contextlib.contextmanager
def open_source(path: Path, scratch: Path) -> Iterator[PixelSource]:
    """``path`` opened for streaming; a deflated data set is inflated to a scratch file first
    (so its frames can be read by offset too)."""
    with contextlib.ExitStack() as stack:
        meta = read_file_meta(path)
        syntax = UID(meta.transfer_syntax_uid)
        source: IO[bytes] = stack.enter_context(open(path, "rb"))
        if syntax.is_deflated:
            inflated = scratch / f"{path.name}.inflated"
            stack.callback(inflated.unlink, missing_ok=True)
            _inflate(source, meta.data_set_offset, inflated)
            source = stack.enter_context(open(inflated, "rb"))
            syntax = ExplicitVRLittleEndian
        header = dcmread(source, stop_before_pixels=True, force=True)
        file_meta = header.file_meta
        position = source.tell()
        implicit = syntax == ImplicitVRLittleEndian
        found = _element_header(source, implicit, syntax.is_little_endian)
        value_offset, length = None, 0
        if found is not None and found[0] == _PIXEL_DATA:
            value_offset, length = position + found[2], found[1]
        yield PixelSource(source, file_meta, header, syntax, value_offset, length)


def _inflate(fp: IO[bytes], offset: int, out: Path) -> None:
    """Write a Part-10 file whose data set is ``fp``'s inflated one, in Explicit VR LE."""
    fp.seek(0)
    head = dcmread(fp, stop_before_pixels=True, specific_tags=[])
    file_meta = FileMetaDataset(head.file_meta)
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    fp.seek(offset)
    with open(out, "wb") as dst:
        _write_preamble(dst, file_meta)
        while chunk := fp.read(_COPY_CHUNK):
            dst.write(inflater.decompress(chunk))
        dst.write(inflater.flush())


def _write_preamble(out: IO[bytes], file_meta: FileMetaDataset) -> None:
    out.write(b"\x00" * 128 + b"DICM")
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, file_meta, enforce_standard=True)
    out.write(buf.getvalue())


class _Deflating:
    """A write-only stream that deflates what it is given into ``out`` (raw deflate)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.written = 0

    def write(self, data: bytes) -> None:
        chunk = self.z.compress(data)
        self.written += len(chunk)
        self.out.write(chunk)

    def close(self) -> None:
        chunk = self.z.flush()
        self.written += len(chunk)
        self.out.write(chunk)
        if self.written % 2:  # PS3.5 A.5: the deflated stream is padded to an even length
            self.out.write(b"\x00")


class Part10Writer:
    """Writes one output file in order: :meth:`begin`, one :meth:`frame` each, :meth:`end`."""

    def __init__(self, out: IO[bytes], syntax: UID, native: bool, bits_allocated: int) -> None:
        self.out, self.syntax, self.native = out, syntax, native
        self.implicit = syntax == ImplicitVRLittleEndian
        self.vr = b"OW" if bits_allocated > 8 else b"OB"
        self._stream: _Deflating | None = None
        self._frames = 0
        self._expected = 0
        self._native_length = 0
        self._bot_at = 0
        self._offsets: list[int] = []
        self._position = 0

    def _write(self, data: bytes) -> None:
        if self._stream is not None:
            self._stream.write(data)
        else:
            self.out.write(data)
        self._position += len(data)

    def _encoded(self, ds: Dataset) -> bytes:
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, self.implicit
        write_dataset(buf, ds)
        return buf.getvalue()

    def begin(self, file_meta: FileMetaDataset, header: Dataset, frames: int, length: int) -> None:
        """Meta, header, and the Pixel Data element's start; ``length``: one native frame."""
        file_meta.TransferSyntaxUID = self.syntax
        file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        _write_preamble(self.out, file_meta)
        if self.syntax == DeflatedExplicitVRLittleEndian:
            self._stream = _Deflating(self.out)
        self._write(self._encoded(header))
        self._expected = frames
        tag = b"\xe0\x7f\x10\x00"
        if self.native:
            self._native_length = frames * length
            value = self._native_length + self._native_length % 2
            if value > 0xFFFFFFFE:
                raise ValueError("native Pixel Data over 4 GiB cannot be written")
            vr = b"" if self.implicit else self.vr + b"\x00\x00"
            self._write(tag + vr + struct.pack("<I", value))
            return
        self._write(tag + b"OB\x00\x00\xff\xff\xff\xff")
        bot = frames if frames > 1 else 0
        self._write(_ITEM + struct.pack("<I", 4 * bot))
        self._bot_at = self.out.tell()
        self._write(b"\x00" * 4 * bot)
        self._offsets = []
        self._position = 0  # offsets count from the first frame item

    def frame(self, data: bytes) -> None:
        self._frames += 1
        if self.native:
            self._write(data)
            return
        self._offsets.append(self._position)
        pad = b"\x00" if len(data) % 2 else b""
        self._write(_ITEM + struct.pack("<I", len(data) + len(pad)))
        self._write(data)
        self._write(pad)

    def end(self, trailing: Dataset | None) -> None:
        if self._frames != self._expected:
            raise ValueError(f"{self._frames} frames written, {self._expected} expected")
        if self.native:
            if self._native_length % 2:
                self._write(b"\x00")
        else:
            self._write(_SEQ_DELIMITER)
        if trailing is not None and len(trailing):
            self._write(self._encoded(trailing))
        if self._stream is not None:
            self._stream.close()
            return
        if not self.native and self._expected > 1:
            if self._offsets[-1] > 0xFFFFFFFF:
                raise ValueError("encapsulated Pixel Data over 4 GiB: no Basic Offset Table")
            end = self.out.tell()
            self.out.seek(self._bot_at)
            self.out.write(struct.pack(f"<{len(self._offsets)}I", *self._offsets))
            self.out.seek(end)
