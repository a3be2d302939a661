"""The fast path of de-identification: the same actions as :mod:`adapter.stages.deid_actions`,
applied to the encoded bytes of a Little Endian data set without building pydicom objects.

pydicom's parse, element objects and writer cost ~2.5 ms an instance, more than the whole
import pipeline; this walks the elements once (tens of microseconds), copies what is kept byte
for byte, and encodes only what changes. Rewritten sequences and items get defined lengths.
Whatever it does not handle (text cleaning, private keep rules, UN of undefined length, a
malformed data set) raises :class:`UnsupportedError` and the caller uses the pydicom path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import cache

from pydicom.datadict import dictionary_VR

__all__ = ["RawAction", "UnsupportedError", "element", "find_top", "rewrite", "value_of"]

_LONG = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_ZEROS = {"FL": 4, "FD": 8, "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8, "AT": 4}
_ZEROS.update({"OB": 2, "OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8, "UN": 2})
_TEXT_DUMMY = {
    "AS": b"000Y",
    "DA": b"19000101",
    "DT": b"19000101000000",
    "TM": b"000000",
    "DS": b"0",
    "IS": b"0",
    "UR": b"urn:anonymized",
}
_MAX_DEPTH = 64

#: (tag, vr, depth) -> one of X Z D U K C (None: kept, a sequence walked).
RawAction = Callable[[int, str, int], "str | None"]


class UnsupportedError(Exception):
    """Not for the fast path: use pydicom."""


@cache
def _dict_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def _pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    return value


def element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    """One encoded element (Little Endian)."""
    value = _pad(value, vr)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<L", len(value)) + value
    if vr in _LONG:
        return head + vr.encode() + b"\x00\x00" + struct.pack("<L", len(value)) + value
    if len(value) > 0xFFFF:
        raise UnsupportedError("value too long for its VR")
    return head + vr.encode() + struct.pack("<H", len(value)) + value


def value_of(encoded: bytes, implicit: bool) -> bytes:
    """The value bytes of one element as :func:`element` encodes it."""
    if implicit:
        return encoded[8:]
    return encoded[12:] if encoded[4:6].decode("latin-1") in _LONG else encoded[8:]


def dummy(vr: str) -> bytes:
    if vr in _ZEROS:
        return b"\x00" * _ZEROS[vr]
    return _TEXT_DUMMY.get(vr, b"ANONYMIZED")


def _values(raw: bytes) -> list[str]:
    return raw.decode("latin-1").rstrip("\x00 ").split("\\")


class _Walker:
    def __init__(
        self,
        buf: bytes,
        implicit: bool,
        decide: RawAction,
        map_uid: Callable[[str], str],
        pseudonym: Callable[[str], str],
        shift: Callable[[str], str] | None,
    ) -> None:
        self.buf, self.implicit, self.decide = buf, implicit, decide
        self.map_uid, self.pseudonym, self.shift = map_uid, pseudonym, shift
        self.top: dict[int, bytes] = {}  # top-level values (as written) the caller asks for

    def header(self, pos: int) -> tuple[int, str, int, int]:
        buf = self.buf
        if pos + 8 > len(buf):
            raise UnsupportedError("element header cut off")
        group, elem, length = struct.unpack_from("<HHL", buf, pos)
        tag = (group << 16) | elem
        if self.implicit or group == 0xFFFE:
            return tag, _dict_vr(tag) if group != 0xFFFE else "", length, pos + 8
        vr = buf[pos + 4 : pos + 6].decode("latin-1")
        if vr in _LONG:
            if pos + 12 > len(buf):
                raise UnsupportedError("element header cut off")
            return tag, vr, struct.unpack_from("<L", buf, pos + 8)[0], pos + 12
        if not vr.isalpha() or not vr.isupper():
            raise UnsupportedError("not a VR")
        return tag, vr, struct.unpack_from("<H", buf, pos + 6)[0], pos + 8

    def items(self, pos: int, length: int, depth: int) -> tuple[list[tuple[int, int]], int]:
        """The (start, end) of each item's content, and the end of the sequence."""
        spans: list[tuple[int, int]] = []
        end = pos + length if length != _UNDEFINED else len(self.buf)
        while pos < end:
            tag, _, item_len, content = self.header(pos)
            if tag == _SEQ_END:
                return spans, content
            if tag != _ITEM:
                raise UnsupportedError("not an item")
            if item_len == _UNDEFINED:
                stop = self.skip(content, _ITEM_END, depth + 1)
                spans.append((content, stop - 8))
                pos = stop
            else:
                spans.append((content, content + item_len))
                pos = content + item_len
        if length == _UNDEFINED:
            raise UnsupportedError("sequence not delimited")
        return spans, end

    def skip(self, pos: int, until: int, depth: int) -> int:
        """Past the delimiter ``until`` of elements that start at ``pos``."""
        if depth > _MAX_DEPTH:
            raise UnsupportedError("nested too deep")
        while True:
            tag, vr, length, value = self.header(pos)
            if tag == until:
                return value
            if length == _UNDEFINED:
                if vr not in ("SQ", ""):
                    raise UnsupportedError("undefined length outside a sequence")
                _, pos = self.items(value, length, depth)
            else:
                pos = value + length

    def walk(self, start: int, end: int, depth: int, inserts: list[tuple[int, bytes]]) -> bytes:
        if depth > _MAX_DEPTH:
            raise UnsupportedError("nested too deep")
        out: list[bytes] = []
        pending = list(inserts)
        pos = start
        while pos < end:
            tag, vr, length, value = self.header(pos)
            if length == _UNDEFINED and vr != "SQ":
                if not self.implicit:
                    raise UnsupportedError("undefined length that is not a sequence")
                vr = "SQ"  # implicit VR: undefined length means a sequence (PS3.5 7.5)
            while pending and pending[0][0] <= tag:
                out.append(pending.pop(0)[1])
            if vr == "SQ":
                spans, nxt = self.items(value, length, depth)
            else:
                nxt = value + length
                if nxt > end:
                    raise UnsupportedError("value runs past the end")
            if any(t == tag for t, _ in inserts) or (tag & 0xFFFF == 0 and tag >> 16 != 2):
                pos = nxt  # replaced by an insert, or a group length (stale)
                continue
            if vr == "UN" and _dict_vr(tag) == "SQ":
                raise UnsupportedError("a sequence encoded as UN")
            action = self.decide(tag, vr, depth)
            written = self.act(tag, vr, action, pos, value, nxt, spans if vr == "SQ" else [], depth)
            if written is not None:
                out.append(written)
                if depth == 0:
                    self.top[tag] = written
            pos = nxt
        out.extend(b for _, b in pending)
        return b"".join(out)

    def act(
        self,
        tag: int,
        vr: str,
        action: str | None,
        pos: int,
        value: int,
        end: int,
        spans: list[tuple[int, int]],
        depth: int,
    ) -> bytes | None:
        if action == "X":
            return None
        if action == "Z":
            return element(tag, vr, b"", self.implicit)
        if vr == "SQ":
            items = []
            for a, b in spans:
                content = self.walk(a, b, depth + 1, [])
                items.append(struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content)
            return element(tag, vr, b"".join(items), self.implicit)
        raw = self.buf[value:end]
        if action == "U" or (action == "D" and vr == "UI"):
            if vr != "UI":
                return element(tag, vr, dummy(vr), self.implicit)
            if not raw.strip(b"\x00 "):
                return self.buf[pos:end]
            mapped = "\\".join(self.map_uid(v) for v in _values(raw))
            return element(tag, vr, mapped.encode("ascii"), self.implicit)
        if action == "D":
            if not raw:
                return self.buf[pos:end]
            if tag == 0x00100020:
                new = "\\".join(self.pseudonym(v) for v in _values(raw)).encode("latin-1")
                return element(tag, vr, new, self.implicit)
            return element(tag, vr, dummy(vr), self.implicit)
        if action == "C" and vr in ("DA", "DT") and self.shift is not None and raw.strip():
            shifted = "\\".join(self.shift(v) for v in _values(raw)).encode("latin-1")
            return element(tag, vr, shifted, self.implicit)
        return self.buf[pos:end]  # K, C otherwise, or not in the table: byte for byte


