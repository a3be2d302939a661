"""The durable spool: received instances wait on disk until the store has them.

Layout under ``path``::

    incoming/   files being written (pynetdicom's chunked receive lands here); leftovers after
                a crash are incomplete and deleted on start
    ready/      complete Part-10 files, ``<time_ns>-<uuid4hex>.dcm``; a file here was fsynced
                and renamed in, so it survives kill -9 and power loss
    .lock       flock'd by the one process that owns the spool (released by the kernel on exit)

Names never derive from UIDs (hostile UIDs cannot pick a path; two copies of one SOP Instance
never collide). UIDs come from the file itself (PS3.10 7.1 File Meta Information). Claims for
upload live in memory only: after a restart everything in ``ready/`` is unclaimed again.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import io
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from adapter.deadletter import DeadLetterQueue
from adapter.spool_files import (
    SUFFIX,
    DirectorySync,
    SpoolBudget,
    SpoolEntry,
    SpoolFullError,
    SpoolMeta,
    adopt_into_spool,
    disk_floor_problem,
    move_durably,
    new_entry_id,
    origin_of,
    read_spool_meta,
    received_at,
)

if TYPE_CHECKING:
    from adapter.pipeline.waiter import DeliveryWaiter


class SpoolBackup(Protocol):
    """A remote copy of the spool's entries (:class:`adapter.spool_backup.GcsSpoolBackup`)."""

    def put(self, entry_id: str, path: Path) -> None:
        """Store the entry's file remotely before it is acknowledged; raise if that failed."""
        ...


__all__ = [
    "Spool",
    "SpoolBackup",
    "SpoolBudget",
    "SpoolEntry",
    "SpoolFullError",
    "SpoolMeta",
    "adopt_into_spool",
    "read_spool_meta",
]

log = logging.getLogger(__name__)


