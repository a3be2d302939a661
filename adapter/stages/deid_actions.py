"""The attribute actions applied to a data set (its header, or what follows Pixel Data), inside
every sequence: the basic profile from its action table, and the Java redactor's lists.

Elements are looked at without decoding them (pydicom keeps them raw until read), so a header
is rewritten in well under a millisecond beyond its parse; only changed values are encoded.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from adapter.stages.deid_table import ActionTable
from adapter.stages.deidentify_config import PrivateKeepRule

__all__ = ["BasicProfile", "InstanceFacts", "RedactProfile", "shift_date", "vr_of"]

_DUMMY_TEXT = "ANONYMIZED"
_DUMMY: dict[str, object] = {
    "AE": _DUMMY_TEXT,
    "AS": "000Y",
    "CS": _DUMMY_TEXT,
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": _DUMMY_TEXT,
    "LT": _DUMMY_TEXT,
    "PN": _DUMMY_TEXT,
    "SH": _DUMMY_TEXT,
    "ST": _DUMMY_TEXT,
    "UC": _DUMMY_TEXT,
    "UT": _DUMMY_TEXT,
    "UR": "urn:anonymized",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "OF": b"\x00\x00\x00\x00",
    "OL": b"\x00\x00\x00\x00",
    "OD": b"\x00" * 8,
    "OV": b"\x00" * 8,
    "UN": b"\x00\x00",
}
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT", "PN"})
_IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "IssuerOfPatientID",
)
_MAX_DEPTH = 64
_PATIENT_ID = 0x00100020


def vr_of(elem: DataElement | RawDataElement) -> str:
    """The element's VR (from the dictionary when the encoding is implicit)."""
    vr = elem.VR
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(elem.tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def _empty(vr: str) -> object:
    return Sequence() if vr == "SQ" else None


def _value_length(elem: DataElement | RawDataElement) -> int:
    if isinstance(elem, RawDataElement):
        return 0 if elem.value is None else len(elem.value)
    return 0 if elem.value in (None, "", b"") else 1


@dataclass
class InstanceFacts:
    """What one instance's cleaning needs: the UID mapping, the date shift, and the words that
    identify the patient (removed from descriptors that are cleaned, never logged)."""

    map_uid: Callable[[str], str]
    pseudonym: Callable[[str], str] = lambda _: _DUMMY_TEXT
    day_offset: int = 0
    words: tuple[str, ...] = ()
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)

    @classmethod
    def of(
        cls,
        header: Dataset,
        map_uid: Callable[[str], str],
        offset: Callable[[str], int] | None,
        words_needed: bool = True,
        pseudonym: Callable[[str], str] | None = None,
    ) -> InstanceFacts:
        words: set[str] = set()
        for keyword in _IDENTIFYING if words_needed else ():
            elem = header.data_element(keyword) if keyword in header else None
            if elem is None or elem.value in (None, ""):
                continue
            values = elem.value if elem.VM > 1 else [elem.value]
            for v in values:
                words.update(w for w in re.split(r"[\^=\s,]+", str(v)) if len(w) >= 2)
        patient_id = str(header.get("PatientID", "") or "")
        days = offset(patient_id) if offset is not None else 0
        ordered = tuple(sorted(words, key=len, reverse=True))
        return cls(map_uid, pseudonym or (lambda _: _DUMMY_TEXT), days, ordered)

    def scrub(self, text: str) -> str:
        if not self.words:
            return text
        if self._pattern is None:
            self._pattern = re.compile("|".join(re.escape(w) for w in self.words), re.IGNORECASE)
        return self._pattern.sub("", text)


def shift_date(value: str, days: int) -> str:
    try:
        shifted = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) + dt.timedelta(days)
    except ValueError:
        return value  # not a full date (a partial DT, a range): left as it is
    return shifted.strftime("%Y%m%d") + value[8:]


def _map_values(elem: DataElement, fn: Callable[[str], str]) -> None:
    value = elem.value
    if value in (None, ""):
        return
    if elem.VM > 1:
        elem.value = [fn(str(v)) for v in value]
    else:
        elem.value = fn(str(value))


