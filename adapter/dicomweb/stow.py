"""STOW-RS (PS3.18 10.5): upload a batch of Part-10 files in one streamed multipart/related POST
and turn the Store Instances Response (PS3.18 10.5.3, Table 10.5.3-1) into one outcome per
SOP Instance UID.

Status handling (PS3.18 Table 10.5.3-1): 200 all stored; 202 some stored, others failed or with
warnings; 409 none stored (conflict); 400 none stored (bad syntax); 415 media type refused.

Observed behaviour of Orthanc 1.10 + DICOMweb plugin 1.7 (tests/integration/
test_dicomweb_orthanc.py pins these):

- Good batch: 200, ``application/dicom+json``; every instance in ReferencedSOPSequence (00081199)
  with its RetrieveURL; FailedSOPSequence (00081198) present but empty (``{"vr": "SQ"}``).
- Re-sent duplicate: 200 again, listed as stored (Orthanc keeps the first copy unless
  "OverwriteInstances" is true). No 409 -- unlike the Cloud Healthcare API, which answers 409
  for an instance that already exists.
- Batch with one non-DICOM part: **400** (not 202) *without a Content-Type header*; the body is
  still DICOM JSON listing the good instances in ReferencedSOPSequence -- and they *are* stored.
  The bad part appears in neither sequence (it has no SOP Instance UID). So a 400 whose body
  names stored instances is read per instance here; the unnamed ones fail with 0xC000.
- Only non-DICOM parts: 400, both sequences empty -> PermanentError for the whole batch.
- POST /studies/{other study}: 409 (no Content-Type), every instance in FailedSOPSequence with
  FailureReason 272 (0x0110).
- Body not multipart (e.g. Content-Type application/dicom): 415.
- DELETE of an instance: 405 (Allow: GET); the plugin has no DICOMweb DELETE.

Cloud Healthcare API (not testable here): 409 for an instance that already exists. Its
FailureReason, when the body is DICOM JSON, is taken verbatim; when the body is Google's JSON
error object (or empty), every instance gets 0x0111 "duplicate SOP instance" and the error text
as ``warning``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from adapter.dicomweb.json_model import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
    WARNING_REASON,
    DicomJson,
    get_int,
    get_str,
    is_dicom_json_object,
    sequence_items,
    validate_uid,
)
from adapter.dicomweb.multipart import MultipartRelatedBody
from adapter.dicomweb.session import body_excerpt, error_for_response, send
from adapter.errors import PermanentError

__all__ = [
    "FAILURE_CANNOT_UNDERSTAND",
    "FAILURE_DUPLICATE_SOP_INSTANCE",
    "InstanceOutcome",
    "StowClient",
    "StowItem",
]

log = logging.getLogger(__name__)

FAILURE_DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 C.4.2.1.4 "Duplicate SOP Instance"
FAILURE_CANNOT_UNDERSTAND = 0xC000
_WARNINGS = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}
_MAX_RESPONSE = 16 << 20


@dataclass(frozen=True)
class StowItem:
    """One Part-10 file to upload and the UIDs it was read with."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str | None = None


@dataclass(frozen=True)
class InstanceOutcome:
    """What the store said about one instance; ``failure_reason`` is the DICOM FailureReason."""

    sop_instance_uid: str
    stored: bool
    failure_reason: int | None = None
    warning: str | None = None
    retrieve_url: str | None = None


def _warning_text(code: int | None) -> str | None:
    if code is None:
        return None
    return f"0x{code:04X} {_WARNINGS.get(code, 'warning')}"


def _dicom_json_body(response: requests.Response) -> DicomJson | None:
    """The answer parsed as one DICOM JSON dataset (Orthanc omits Content-Type on 400/409)."""
    raw = response.content[:_MAX_RESPONSE]
    if not raw.strip():
        return None
    try:
        payload: Any = json.loads(raw)
    except ValueError:
        return None
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    return payload if is_dicom_json_object(payload) else None


