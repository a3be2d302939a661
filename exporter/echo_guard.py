"""Two-way sync without echoes: never send a PACS the instances it sent us.

The importer records (SOP Instance UID, calling AE) in the shared ProvenanceLog before it
answers a C-STORE; an instance that came from one of the destination's AE titles is skipped.
A PACS often calls from another AE title than the one it listens on: list both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from adapter.provenance import ProvenanceLog

__all__ = ["EchoGuard"]

log = logging.getLogger(__name__)


class EchoGuard:
    """Answers "did this instance come from the destination?" from the provenance log."""

    def __init__(self, provenance: ProvenanceLog | None, destination_aets: Iterable[str]) -> None:
        self.provenance = provenance
        self.destination_aets = tuple(dict.fromkeys(a.strip() for a in destination_aets if a))

    @property
    def enabled(self) -> bool:
        return self.provenance is not None and bool(self.destination_aets)

    def echo_source(self, sop_instance_uid: str) -> str | None:
        """The destination AE title this instance was received from, or None (not an echo)."""
        if self.provenance is None or not self.destination_aets:
            return None
        sources = self.provenance.sources(sop_instance_uid)
        for aet in self.destination_aets:
            if aet in sources:
                return aet
        return None