class BasicProfile:
    """PS3.15 E.1 with options: each attribute's action from the table, private attributes
    removed unless kept by a rule, group lengths dropped (they would be stale)."""

    def __init__(
        self,
        table: ActionTable,
        keep_private: Iterable[PrivateKeepRule] = (),
        modified_dates: bool = False,
    ) -> None:
        self.table = table
        self.modified_dates = modified_dates
        self.keep_private: dict[tuple[int, str], frozenset[int] | None] = {}
        for rule in keep_private:
            elements = frozenset(int(e, 16) for e in rule.elements) or None
            self.keep_private[(int(rule.group, 16), rule.creator.strip())] = elements

    def raw_action(self, tag: int, vr: str, depth: int) -> str | None:
        """The action of the fast path (which runs only without keep_private rules)."""
        if tag >> 16 & 1:
            return "X"
        action = self.table.action(tag)
        return None if action == "K" else action

    def apply(self, ds: Dataset, facts: InstanceFacts, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise ValueError("sequences nested too deep")
        kept_blocks = self._kept_private_blocks(ds)
        for tag in list(ds.keys()):
            t = int(tag)
            group, element = t >> 16, t & 0xFFFF
            if element == 0 and group != 0x0002:
                del ds[tag]  # a group length: stale once anything changed
                continue
            if group & 1:
                if not self._private_kept(group, element, kept_blocks):
                    del ds[tag]
                elif vr_of(ds.get_item(tag)) == "SQ":
                    for item in ds[tag].value:
                        self.apply(item, facts, depth + 1)
                continue
            action = self.table.action(t)
            if action is None or action == "K":
                if vr_of(ds.get_item(tag)) == "SQ":
                    for item in ds[tag].value:
                        self.apply(item, facts, depth + 1)
                continue
            self._act(ds, tag, action, facts, depth)

    def _act(self, ds: Dataset, tag: int, action: str, facts: InstanceFacts, depth: int) -> None:
        raw = ds.get_item(tag)
        vr = vr_of(raw)
        if action == "X":
            del ds[tag]
        elif action == "Z":
            ds[tag] = DataElement(tag, vr, _empty(vr))
        elif vr == "SQ":  # D, U (U*), C: the sequence stays, its items are cleaned
            for item in ds[tag].value:
                self.apply(item, facts, depth + 1)
        elif action == "U" or (vr == "UI" and action == "D"):
            if vr == "UI":
                _map_values(ds[tag], facts.map_uid)
            else:
                ds[tag] = DataElement(tag, vr, _DUMMY.get(vr))
        elif action == "D":
            if not _value_length(raw):
                return  # an empty value stays empty (a Type 2 attribute)
            if tag == _PATIENT_ID:  # one patient stays one patient
                _map_values(ds[tag], facts.pseudonym)
            else:
                ds[tag] = DataElement(tag, vr, _DUMMY.get(vr))
        elif action == "C":
            self._clean(ds, tag, vr, facts)

    def _clean(self, ds: Dataset, tag: int, vr: str, facts: InstanceFacts) -> None:
        elem = ds[tag]
        if vr in ("DA", "DT"):
            if self.modified_dates and facts.day_offset:
                _map_values(elem, lambda v: shift_date(v, facts.day_offset))
        elif vr in _TEXT_VRS:
            _map_values(elem, facts.scrub)

    def _kept_private_blocks(self, ds: Dataset) -> dict[int, frozenset[int] | None]:
        """(group << 8 | block) -> the element bytes kept in it (None: all) for the private
        creators a rule names."""
        if not self.keep_private:
            return {}
        blocks: dict[int, frozenset[int] | None] = {}
        for tag in list(ds.keys()):
            t = int(tag)
            group, element = t >> 16, t & 0xFFFF
            if group & 1 and 0x10 <= element <= 0xFF:
                creator = ds[tag].value
                key = (group, str(creator).strip() if creator else "")
                if key in self.keep_private:
                    blocks[(group << 8) | element] = self.keep_private[key]
        return blocks

    @staticmethod
    def _private_kept(group: int, element: int, blocks: dict[int, frozenset[int] | None]) -> bool:
        if not blocks:
            return False
        if 0x10 <= element <= 0xFF:  # a private creator: kept with its block
            return (group << 8) | element in blocks
        block = (group << 8) | (element >> 8)
        if block not in blocks:
            return False
        wanted = blocks[block]
        return wanted is None or (element & 0xFF) in wanted


#: The UIDs the Java redactor replaced at the top level, and what refers to them (replaced
#: here at every depth so references still point at the de-identified instances).
_JAVA_UIDS = frozenset({0x00080018, 0x0020000D, 0x0020000E})
_REFERENCES = frozenset({0x00081155, 0x00041511})


class RedactProfile:
    """The Java adapter's redactor: at the top level, a listed attribute (remove list) or an
    unlisted one (keep list) keeps its tag with an empty value (dcm4che ``setNull``); SOP
    Instance, Study and Series Instance UIDs are replaced whatever the lists say."""

    def __init__(self, tags: Iterable[int], keep_list: bool) -> None:
        self.tags = frozenset(tags)
        self.keep_list = keep_list

    def raw_action(self, tag: int, vr: str, depth: int) -> str | None:
        """The same as :meth:`apply`, for the fast path."""
        if tag in _JAVA_UIDS or (depth and tag in _REFERENCES):
            return "U" if vr == "UI" else None
        if depth == 0 and self.nulls(tag):
            return "Z"
        return None

    def nulls(self, tag: int) -> bool:
        return (tag in self.tags) != self.keep_list

    def apply(self, ds: Dataset, facts: InstanceFacts, depth: int = 0) -> None:
        for tag in list(ds.keys()):
            t = int(tag)
            if t & 0xFFFF == 0 and t >> 16 != 0x0002:
                del ds[tag]  # group lengths: dcm4che does not keep them either
                continue
            if t in _JAVA_UIDS or (depth and t in _REFERENCES):
                if vr_of(ds.get_item(tag)) == "UI":
                    _map_values(ds[tag], facts.map_uid)
                continue
            if depth == 0 and self.nulls(t):
                vr = vr_of(ds.get_item(tag))
                ds[tag] = DataElement(t, vr, _empty(vr))
            elif vr_of(ds.get_item(tag)) == "SQ":
                if depth > _MAX_DEPTH:
                    raise ValueError("sequences nested too deep")
                for item in ds[tag].value:  # inside: only the UIDs that refer to replaced ones
                    self.apply(item, facts, depth + 1)
