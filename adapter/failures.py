"""The last failures, in memory, for the status page: what failed, where, and the DIMSE status or
HTTP status that said why. Bounded (a ring), thread-safe, UIDs only: never patient data.

Call :func:`record` where a failure is decided (a refused C-STORE, a retried upload or delivery,
a dead letter); ``RECENT.recent()`` is what ``/status.json`` shows.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RECENT", "Failure", "FailureLog", "record"]

_DIMSE_STATUS = re.compile(r"\b0x[0-9A-Fa-f]{4}\b")


@dataclass(frozen=True)
class Failure:
    """One failure: when, which plugin and step, why, and the protocol status that said so."""

    time: float
    plugin: str
    what: str  # the step, e.g. "C-STORE from PACS", "STOW-RS", "C-STORE to dimse:PACS"
    reason: str
    permanent: bool = False  # dead-lettered (True) or to be retried (False)
    dimse_status: str | None = None  # "0xA700"
    http_status: int | None = None
    sop_instance_uid: str | None = None
    peer: str | None = None


class FailureLog:
    """A bounded ring of recent failures plus a running total."""

    def __init__(self, size: int = 50) -> None:
        self._items: deque[Failure] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.total = 0

    def add(self, failure: Failure) -> None:
        """Keep ``failure``; the oldest one goes when the ring is full."""
        with self._lock:
            self._items.append(failure)
            self.total += 1

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` failures, newest first, as JSON-ready dicts."""
        with self._lock:
            items = list(self._items)[-limit:]
        return [asdict(f) for f in reversed(items)]

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._items.clear()
            self.total = 0


RECENT = FailureLog()
"""The process-wide ring the status page reads."""


def record(
    plugin: str,
    what: str,
    reason: object,
    *,
    permanent: bool = False,
    dimse_status: int | str | None = None,
    http_status: int | None = None,
    sop_instance_uid: str | None = None,
    peer: str | None = None,
) -> None:
    """Add a failure to :data:`RECENT`; an error's ``http_status`` and a ``0xNNNN`` in its text
    fill in the protocol status when not given. Never raises (it runs on error paths)."""
    try:
        text = " ".join(str(reason).split())[:300]
        if http_status is None:
            http_status = getattr(reason, "http_status", None)
        if isinstance(dimse_status, int):
            dimse_status = f"0x{dimse_status & 0xFFFF:04X}"
        if dimse_status is None and (match := _DIMSE_STATUS.search(text)):
            dimse_status = match[0][:2] + match[0][2:].upper()
        RECENT.add(
            Failure(
                time=time.time(),
                plugin=plugin,
                what=what,
                reason=text,
                permanent=permanent,
                dimse_status=dimse_status,
                http_status=http_status if isinstance(http_status, int) else None,
                sop_instance_uid=sop_instance_uid,
                peer=peer,
            )
        )
    except Exception:  # pragma: no cover - the status page must never break an error path
        pass