def rewrite(
    buf: bytes,
    implicit: bool,
    decide: RawAction,
    map_uid: Callable[[str], str],
    pseudonym: Callable[[str], str],
    shift: Callable[[str], str] | None = None,
    inserts: list[tuple[int, bytes]] | None = None,
) -> tuple[bytes, dict[int, bytes]]:
    """The rewritten data set ``buf`` and the top-level elements as written (encoded)."""
    walker = _Walker(buf, implicit, decide, map_uid, pseudonym, shift)
    try:
        return walker.walk(0, len(buf), 0, sorted(inserts or [])), walker.top
    except (struct.error, UnicodeError, IndexError) as exc:
        raise UnsupportedError(type(exc).__name__) from exc


def find_top(buf: bytes, implicit: bool, tag: int) -> bytes | None:
    """The raw value of top-level ``tag`` (None: absent) without rewriting anything."""
    walker = _Walker(buf, implicit, lambda t, v, d: None, str, str, None)
    pos = 0
    try:
        while pos < len(buf):
            found, vr, length, value = walker.header(pos)
            if found == tag:
                return buf[value : value + length]
            if found > tag:
                return None
            pos = walker.items(value, length, 0)[1] if vr == "SQ" else value + length
    except (struct.error, IndexError) as exc:
        raise UnsupportedError(type(exc).__name__) from exc
    return None