class Spool:
    """A crash-safe FIFO of Part-10 files with a byte budget; thread-safe."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        min_free_bytes: int = 0,
        dead_letters: DeadLetterQueue | None = None,
        budget: SpoolBudget | None = None,
        backup: SpoolBackup | None = None,
    ) -> None:
        """``budget``: shared with the outboxes the spool's instances move on to (an
        instance counts against it until its last copy is delivered). ``backup``: a remote
        copy :meth:`put_file` writes before it returns (the import spool without a volume)."""
        self.path = Path(path)
        self.backup = backup
        self.incoming_dir = self.path / "incoming"
        self.ready_dir = self.path / "ready"
        self.budget = budget or SpoolBudget(max_bytes)
        self.max_bytes = self.budget.max_bytes
        self.min_free_bytes = int(min_free_bytes)
        self.dead_letters = dead_letters
        self._cond = threading.Condition(threading.Lock())
        self._entries: OrderedDict[str, SpoolEntry] = OrderedDict()  # everything, oldest first
        self._pending: OrderedDict[str, SpoolEntry] = OrderedDict()  # unclaimed and due
        self._delayed: list[tuple[float, str]] = []  # heap of (not_before, id)
        self._claimed: dict[str, SpoolEntry] = {}
        self._moving: set[str] = set()  # put_file between rename and index: rescan skips them
        self._inflight_uids: Counter[str] = Counter()
        self._held_uids: Counter[str] = Counter()  # SOP Instance UIDs of every entry
        self._lingering = False
        self._closed = False
        self._lock_fd: int | None = None
        self._ready_sync = DirectorySync(self.ready_dir)
        self._open()

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> None:
        for d in (self.incoming_dir, self.ready_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RuntimeError(f"spool {self.path} is in use by another process") from None
        removed = 0
        for leftover in self.incoming_dir.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
        if removed:
            log.warning("spool: deleted %d incomplete file(s) left in incoming/", removed)
        found = self.rescan()
        if found:
            log.info("spool: resuming %d instance(s) in %s", found, self.path)

    def close(self) -> None:
        """Wake every waiter with nothing and release the process lock."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def rescan(self) -> int:
        """Index files in ``ready/`` that this process does not know (start, dead-letter
        requeue); unreadable ones are dead-lettered. Returns how many were added."""
        with self._cond:
            names = sorted(p.name for p in os.scandir(self.ready_dir) if p.name.endswith(SUFFIX))
            known = self._entries.keys() | self._moving
            new = [n for n in names if n[: -len(SUFFIX)] not in known]
        return sum(1 for name in new if self.adopt(name) is not None)

    def adopt(self, name: str, meta: SpoolMeta | None = None) -> SpoolEntry | None:
        """Index one file that another process moved durably into ``ready/`` (a receiving
        child process; ``meta`` saves reading it back). None when already known, gone (e.g.
        uploaded after a rescan found it) or unreadable (dead-lettered)."""
        if Path(name).name != name or not name.endswith(SUFFIX):
            raise ValueError(f"not a spool file name: {name!r}")
        entry_id, path = name[: -len(SUFFIX)], self.ready_dir / name
        with self._cond:
            if entry_id in self._entries or entry_id in self._moving:
                return None
        try:
            meta = meta or read_spool_meta(path, *origin_of(entry_id))
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        except Exception as exc:  # not DICOM, truncated, hostile: keep it for an operator
            self._dead_letter_unreadable(path, exc)
            return None
        entry = SpoolEntry(entry_id, path, size, meta, received_at(entry_id))
        with self._cond:
            if entry_id in self._entries or entry_id in self._moving or not path.exists():
                return None
            self._index(entry)
        return entry

    def _dead_letter_unreadable(self, path: Path, exc: Exception) -> None:
        reason = f"unreadable spool file: {type(exc).__name__}: {str(exc)[:200]}"
        if self.dead_letters is None:
            log.error("spool: %s (%s); left in place", reason, path.name)
            return
        self.dead_letters.add({"reason": reason}, payload=path, reason_class="invalid")

    # ------------------------------------------------------------------ receiving
    def has_room(self, incoming_bytes: int = 0) -> bool:
        """True if ``incoming_bytes`` more fit both the byte budget and the free-disk floor."""
        return self._room_problem(incoming_bytes) is None

    def _room_problem(self, incoming_bytes: int) -> str | None:
        return self._budget_problem(incoming_bytes) or disk_floor_problem(
            self.path, incoming_bytes, self.min_free_bytes
        )

    def _budget_problem(self, incoming_bytes: int) -> str | None:
        return self.budget.problem(incoming_bytes)

    def put_file(
        self, src_tmp_path: Path, meta: SpoolMeta, waiter: DeliveryWaiter | None = None
    ) -> SpoolEntry:
        """Move a fully written file in durably (fsync, rename into ``ready/``, fsync dir).

        ``waiter`` travels with the entry in memory (an after-upload C-STORE). Raises
        SpoolFullError (the file is left where it was) when it does not fit.
        """
        src = Path(src_tmp_path)
        size = src.stat().st_size
        entry_id = new_entry_id(meta.calling_ae, meta.called_ae)
        dst = self.ready_dir / f"{entry_id}{SUFFIX}"
        floor = disk_floor_problem(self.path, size, self.min_free_bytes)  # a syscall: unlocked
        problem = floor or self.budget.reserve(size)  # reserved while the file moves in
        if problem is not None:
            raise SpoolFullError(problem)
        with self._cond:
            self._moving.add(entry_id)
        entry = SpoolEntry(entry_id, dst, size, meta, time.time(), waiter=waiter)
        try:
            move_durably(src, self.incoming_dir, dst)
            self._ready_sync.sync()
            if self.backup is not None:
                self._back_up(entry_id, dst)
        finally:
            self.budget.unreserve(size)
            with self._cond:
                self._moving.discard(entry_id)
                if dst.exists():
                    self._index(entry)
        return entry

    def _back_up(self, entry_id: str, path: Path) -> None:
        """Copy a just-moved-in file to the backup; if that fails, the file goes again (it
        is not indexed yet) and the error propagates: the instance is not acknowledged."""
        assert self.backup is not None
        try:
            self.backup.put(entry_id, path)
        except BaseException:
            path.unlink(missing_ok=True)
            self._ready_sync.sync()
            raise

    def link_in(
        self,
        src: Path,
        entry_id: str,
        meta: SpoolMeta,
        waiter: DeliveryWaiter | None = None,
        *,
        sync: bool = True,
    ) -> SpoolEntry | None:
        """Hard-link an already durable file in as ``entry_id`` (an outbox taking a routed
        instance) and make the link durable (``sync=False``: the caller calls :meth:`sync`
        once for a whole batch before it relies on the link); the caller fsynced the file.
        Idempotent: the same entry id again (re-routing after a crash) returns None."""
        dst = self.ready_dir / f"{entry_id}{SUFFIX}"
        with self._cond:
            if entry_id in self._entries or entry_id in self._moving:
                return None
            self._moving.add(entry_id)
        try:
            with contextlib.suppress(FileExistsError):  # linked before a crash: index it
                os.link(src, dst)
            if sync:
                self._ready_sync.sync()
            entry = SpoolEntry(entry_id, dst, dst.stat().st_size, meta, time.time(), waiter=waiter)
        finally:
            with self._cond:
                self._moving.discard(entry_id)
        with self._cond:
            if entry_id in self._entries:
                return None
            self._index(entry)
        return entry

    def sync(self) -> None:
        """Make renames and links into ``ready/`` durable (one group-committed fsync)."""
        self._ready_sync.sync()

    def _index(self, entry: SpoolEntry) -> None:
        """Add a new entry (lock held) and wake a worker."""
        self._entries[entry.id] = entry
        self._held_uids[entry.meta.sop_instance_uid] += 1
        self._pending[entry.id] = entry
        self.budget.hold(entry.id, entry.size)
        if self._lingering:
            self._cond.notify_all()  # the lingering claimer counts its batch-mates
        else:  # one claimer takes it; waking every idle worker (16 after-upload) costs CPU
            self._cond.notify()

    # ------------------------------------------------------------------ claiming
    def claim_batch(
        self,
        max_instances: int,
        max_bytes: int,
        *,
        timeout: float = 0.0,
        linger: float = 0.0,
        stop: threading.Event | None = None,
    ) -> list[SpoolEntry]:
        """Claim up to ``max_instances`` due entries within ``max_bytes`` (the first always),
        oldest first, never two with one SOP Instance UID in flight; wait up to ``timeout`` for
        the first and then up to ``linger`` for batch-mates. Empty when nothing came (or on
        ``stop``, which must be followed by :meth:`wake`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed and not (stop is not None and stop.is_set()):
                self._promote_due()
                if self._pending and (not self._lingering or len(self._pending) >= max_instances):
                    if linger > 0 and len(self._pending) < max_instances and not self._lingering:
                        self._linger(max_instances, linger)
                    batch = self._take(max_instances, max_bytes)
                    if batch:
                        return batch
                now = time.monotonic()
                if now >= deadline:
                    return []
                wait = deadline - now
                if self._delayed:
                    wait = min(wait, max(0.0, self._delayed[0][0] - now))
                self._cond.wait(wait if wait > 0 else 0.001)
        return []

    def _linger(self, max_instances: int, linger: float) -> None:
        self._lingering = True
        try:
            end = time.monotonic() + linger
            while not self._closed and len(self._pending) < max_instances:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        finally:
            self._lingering = False
            self._cond.notify_all()

    def _promote_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, entry_id = heapq.heappop(self._delayed)
            entry = self._entries.get(entry_id)
            if entry is not None and entry_id not in self._claimed:
                self._pending[entry_id] = entry
                self._pending.move_to_end(entry_id, last=False)  # retries go first

    def _take(self, max_instances: int, max_bytes: int) -> list[SpoolEntry]:
        batch: list[SpoolEntry] = []
        total = 0
        uids: set[str] = set()
        for entry in self._pending.values():  # entries are removed after the loop
            if len(batch) >= max_instances:
                break
            uid = entry.meta.sop_instance_uid
            if uid in uids or self._inflight_uids[uid]:
                continue  # the same instance again: after the copy in flight is done
            if batch and total + entry.size > max_bytes:
                break
            batch.append(entry)
            uids.add(uid)
            total += entry.size
        for entry in batch:
            del self._pending[entry.id]
            self._claimed[entry.id] = entry
            self._inflight_uids[entry.meta.sop_instance_uid] += 1
        return batch

    def _unclaim(self, entry: SpoolEntry) -> bool:
        """Forget the claim (lock held); False if the entry was not claimed."""
        if self._claimed.pop(entry.id, None) is None:
            return False
        uid = entry.meta.sop_instance_uid
        self._inflight_uids[uid] -= 1
        if self._inflight_uids[uid] <= 0:
            del self._inflight_uids[uid]
        return True

    # ------------------------------------------------------------------ outcomes
    def release(self, entry: SpoolEntry, delay: float = 0.0) -> None:
        """Give a claimed entry back for another attempt after ``delay`` seconds."""
        with self._cond:
            if not self._unclaim(entry) or entry.id not in self._entries:
                return
            entry.not_before = time.monotonic() + max(0.0, delay)
            if delay <= 0:
                self._pending[entry.id] = entry
                self._pending.move_to_end(entry.id, last=False)
            else:
                heapq.heappush(self._delayed, (entry.not_before, entry.id))
            self._cond.notify_all()

    def complete(self, *entries: SpoolEntry) -> None:
        """Delivered: unlink the files (a file's last link goes into the budget's pool for
        reuse instead), then one directory fsync for all of them; pooled files are reused
        only after it."""
        pool = self.budget.pool
        retired: list[tuple[Path, int]] = []
        for entry in entries:
            moved = pool.retire(entry.path) if pool is not None else None
            if moved is not None:
                retired.append(moved)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.path.unlink()
            self._forget(entry)
        if entries:
            self._ready_sync.sync()
        if pool is not None and retired:
            pool.publish(retired)

    def open_receive_file(self, path: Path) -> io.FileIO:
        """A new file at ``path`` (in ``incoming/``) to receive an instance into: a delivered
        one written over when the pool has one (cut to length on close)."""
        pool = self.budget.pool
        return pool.open_for_writing(path) if pool is not None else io.FileIO(path, "w")

    def discard(self, entry: SpoolEntry) -> None:
        """Drop an entry that is not (or no longer) claimed, e.g. an after-upload instance
        answered with a failure status: the sender keeps the responsibility to resend."""
        with self._cond:
            if entry.id in self._claimed:
                return
            self._pending.pop(entry.id, None)
        self.complete(entry)

    def dead_letter(
        self, entry: SpoolEntry, fields: dict[str, Any], reason_class: str = "permanent"
    ) -> None:
        """Move the file to the dead-letter queue with a record of why (UIDs only)."""
        if self.dead_letters is None:
            raise RuntimeError("this spool has no dead-letter queue")
        record = {
            "sop_instance_uid": entry.meta.sop_instance_uid,
            "study_instance_uid": entry.meta.study_instance_uid,
            "series_instance_uid": entry.meta.series_instance_uid,
            "attempts": entry.attempts,
            "first_attempt": entry.first_attempt,
            **fields,
        }
        self.dead_letters.add(record, payload=entry.path, reason_class=reason_class)
        self._forget(entry)

    def _forget(self, entry: SpoolEntry) -> None:
        with self._cond:
            self._unclaim(entry)
            self._pending.pop(entry.id, None)
            if self._entries.pop(entry.id, None) is not None:
                self.budget.drop(entry.id)
                uid = entry.meta.sop_instance_uid
                self._held_uids[uid] -= 1
                if self._held_uids[uid] <= 0:
                    del self._held_uids[uid]
            self._cond.notify_all()

    # ------------------------------------------------------------------ state
    def get(self, entry_id: str) -> SpoolEntry | None:
        with self._cond:
            return self._entries.get(entry_id)

    def holds(self, sop_instance_uid: str) -> bool:
        """True while a copy of this instance waits here (storage commitment asks)."""
        with self._cond:
            return self._held_uids[sop_instance_uid] > 0

    def depth(self) -> int:
        """Instances in the spool (waiting, delayed or being uploaded)."""
        return len(self._entries)

    def claimed_count(self) -> int:
        return len(self._claimed)

    def oldest_age(self) -> float:
        """Seconds since the oldest instance still here was received (0 when empty)."""
        with self._cond:
            oldest = next(iter(self._entries.values()), None)
        return max(0.0, time.time() - oldest.received_at) if oldest is not None else 0.0

    @property
    def bytes_used(self) -> int:
        """Bytes held against the (shared) budget."""
        return self.budget.used

    def wake(self) -> None:
        """Wake waiting claimers (e.g. on shutdown)."""
        with self._cond:
            self._cond.notify_all()