class StowClient:
    """STOW-RS against ``{base_url}/studies``."""

    def __init__(self, session: requests.Session, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")

    @property
    def base_url(self) -> str:
        """The DICOMweb root this client stores to."""
        return self._base

    def store_instances(
        self, items: Sequence[StowItem], study_instance_uid: str | None = None
    ) -> dict[str, InstanceOutcome]:
        """POST the files as one multipart/related request; outcomes keyed by SOP Instance UID.

        Raises TransientError (network, timeout, 408/429/5xx) or PermanentError (a whole-batch
        rejection: 400 naming no instance, 401/403/404/413/415...).
        """
        if not items:
            return {}
        url = f"{self._base}/studies"
        if study_instance_uid is not None:
            url += "/" + validate_uid(study_instance_uid, "Study Instance UID")
        what = f"STOW-RS of {len(items)} instance(s) to {url}"
        try:
            body = MultipartRelatedBody([item.path for item in items])
        except OSError as exc:
            raise PermanentError(f"{what}: cannot read {exc.filename}: {exc.strerror}") from None
        headers = {"Content-Type": body.content_type_header, "Accept": "application/dicom+json"}
        try:
            response = send(self._session, "POST", url, what, data=body, headers=headers)
            with response:
                return self._outcomes(response, items, what)
        finally:
            body.close()

    def _outcomes(
        self, response: requests.Response, items: Sequence[StowItem], what: str
    ) -> dict[str, InstanceOutcome]:
        status = response.status_code
        if status not in (200, 202, 400, 409):
            raise error_for_response(response, what)
        dataset = _dicom_json_body(response)
        stored: dict[str, tuple[str | None, str | None]] = {}
        failed: dict[str, int | None] = {}
        if dataset is not None:
            for entry in sequence_items(dataset, REFERENCED_SOP_SEQUENCE):
                uid = get_str(entry, REFERENCED_SOP_INSTANCE_UID)
                if uid:
                    warning = _warning_text(get_int(entry, WARNING_REASON))
                    stored[uid] = (get_str(entry, RETRIEVE_URL), warning)
            for entry in sequence_items(dataset, FAILED_SOP_SEQUENCE):
                uid = get_str(entry, REFERENCED_SOP_INSTANCE_UID)
                if uid:
                    failed[uid] = get_int(entry, FAILURE_REASON)
        if status == 400 and not stored and not failed:
            raise error_for_response(response, what, failure_reason=FAILURE_CANNOT_UNDERSTAND)

        note = ""
        if status == 409 and dataset is None:
            note = f"HTTP 409: {body_excerpt(response, 200)}"
        wanted = {item.sop_instance_uid for item in items}
        unknown = (set(stored) | set(failed)) - wanted
        if unknown:
            log.warning("%s: answer names instances not in the request: %s", what, sorted(unknown))

        # A 200 whose answer names the stored instances but not this one is not taken on trust
        # (sending it again is harmless; believing it could lose it); a bare 200 is (PS3.18).
        listed = dataset is not None and bool(stored or failed)
        outcomes: dict[str, InstanceOutcome] = {}
        for uid in (item.sop_instance_uid for item in items):
            outcomes[uid] = self._outcome(
                uid, status, stored, failed, note, trust_bare_200=not listed
            )
        return outcomes

    @staticmethod
    def _outcome(
        uid: str,
        status: int,
        stored: Mapping[str, tuple[str | None, str | None]],
        failed: Mapping[str, int | None],
        note: str,
        trust_bare_200: bool = True,
    ) -> InstanceOutcome:
        if uid in failed:
            reason = failed[uid]
            if reason is None and status == 409:
                reason = FAILURE_DUPLICATE_SOP_INSTANCE
            return InstanceOutcome(uid, stored=False, failure_reason=reason)
        if uid in stored:
            retrieve_url, warning = stored[uid]
            return InstanceOutcome(uid, stored=True, warning=warning, retrieve_url=retrieve_url)
        if status == 200 and trust_bare_200:
            return InstanceOutcome(uid, stored=True)
        if status in (200, 202):
            return InstanceOutcome(
                uid, stored=False, warning=f"not acknowledged in the store's {status} answer"
            )
        if status == 409:
            return InstanceOutcome(
                uid,
                stored=False,
                failure_reason=FAILURE_DUPLICATE_SOP_INSTANCE,
                warning=note or "HTTP 409: conflict (instance probably exists already)",
            )
        return InstanceOutcome(
            uid,
            stored=False,
            failure_reason=FAILURE_CANNOT_UNDERSTAND,
            warning="rejected in a 400 answer that stored other instances (not valid DICOM?)",
        )

    def delete_instance(self, study: str, series: str, instance: str) -> None:
        """DELETE one instance (for the overwrite-on-409 policy; the Healthcare API supports it,
        Orthanc's DICOMweb plugin does not)."""
        url = "/".join(
            [
                self._base,
                "studies",
                validate_uid(study, "Study Instance UID"),
                "series",
                validate_uid(series, "Series Instance UID"),
                "instances",
                validate_uid(instance, "SOP Instance UID"),
            ]
        )
        what = f"DELETE {url}"
        with send(self._session, "DELETE", url, what) as response:
            status = response.status_code
            if status in (200, 202, 204):
                return
            if status == 405:
                raise PermanentError(
                    f"{what}: HTTP 405 -- this DICOMweb store does not support deleting "
                    "instances (Orthanc's DICOMweb plugin does not); the overwrite-on-409 policy "
                    "needs a store that does, such as the Cloud Healthcare API",
                    http_status=405,
                )
            if status == 404:
                raise PermanentError(
                    f"{what}: HTTP 404 -- the instance does not exist, or this store has no "
                    "DICOMweb DELETE; the overwrite-on-409 policy needs a store that supports it",
                    http_status=404,
                )
            raise error_for_response(response, what)
