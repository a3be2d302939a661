"""Where exported instances go: a PACS by C-STORE (PS3.4 Annex B) or a store by STOW-RS (PS3.18
10.5). One small interface, so the subscriber does not care which; both are idempotent for a
re-sent SOP Instance UID (the PACS overwrites or ignores it; a 409 duplicate counts as done).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Protocol

import requests

from adapter.dicomweb.stow import FAILURE_DUPLICATE_SOP_INSTANCE, StowClient, StowItem
from adapter.dimse.client import StoreScu, classify_store_status
from adapter.errors import PermanentError, TransientError
from exporter.config import DicomwebDestination, DimseDestination

__all__ = ["DicomwebSink", "DimseSink", "Sink", "build_sink"]

log = logging.getLogger(__name__)

DeliveryOutcome = Literal["success", "warning"]


class Sink(Protocol):
    """Delivers one Part-10 file; raises TransientError (retry later) or PermanentError."""

    name: str  # metrics label, e.g. "dimse:PACS"

    def deliver(self, path: Path, sop_class_uid: str, sop_instance_uid: str) -> DeliveryOutcome:
        """Send the instance; returns how the destination took it."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class DimseSink:
    """C-STORE over a pool of kept-open associations."""

    def __init__(self, scu: StoreScu) -> None:
        self.scu = scu
        self.name = f"dimse:{scu.ae_title}"

    def deliver(self, path: Path, sop_class_uid: str, sop_instance_uid: str) -> DeliveryOutcome:
        status = self.scu.send_file(path)
        if status != 0:
            log.warning("C-STORE of %s answered with warning 0x%04X", sop_instance_uid, status)
            return "warning"
        return "success"

    def close(self) -> None:
        self.scu.close()


class DicomwebSink:
    """STOW-RS of one instance per request (the latency is per message anyway)."""

    def __init__(self, client: StowClient, url: str) -> None:
        self.client = client
        self.name = f"dicomweb:{url}"

    def deliver(self, path: Path, sop_class_uid: str, sop_instance_uid: str) -> DeliveryOutcome:
        outcomes = self.client.store_instances([StowItem(path, sop_class_uid, sop_instance_uid)])
        outcome = outcomes.get(sop_instance_uid)
        if outcome is None:  # pragma: no cover - StowClient answers for every item
            raise TransientError(f"STOW-RS gave no outcome for {sop_instance_uid}")
        if outcome.stored:
            return "warning" if outcome.warning else "success"
        reason = outcome.failure_reason
        if reason == FAILURE_DUPLICATE_SOP_INSTANCE:
            log.info("STOW-RS: %s is already in the destination store", sop_instance_uid)
            return "success"
        message = f"STOW-RS of {sop_instance_uid} failed"
        if reason is not None:
            message += f" with FailureReason 0x{reason:04X}"
        if outcome.warning:
            message += f" ({outcome.warning})"
        if reason is None or classify_store_status(reason) == "transient":
            raise TransientError(message)
        raise PermanentError(message, failure_reason=reason)

    def close(self) -> None:
        """The session belongs to the plugin context, which closes it."""


def build_sink(
    destination: DimseDestination | DicomwebDestination, session: requests.Session | None
) -> Sink:
    """The sink for the configured destination (``session`` for a DICOMweb one)."""
    if isinstance(destination, DimseDestination):
        return DimseSink(
            StoreScu(
                destination.ae_title,
                destination.host,
                destination.port,
                calling_ae_title=destination.calling_ae_title,
                pool_size=destination.pool_size,
                acse_timeout=destination.acse_timeout,
                dimse_timeout=destination.dimse_timeout,
                network_timeout=destination.network_timeout,
                idle_timeout=destination.idle_timeout,
            )
        )
    if session is None:
        raise ValueError("a DICOMweb destination needs a session")
    return DicomwebSink(StowClient(session, destination.url), destination.url)
