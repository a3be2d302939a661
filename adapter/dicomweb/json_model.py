"""DICOM JSON (PS3.18 F.2) accessors and the UID grammar check (PS3.5 9.1) used before any UID
is put into a URL."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from adapter.errors import PermanentError

__all__ = [
    "FAILED_SOP_SEQUENCE",
    "FAILURE_REASON",
    "REFERENCED_SOP_CLASS_UID",
    "REFERENCED_SOP_INSTANCE_UID",
    "REFERENCED_SOP_SEQUENCE",
    "RETRIEVE_URL",
    "SERIES_INSTANCE_UID",
    "SOP_INSTANCE_UID",
    "STUDY_INSTANCE_UID",
    "WARNING_REASON",
    "DicomJson",
    "first_value",
    "get_int",
    "get_str",
    "is_dicom_json_object",
    "is_strict_uid",
    "is_valid_uid",
    "sequence_items",
    "validate_uid",
]

DicomJson = Mapping[str, Any]

STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"

_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_STRICT_UID_RE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")


def is_valid_uid(value: object) -> bool:
    """True if ``value`` is a str of digits and dots, at most 64 characters (PS3.5 9.1)."""
    return isinstance(value, str) and len(value) <= 64 and _UID_RE.fullmatch(value) is not None


def is_strict_uid(value: object) -> bool:
    """True if ``value`` is a UID as PS3.5 9.1 writes them: also no leading zero in a component
    (what a received instance must carry; stored instances are matched with is_valid_uid)."""
    return (
        isinstance(value, str) and len(value) <= 64 and _STRICT_UID_RE.fullmatch(value) is not None
    )


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` if it is a valid UID, else raise PermanentError (it never reaches a URL)."""
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise PermanentError(f"invalid {what} {shown}: must match [0-9]+(.[0-9]+)*, <= 64 chars")
    assert isinstance(value, str)
    return value


def is_dicom_json_object(obj: object) -> bool:
    """True if ``obj`` looks like a DICOM JSON dataset: a dict keyed by 8-hex-digit tags."""
    return isinstance(obj, dict) and all(isinstance(k, str) and _TAG_RE.fullmatch(k) for k in obj)


def _values(obj: DicomJson, tag: str) -> Sequence[Any]:
    element = obj.get(tag) or obj.get(tag.upper()) or obj.get(tag.lower())
    if not isinstance(element, Mapping):
        return ()
    values = element.get("Value")
    return values if isinstance(values, list) else ()


def first_value(obj: DicomJson, tag: str) -> Any:
    """The first entry of an element's ``Value`` array, or None when absent or empty."""
    values = _values(obj, tag)
    return values[0] if values else None


def get_str(obj: DicomJson, tag: str) -> str | None:
    """First value as str (PN values give their Alphabetic group), or None."""
    value = first_value(obj, tag)
    if value is None:
        return None
    if isinstance(value, Mapping):
        alphabetic = value.get("Alphabetic")
        return str(alphabetic) if alphabetic is not None else None
    return str(value)


def get_int(obj: DicomJson, tag: str) -> int | None:
    """First value as int (US/UL/IS values may arrive as numbers or strings), or None."""
    value = first_value(obj, tag)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip(), 0) if value.strip().lower().startswith("0x") else int(value)
        except ValueError:
            return None
    return None


def sequence_items(obj: DicomJson, tag: str) -> list[DicomJson]:
    """The items of an SQ element (an empty SQ is ``{"vr": "SQ"}`` without Value)."""
    return [item for item in _values(obj, tag) if isinstance(item, Mapping)]
