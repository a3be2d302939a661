"""The destination seam: one small protocol every kind (DICOMweb, DIMSE, GCS, folder) meets.

``deliver`` takes a batch (one instance unless the kind batches, like STOW-RS) and answers one
outcome per instance, in order. A failure of the whole request raises TransientError (retry
them all later) or PermanentError (the delivery service splits a batch to find the bad one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from adapter.pipeline.instance import Instance

__all__ = ["DeliveryOutcome", "Destination"]

OutcomeKind = Literal["delivered", "transient", "permanent"]


@dataclass(frozen=True)
class DeliveryOutcome:
    """How the destination took one instance; ``detail`` is a short reason (no patient data)."""

    kind: OutcomeKind
    detail: str | None = None
    warning: bool = False
    #: A DIMSE status or STOW-RS FailureReason (PS3.18 Table 10.5.3-1), when there was one.
    status: int | None = None
    http_status: int | None = None
    retry_after: float | None = None

    @classmethod
    def delivered(cls, warning: str | None = None) -> DeliveryOutcome:
        return cls("delivered", warning, warning=warning is not None)

    @classmethod
    def transient(cls, detail: str, **kw: int | float | None) -> DeliveryOutcome:
        return cls("transient", detail, **kw)  # type: ignore[arg-type]

    @classmethod
    def permanent(cls, detail: str, **kw: int | float | None) -> DeliveryOutcome:
        return cls("permanent", detail, **kw)  # type: ignore[arg-type]


@runtime_checkable
class Destination(Protocol):
    """Where instances go. ``name`` is the configured name (metrics label, outbox folder)."""

    name: str
    kind: str
    #: The largest batch ``deliver`` takes (1: one instance per call).
    max_batch: int

    def deliver(self, instances: Sequence[Instance]) -> list[DeliveryOutcome]:
        """Send; one outcome per instance, in order. Raises TransientError/PermanentError
        when the request as a whole failed."""
        ...

    def close(self) -> None:
        """Release connections (the delivery service calls it once, at stop)."""
        ...
