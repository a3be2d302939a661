"""GCS destination: one object per instance, ``<prefix>/<Study>/<Series>/<SOP Instance>.dcm``,
content type application/dicom, streamed from the outbox file; a re-sent instance overwrites
its object (the name depends only on the UIDs), so a retry after a lost answer is harmless."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from adapter.destinations.base import DeliveryOutcome
from adapter.destinations.config import GcsDestination
from adapter.destinations.folder import instance_relpath
from adapter.errors import TransientError
from adapter.gcs_client import classify, make_client, upload_file
from adapter.pipeline.instance import Instance

__all__ = ["GcsObjectDestination", "object_name"]

log = logging.getLogger(__name__)


def object_name(prefix: str, instance: Instance) -> str:
    """``<prefix>/<Study>/<Series>/<SOP>.dcm`` (no leading slash when the prefix is empty)."""
    stem = prefix.strip("/")
    rel = instance_relpath(instance)
    return f"{stem}/{rel}" if stem else rel


class GcsObjectDestination:
    """Uploads into one bucket; whole-request failures raise TransientError."""

    kind = "gcs"
    max_batch = 1

    def __init__(
        self, name: str, bucket: str, prefix: str, client: Any, *, timeout: float = 60.0
    ) -> None:
        self.name = name
        self.bucket = bucket
        self.prefix = prefix
        self.client = client
        self.timeout = timeout

    @classmethod
    def from_config(cls, name: str, cfg: GcsDestination) -> GcsObjectDestination:
        """The destination a site's ``kind: gcs`` entry describes."""
        return cls(name, cfg.bucket, cfg.prefix, make_client(cfg.project), timeout=cfg.timeout)

    def deliver(self, instances: Sequence[Instance]) -> list[DeliveryOutcome]:
        return [self._upload(i) for i in instances]

    def _upload(self, instance: Instance) -> DeliveryOutcome:
        name = object_name(self.prefix, instance)
        try:
            upload_file(self.client, self.bucket, name, instance.path, self.timeout)
        except Exception as exc:
            failure = classify(exc)
            if failure.kind == "permanent":
                return DeliveryOutcome.permanent(
                    f"gs://{self.bucket} refused the object: {failure.detail}",
                    http_status=failure.http_status,
                )
            if failure.kind == "setup":
                log.error(
                    "%s: gs://%s refuses the adapter itself (%s), not an instance: check the "
                    "bucket name and the credentials' permissions; instances stay queued",
                    self.name,
                    self.bucket,
                    failure.detail,
                    extra={"destination": self.name, "http_status": failure.http_status},
                )
            raise TransientError(
                f"gs://{self.bucket}: {failure.detail}", http_status=failure.http_status
            ) from exc
        return DeliveryOutcome.delivered()

    def close(self) -> None:
        """Close the client's HTTP session."""
        close = getattr(self.client, "close", None)
        if callable(close):
            close()
