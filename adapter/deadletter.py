"""Dead letters: what retrying cannot deliver, kept on disk with the reason, for an operator.

Each entry is ``<id>.json`` (the record) plus, when there is one, ``<id>.dcm`` (the instance).
The JSON is written last (tmp, fsync, rename), so an entry without it is incomplete and ignored.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adapter import failures, metrics

__all__ = ["DeadLetter", "DeadLetterQueue"]

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class DeadLetter:
    """One undeliverable item and why; no patient data (UIDs only)."""

    id: str
    plugin: str
    reason: str
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    http_status: int | None = None
    failure_reason: int | None = None
    dimse_status: int | None = None
    destination: str | None = None  # the destination that refused it (None: before routing)
    attempts: int = 0
    first_attempt: float | None = None
    last_attempt: float = field(default_factory=time.time)
    has_payload: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class DeadLetterQueue:
    """A directory of dead letters; ``requeue`` (plugin-supplied) gives an entry another chance."""

    def __init__(
        self,
        directory: Path,
        plugin: str,
        requeue: Callable[[DeadLetter, Path | None], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.plugin = plugin
        self._requeue = requeue

    def add(
        self,
        entry_fields: dict[str, Any],
        payload: Path | None = None,
        reason_class: str = "permanent",
    ) -> DeadLetter:
        """Record a dead letter, moving ``payload`` (same filesystem) in beside it.

        ``reason_class`` is the low-cardinality metric label (e.g. ``permanent``, ``max_attempts``).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        entry_id = f"{int(time.time())}-{uuid.uuid4().hex[:12]}"
        has_payload = payload is not None and payload.exists()
        if has_payload and payload is not None:
            os.replace(payload, self.directory / f"{entry_id}.dcm")
        entry = DeadLetter(id=entry_id, plugin=self.plugin, has_payload=has_payload, **entry_fields)
        tmp = self.directory / f".{entry_id}.json.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(asdict(entry), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / f"{entry_id}.json")
        fsync_dir(self.directory)
        metrics.DEAD_LETTERS_TOTAL.labels(plugin=self.plugin, reason=reason_class).inc()
        failures.record(
            self.plugin,
            "dead-lettered",
            entry.reason,
            permanent=True,
            dimse_status=entry.dimse_status,
            http_status=entry.http_status,
            sop_instance_uid=entry.sop_instance_uid,
        )
        log.warning(
            "dead-lettered: %s",
            entry.reason,
            extra={"sop_instance_uid": entry.sop_instance_uid, "dead_letter_id": entry_id},
        )
        return entry

    def __iter__(self) -> Iterator[DeadLetter]:
        return iter(self.entries())

    def entries(self) -> list[DeadLetter]:
        """All complete entries, oldest first."""
        if not self.directory.is_dir():
            return []
        entries = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                entries.append(DeadLetter(**data))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("unreadable dead-letter record %s: %s", path.name, exc)
        return entries

    def payload_path(self, entry: DeadLetter) -> Path | None:
        path = self.directory / f"{entry.id}.dcm"
        return path if entry.has_payload and path.exists() else None

    def summary(self, limit: int = 10) -> dict[str, Any]:
        """How many entries there are and the newest ``limit`` (for the status page)."""
        if not self.directory.is_dir():
            return {"count": 0, "recent": []}
        paths = sorted(self.directory.glob("*.json"))
        recent = []
        for path in reversed(paths[-limit:]):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            keys = ("id", "reason", "sop_instance_uid", "http_status", "dimse_status", "attempts")
            recent.append({k: data.get(k) for k in keys} | {"time": data.get("last_attempt")})
        return {"count": len(paths), "directory": str(self.directory), "recent": recent}

    def _select(self, ids: Iterable[str] | None) -> list[DeadLetter]:
        wanted = set(ids) if ids is not None else None
        return [e for e in self.entries() if wanted is None or e.id in wanted]

    def remove(self, entry: DeadLetter) -> None:
        for suffix in (".dcm", ".json"):
            (self.directory / f"{entry.id}{suffix}").unlink(missing_ok=True)

    def purge(self, ids: Iterable[str] | None = None) -> int:
        """Delete entries (all when ``ids`` is None); returns how many."""
        selected = self._select(ids)
        for entry in selected:
            self.remove(entry)
        return len(selected)

    def retry(self, ids: Iterable[str] | None = None) -> int:
        """Hand entries back to their plugin for another attempt; returns how many."""
        if self._requeue is None:
            raise RuntimeError(f"{self.plugin} dead letters cannot be retried")
        selected = self._select(ids)
        for entry in selected:
            self._requeue(entry, self.payload_path(entry))
            self.remove(entry)
        return len(selected)
