"""The /status.json snapshot: the running services' own ``status()``, the last failures and the
dead letters, gathered at each request. UIDs at most, never patient data."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from adapter import failures
from adapter.metrics import package_version

if TYPE_CHECKING:
    from adapter.deadletter import DeadLetterQueue

__all__ = ["StatusReport"]


class StatusReport:
    """Callable returning the snapshot; handed to :class:`adapter.health.HealthServer`."""

    def __init__(
        self,
        site: str,
        services: Callable[[], Mapping[str, Mapping[str, Any]]],
        readiness: Callable[[], Mapping[str, bool]],
        dead_letters: Mapping[str, DeadLetterQueue] | None = None,
    ) -> None:
        self.site = site
        self.services = services
        self.readiness = readiness
        self.dead_letters = dict(dead_letters or {})
        self.started = time.time()

    def __call__(self) -> dict[str, Any]:
        """One JSON-ready snapshot of everything the page shows."""
        checks = dict(self.readiness())
        letters: dict[str, Any] = {}
        for name, queue in self.dead_letters.items():
            try:
                letters[name] = queue.summary()
            except OSError as exc:
                letters[name] = {"count": None, "error": str(exc), "recent": []}
        return {
            "site": self.site,
            "version": package_version(),
            "time": time.time(),
            "uptime_seconds": round(time.time() - self.started, 1),
            "ready": all(checks.values()),
            "readiness": checks,
            "services": dict(self.services()),
            "failures": failures.RECENT.recent(),
            "failures_total": failures.RECENT.total,
            "dead_letters": letters,
        }
