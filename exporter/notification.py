"""One DICOM store notification (a Pub/Sub message) parsed and validated, and where to fetch it.

The Cloud Healthcare API publishes one message per stored instance whose data is the resource
name ``projects/P/locations/L/datasets/D/dicomStores/S/dicomWeb/studies/X/series/Y/instances/Z``
and whose attributes may carry ``action``, ``storeName``, the three UIDs and ``modality``. The
relative form ``studies/X/series/Y/instances/Z`` is accepted too (other publishers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from adapter.errors import PermanentError

__all__ = [
    "MalformedNotificationError",
    "Notification",
    "SourceUrlKind",
    "parse_notification",
    "resolve_dicomweb_root",
]

MAX_DATA_BYTES = 2048
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # PS3.5 9.1
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:~-]{0,255}$")  # Google resource IDs, no '/'
_STORE_KEYS = ("projects", "locations", "datasets", "dicomStores")
_UID_KEYS = ("studies", "series", "instances")
_UID_ATTRIBUTES = {
    "studyInstanceUID": "study_instance_uid",
    "seriesInstanceUID": "series_instance_uid",
    "sopInstanceUID": "sop_instance_uid",
}
_DICOMWEB_ROOT_RE = re.compile(r"/dicom-?web$", re.IGNORECASE)

SourceUrlKind = Literal["auto", "dicomweb_root", "api_root"]


class MalformedNotificationError(PermanentError):
    """The message is not a notification we can act on; ``reason`` says why (dead-letter it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed notification: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Notification:
    """The instance a notification names, the store it came from, and its attributes."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    store_path: str | None = None  # projects/P/locations/L/datasets/D/dicomStores/S
    action: str | None = None
    store_name: str | None = None  # attribute storeName, else store_path
    modality: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def dicomweb_path(self) -> str:
        """``studies/X/series/Y/instances/Z`` (PS3.18 10.4.1 instance resource)."""
        return (
            f"studies/{self.study_instance_uid}/series/{self.series_instance_uid}"
            f"/instances/{self.sop_instance_uid}"
        )


def _uid(value: str, what: str) -> str:
    if not value or len(value) > 64 or not _UID_RE.match(value):
        raise MalformedNotificationError(f"{what} {value[:80]!r} is not a DICOM UID")
    return value


def _parse_path(text: str) -> tuple[str | None, list[str]]:
    """Split the resource name into the store path (or None) and the three UIDs."""
    if any(c in text for c in "?#%\\") or any(ord(c) < 0x21 or ord(c) > 0x7E for c in text):
        raise MalformedNotificationError(
            "data holds a query, fragment, escape, space or non-ASCII character"
        )
    parts = text.split("/")
    if "" in parts or "." in parts or ".." in parts:
        raise MalformedNotificationError("data has an empty, '.' or '..' path segment")
    store_path = None
    if parts[0] == "projects":
        if len(parts) != 8 + 1 + 6 or parts[8] != "dicomWeb":
            raise MalformedNotificationError(
                "expected projects/P/locations/L/datasets/D/dicomStores/S/dicomWeb/"
                "studies/X/series/Y/instances/Z"
            )
        for i, key in enumerate(_STORE_KEYS):
            if parts[2 * i] != key:
                raise MalformedNotificationError(f"expected {key!r} at segment {2 * i + 1}")
            if not _ID_RE.match(parts[2 * i + 1]):
                raise MalformedNotificationError(f"invalid {key} id {parts[2 * i + 1][:80]!r}")
        store_path = "/".join(parts[:8])
        parts = parts[9:]
    if len(parts) != 6:
        raise MalformedNotificationError(
            "expected studies/X/series/Y/instances/Z, optionally after the store's resource name"
        )
    uids = []
    for i, key in enumerate(_UID_KEYS):
        if parts[2 * i] != key:
            raise MalformedNotificationError(f"expected {key!r}, got {parts[2 * i][:40]!r}")
        uids.append(_uid(parts[2 * i + 1], key))
    return store_path, uids


def parse_notification(data: bytes, attributes: Mapping[str, str] | None = None) -> Notification:
    """Validate a message's data and attributes; raise MalformedNotificationError with a reason."""
    attrs = dict(attributes or {})
    if len(data) > MAX_DATA_BYTES:
        raise MalformedNotificationError(f"data is {len(data)} bytes (at most {MAX_DATA_BYTES})")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise MalformedNotificationError("data is not ASCII text") from None
    if not text:
        raise MalformedNotificationError("data is empty (expected an instance resource name)")
    store_path, (study, series, instance) = _parse_path(text)
    found = {
        "study_instance_uid": study,
        "series_instance_uid": series,
        "sop_instance_uid": instance,
    }
    for attribute, key in _UID_ATTRIBUTES.items():
        if attribute in attrs and attrs[attribute] != found[key]:
            raise MalformedNotificationError(
                f"attribute {attribute}={attrs[attribute][:80]!r} contradicts the data's {key}"
            )
    store_name = attrs.get("storeName") or store_path
    if store_path and attrs.get("storeName") and attrs["storeName"] != store_path:
        raise MalformedNotificationError(
            f"attribute storeName={attrs['storeName'][:120]!r} contradicts the data's store"
        )
    return Notification(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=instance,
        store_path=store_path,
        action=attrs.get("action") or None,
        store_name=store_name,
        modality=attrs.get("modality") or None,
        attributes=attrs,
    )


def resolve_dicomweb_root(url: str, note: Notification, kind: SourceUrlKind = "auto") -> str:
    """The DICOMweb root to fetch ``note`` from, given the configured source URL.

    ``dicomweb_root``: the URL is the store's DICOMweb root; only ``studies/...`` is appended.
    ``api_root``: the URL is an API root (the Java adapter's ``--dicomweb_addr``, e.g.
    ``https://healthcare.googleapis.com/v1``); the store path and ``/dicomWeb`` are appended.
    ``auto``: relative notifications, URLs ending in ``<store path>/dicomWeb`` and URLs whose last
    segment is ``dicomWeb``/``dicom-web`` are DICOMweb roots; any other URL is an API root.
    A URL that is another store's DICOMweb root is refused (a subscription on the wrong topic).
    """
    base = url.rstrip("/")
    path = urlsplit(base).path
    if kind == "dicomweb_root" or note.store_path is None:
        return base
    if kind == "auto":
        if path.endswith(f"/{note.store_path}/dicomWeb"):
            return base
        if "/dicomStores/" in path:
            raise PermanentError(
                f"notification is for store {note.store_path} but source.url {base} is the "
                "DICOMweb root of another store (check the subscription's topic or set "
                "exporter.filters.store_names)"
            )
        if _DICOMWEB_ROOT_RE.search(path):
            return base
    return f"{base}/{note.store_path}/dicomWeb"
