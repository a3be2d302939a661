"""C-FIND identifiers (PS3.4 C.4.1) <-> QIDO-RS searches (PS3.18 10.6).

A C-FIND identifier's non-empty elements are matching keys and become QIDO query parameters
(wildcards and date ranges share the same syntax); its empty elements are return keys and become
``includefield``. Each QIDO JSON result becomes a C-FIND response identifier holding only what
was asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from adapter.errors import PermanentError

__all__ = ["QidoQuery", "QueryRetrieveLevel", "identifier_to_query", "result_to_identifier"]

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


def _text(value: Any) -> str:
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def identifier_to_query(identifier: Dataset) -> QidoQuery:
    """Map a C-FIND request identifier to a QIDO-RS search; PermanentError says what is wrong."""
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
    )


def result_to_identifier(result: Mapping[str, Any], query: QidoQuery) -> Dataset:
    """Build a C-FIND response identifier holding the requested keys from a QIDO JSON result."""
    full = Dataset.from_json(dict(result))
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
