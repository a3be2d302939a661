"""C-FIND identifiers (PS3.4 C.4.1) <-> QIDO-RS searches (PS3.18 10.6).

A C-FIND identifier's non-empty elements are matching keys and become QIDO query parameters
(wildcards and date ranges share the same syntax); its empty elements are return keys and become
``includefield``. Each QIDO JSON result becomes a C-FIND response identifier holding only what
was asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from adapter.errors import PermanentError

__all__ = [
    "PATIENT_COUNTS",
    "QidoQuery",
    "QueryRetrieveLevel",
    "ReturnKeys",
    "identifier_to_query",
    "result_to_identifier",
]

#: Which attributes a C-FIND response holds: the request's keys (PS3.4 C.4.1.1.3.2) or, as the
#: Java adapter answered, every attribute the store's QIDO-RS result held.
ReturnKeys = Literal["requested", "store"]

#: Patient-level counts (PS3.4 C.6.1.1.2) the SCP computes from the patient's studies.
PATIENT_COUNTS = (
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
)

# Elements that steer the query rather than match (PS3.4 C.4.1.1.3, C.3.4).
_CONTROL_KEYWORDS = {
    "QueryRetrieveLevel",
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "QueryRetrieveView",
}
_UNIQUE_KEYS = {
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


class QueryRetrieveLevel:
    """The levels of the Query/Retrieve information models (PS3.4 C.3)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"
    ALL = (PATIENT, STUDY, SERIES, IMAGE)


@dataclass(frozen=True)
class QidoQuery:
    """One QIDO-RS search: the resource level, scoping UIDs, matches and return keys."""

    level: str
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    match: Mapping[str, str] = field(default_factory=dict)
    includefield: tuple[str, ...] = ()
    return_keywords: tuple[str, ...] = ()
    fuzzy: bool = False

    @cached_property
    def _store_side(self) -> tuple[dict[str, str], dict[str, re.Pattern[str]]]:
        """Person names with a component separator ``^`` (PS3.5 6.2) are sent as their first
        component plus ``*`` -- Orthanc 1.10's QIDO-RS never matches a ``^`` -- and the exact
        DICOM match is then checked here; with fuzzy matching the store decides alone."""
        store: dict[str, str] = {}
        local: dict[str, re.Pattern[str]] = {}
        for keyword, value in self.match.items():
            if self.fuzzy or "^" not in value or _vr(keyword) != "PN":
                store[keyword] = value
                continue
            local[keyword] = _pattern(value)
            prefix = value.split("^", 1)[0].split("\\", 1)[0]
            if "\\" not in value and prefix.strip("*"):
                store[keyword] = prefix.rstrip("*") + "*"
        return store, local

    @property
    def store_match(self) -> dict[str, str]:
        """The matching keys as sent to the store (see ``_store_side``)."""
        return self._store_side[0]

    def accepts(self, result: Mapping[str, Any]) -> bool:
        """Whether a QIDO-RS result meets the matches the store could not check exactly."""
        for keyword, pattern in self._store_side[1].items():
            tag = f"{tag_for_keyword(keyword) or 0:08X}"
            values = (result.get(tag) or {}).get("Value") or [""]
            if not any(pattern.match(_person_name(v)) for v in values):
                return False
        return True


def _vr(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    try:
        return str(dictionary_VR(tag)) if tag is not None else ""
    except KeyError:
        return ""


def _person_name(value: Any) -> str:
    text = str(value.get("Alphabetic", "")) if isinstance(value, Mapping) else str(value)
    return text.rstrip("^ ")


def _pattern(value: str) -> re.Pattern[str]:
    """A DICOM match for PN (PS3.4 C.2.2.2.1, C.2.2.2.4: ``*``, ``?``; a list with ``\\``),
    case-insensitive as PS3.4 permits for PN; trailing empty components do not count."""
    alternatives = []
    for one in value.split("\\"):
        parts = re.split(r"([*?])", one.rstrip("^ "))
        regex = "".join({"*": ".*", "?": "."}.get(p, re.escape(p)) for p in parts)
        alternatives.append(regex)
    return re.compile("(?:" + "|".join(alternatives) + r")\Z", re.IGNORECASE | re.DOTALL)


def _text(value: Any) -> str:
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def identifier_to_query(identifier: Dataset, *, fuzzy: bool = False) -> QidoQuery:
    """Map a C-FIND request identifier to a QIDO-RS search; PermanentError says what is wrong.
    ``fuzzy``: the store does fuzzy person-name matching (``--fuzzy_matching``)."""
    level = str(getattr(identifier, "QueryRetrieveLevel", "") or "").strip().upper()
    if level not in QueryRetrieveLevel.ALL:
        raise PermanentError(
            f"QueryRetrieveLevel must be one of {QueryRetrieveLevel.ALL}, got {level!r}"
        )
    match: dict[str, str] = {}
    include: list[str] = []
    keywords: list[str] = []
    for elem in identifier:
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if not keyword or keyword in _CONTROL_KEYWORDS or elem.tag.is_private:
            continue
        keywords.append(keyword)
        if keyword in PATIENT_COUNTS:  # computed by the SCP, not a QIDO-RS attribute
            continue
        if (
            elem.VR == "SQ"
            or elem.value in (None, "", b"")
            or (isinstance(elem.value, list | tuple) and not elem.value)
        ):
            include.append(keyword)
            continue
        match[keyword] = _text(elem.value)
    study = match.pop("StudyInstanceUID", None) if level in ("SERIES", "IMAGE") else None
    series = match.pop("SeriesInstanceUID", None) if level == "IMAGE" else None
    for uid in (study, series):
        if uid is not None and "\\" in uid:  # a UID list: keep it as a match, not a path
            raise PermanentError("UID list matching at a lower level is not supported")
    return QidoQuery(
        level=level,
        study_instance_uid=study,
        series_instance_uid=series,
        match=match,
        includefield=tuple(include),
        return_keywords=tuple(dict.fromkeys([*_UNIQUE_KEYS.get(level, ()), *keywords])),
        fuzzy=fuzzy,
    )


def result_to_identifier(
    result: Mapping[str, Any], query: QidoQuery, return_keys: ReturnKeys = "requested"
) -> Dataset:
    """Build a C-FIND response identifier from a QIDO JSON result: the requested keys (asked
    for and unknown: empty), or with ``store`` every attribute the result holds."""
    full = Dataset.from_json(dict(result))
    if return_keys == "store":
        full.QueryRetrieveLevel = query.level
        return full
    ds = Dataset()
    for keyword in query.return_keywords:
        if keyword in full:
            ds[keyword] = full[keyword]
        else:
            setattr(ds, keyword, None)  # asked for, not known: return it empty (PS3.4 C.2.2.1.2)
    ds.QueryRetrieveLevel = query.level
    if "SpecificCharacterSet" in full:
        ds.SpecificCharacterSet = full.SpecificCharacterSet
    return ds
