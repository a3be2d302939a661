"""STOW-RS destination (PS3.18 10.5): one streamed multipart POST per batch, one outcome per
instance from the Store Instances Response; 409 / FailureReason 0x0111 "already there" means
delivered, or (``on_conflict: overwrite``) delete and store again."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from adapter.destinations.base import DeliveryOutcome
from adapter.dicomweb.stow import (
    FAILURE_DUPLICATE_SOP_INSTANCE,
    InstanceOutcome,
    StowClient,
    StowItem,
)
from adapter.dimse.client import classify_store_status
from adapter.errors import PermanentError, TransientError
from adapter.pipeline.instance import Instance

__all__ = ["StowDestination"]

log = logging.getLogger(__name__)

#: Whole-request answers that blame the adapter's setup (auth, URL, media type), never one
#: instance: retried with backoff like an outage instead of dead-lettering every instance.
REFUSES_US = frozenset({401, 403, 404, 405, 407, 415})


class StowDestination:
    """A DICOMweb store; batches up to ``max_batch`` instances per STOW-RS request."""

    kind = "dicomweb"

    def __init__(
        self, name: str, client: StowClient, *, max_batch: int = 20, on_conflict: str = "done"
    ) -> None:
        self.name = name
        self.client = client
        self.max_batch = max_batch
        self.on_conflict = on_conflict

    def deliver(self, instances: Sequence[Instance]) -> list[DeliveryOutcome]:
        items = [
            StowItem(i.path, i.meta.sop_class_uid, i.sop_instance_uid, i.meta.study_instance_uid)
            for i in instances
        ]
        try:
            outcomes = self.client.store_instances(items)
        except PermanentError as exc:
            if exc.http_status in REFUSES_US:
                raise self._refuses_us(exc, len(items)) from exc
            if len(items) == 1 and exc.http_status == 409:
                return [self._conflict(instances[0])]
            raise
        except TransientError:
            raise
        return [self._outcome(i, outcomes.get(i.sop_instance_uid)) for i in instances]

    def close(self) -> None:
        """The session belongs to the plugin context, which closes it."""

    def _refuses_us(self, exc: PermanentError, count: int) -> TransientError:
        log.error(
            "%s refuses the adapter itself (HTTP %s), not an instance: check the URL and "
            "credentials; %d instance(s) stay queued: %s",
            self.name,
            exc.http_status,
            count,
            str(exc)[:300],
            extra={"http_status": exc.http_status, "destination": self.name},
        )
        return TransientError(str(exc), http_status=exc.http_status)

    def _outcome(self, instance: Instance, outcome: InstanceOutcome | None) -> DeliveryOutcome:
        if outcome is None:
            return DeliveryOutcome.transient("the store's answer did not mention the instance")
        if outcome.stored:
            return DeliveryOutcome.delivered(outcome.warning)
        reason = outcome.failure_reason
        if reason == FAILURE_DUPLICATE_SOP_INSTANCE:
            return self._conflict(instance)
        if reason is None or classify_store_status(reason) == "transient":
            why = f"FailureReason 0x{reason:04X}" if reason is not None else outcome.warning
            return DeliveryOutcome.transient(f"store did not store it: {why}", status=reason)
        note = f" ({outcome.warning})" if outcome.warning else ""
        return DeliveryOutcome.permanent(
            f"store rejected it: FailureReason 0x{reason:04X}{note}", status=reason
        )

    def _conflict(self, instance: Instance) -> DeliveryOutcome:
        """The store has this SOP Instance already (409 / FailureReason 0x0111)."""
        if self.on_conflict == "done":
            return DeliveryOutcome.delivered()
        meta = instance.meta
        if not (meta.study_instance_uid and meta.series_instance_uid):
            return DeliveryOutcome.permanent(
                "conflict: cannot overwrite without Study/Series Instance UID"
            )
        try:
            self.client.delete_instance(
                meta.study_instance_uid, meta.series_instance_uid, meta.sop_instance_uid
            )
        except TransientError as exc:
            return DeliveryOutcome.transient(str(exc)[:300], http_status=exc.http_status)
        except PermanentError as exc:
            return DeliveryOutcome.permanent(
                f"conflict, and overwrite failed: {str(exc)[:300]}", http_status=exc.http_status
            )
        log.info(
            "overwrite: deleted the stored copy, storing again",
            extra={"sop_instance_uid": meta.sop_instance_uid},
        )
        return DeliveryOutcome.transient("overwrite: stored copy deleted", retry_after=0.0)
