"""Which notifications the exporter delivers: action, modality, store name, other attributes.

Checked in two steps: :meth:`NotificationFilter.skip_reason` on the message alone (no fetch), then
:meth:`NotificationFilter.skip_reason_for_header` on the fetched instance's header for conditions
the message could not answer (a ``modality`` attribute is optional; DICOM keywords only live in
the instance). Attribute values are shell-style patterns (``CT*``), matched case-sensitively.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset

from exporter.config import FilterConfig
from exporter.notification import Notification

__all__ = ["NotificationFilter"]


def _store_matches(store_name: str, wanted: tuple[str, ...]) -> bool:
    """A configured name matches the full resource name or just the store ID after the last /."""
    short = store_name.rsplit("/", 1)[-1]
    return any(fnmatchcase(store_name, w) or fnmatchcase(short, w) for w in wanted)


class NotificationFilter:
    """All configured conditions must hold; deletions are never exported."""

    def __init__(self, config: FilterConfig) -> None:
        self.actions = frozenset(a.lower() for a in config.actions)
        self.modalities = frozenset(m.upper() for m in config.modalities)
        self.store_names = tuple(config.store_names)
        self.dicom_attributes = {k: v for k, v in config.attributes.items() if k in keyword_dict}
        self.message_attributes = {
            k: v for k, v in config.attributes.items() if k not in keyword_dict
        }

    @property
    def needs_header(self) -> bool:
        """True when some condition may only be decidable from the instance's header."""
        return bool(self.modalities or self.dicom_attributes)

    def skip_reason(self, note: Notification) -> str | None:
        """Why this message is not exported (from the message alone), or None to go on."""
        action = (note.action or "").lower()
        if "delete" in action:
            return f"action {note.action} (deletions are never exported)"
        if note.action is not None and self.actions and action not in self.actions:
            return f"action {note.action} not in filters.actions"
        if self.store_names and not (
            note.store_name and _store_matches(note.store_name, self.store_names)
        ):
            return f"store {note.store_name or '(not named)'} not in filters.store_names"
        if self.modalities and note.modality and note.modality.upper() not in self.modalities:
            return f"modality {note.modality} not in filters.modalities"
        for key, pattern in self.message_attributes.items():
            value = note.attributes.get(key)
            if value is None or not fnmatchcase(value, pattern):
                return f"attribute {key}={value!r} does not match {pattern!r}"
        return None

    def skip_reason_for_header(self, note: Notification, header: Dataset) -> str | None:
        """Why the fetched instance is not exported (modality, DICOM keywords), or None."""
        if self.modalities and not note.modality:
            modality = str(header.get("Modality", "") or "").upper()
            if modality not in self.modalities:
                return f"modality {modality or '(none)'} not in filters.modalities"
        return _header_mismatch(header, self.dicom_attributes)


def _header_mismatch(header: Dataset, wanted: Mapping[str, str]) -> str | None:
    for keyword, pattern in wanted.items():
        element = header.get(keyword)
        value = "" if element is None else str(element)
        if element is None or not fnmatchcase(value, pattern):
            return f"{keyword}={value[:64]!r} does not match {pattern!r}"
    return None
