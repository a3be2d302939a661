"""C-STORE destination (PS3.4 Annex B) over a pool of kept-open associations to one PACS."""

from __future__ import annotations

from collections.abc import Sequence

from adapter.destinations.base import DeliveryOutcome
from adapter.dimse.client import StoreScu
from adapter.pipeline.instance import Instance

__all__ = ["StoreScuDestination"]


class StoreScuDestination:
    """One instance per call; concurrency comes from the delivery workers and the pool."""

    kind = "dimse"
    max_batch = 1

    def __init__(self, name: str, scu: StoreScu) -> None:
        self.name = name
        self.scu = scu

    def deliver(self, instances: Sequence[Instance]) -> list[DeliveryOutcome]:
        outcomes = []
        for instance in instances:
            status = self.scu.send_file(instance.path)  # raises Transient/PermanentError
            warning = f"C-STORE answered with warning 0x{status:04X}" if status else None
            outcomes.append(DeliveryOutcome.delivered(warning))
        return outcomes

    def close(self) -> None:
        self.scu.close()
