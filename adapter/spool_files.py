"""Files in the spool: names, UIDs read back from a file, and the durable move into ``ready/``.

A file is durable once it was fsynced, renamed into place and the directory fsynced (the rename
is atomic; the directory fsync makes it survive power loss). Names are ``<time_ns>-<uuid4hex>``:
time-ordered, unique, never derived from a UID.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapter.pipeline.waiter import DeliveryWaiter
    from adapter.spool_pool import FilePool

from pydicom import dcmread

from adapter.deadletter import fsync_dir

__all__ = [
    "SUFFIX",
    "DirectorySync",
    "SpoolBudget",
    "SpoolEntry",
    "SpoolFullError",
    "SpoolMeta",
    "adopt_into_spool",
    "disk_floor_problem",
    "fsync_file",
    "move_durably",
    "new_entry_id",
    "origin_of",
    "read_spool_meta",
    "received_at",
]

SUFFIX = ".dcm"
_META_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]


class DirectorySync:
    """Group commit of a directory's fsync: callers that renamed a file in concurrently share
    one fsync that began after their rename, instead of one each (each directory fsync is a
    journal commit; eight receiving associations would otherwise queue on them)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._running = False

    def sync(self) -> None:
        """Return once an fsync of the directory that began after this call has completed."""
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._done < ticket and self._running:
                self._cond.wait()
            if self._done >= ticket:
                return
            self._running = True
            target = self._requested
        ok = False
        try:
            fsync_dir(self.path)
            ok = True
        finally:
            with self._cond:
                self._running = False
                if ok:
                    self._done = max(self._done, target)
                self._cond.notify_all()


class SpoolFullError(Exception):
    """No room: the byte budget or the disk's free-space floor would be crossed."""


class SpoolBudget:
    """The byte budget shared by a spool and its outboxes. An instance hard-linked into
    several outboxes is one file: it is counted once, until its last link goes."""

    def __init__(
        self,
        max_bytes: int,
        on_released: Callable[[str], None] | None = None,
        pool: FilePool | None = None,
    ) -> None:
        """``on_released(entry_id)``: called once an entry's last link was dropped (every
        destination delivered or dead-lettered it); it must not block (a spool's lock may
        be held). ``pool``: delivered files kept for the next receive (shared like the
        budget by the spool and its outboxes, see :mod:`adapter.spool_pool`)."""
        self.max_bytes = int(max_bytes)
        self.on_released = on_released
        self.pool = pool
        self._lock = threading.Lock()
        self._held: dict[str, list[int]] = {}  # entry id -> [links, size]
        self._reserved = 0
        self._used = 0

    @property
    def used(self) -> int:
        return self._used + self._reserved

    def problem(self, incoming_bytes: int) -> str | None:
        """Why ``incoming_bytes`` more do not fit (None: they do)."""
        used = self.used
        if used + incoming_bytes > self.max_bytes:
            return f"spool holds {used} of {self.max_bytes} bytes"
        return None

    def reserve(self, size: int) -> str | None:
        """Reserve room for a file on its way in; the problem if it does not fit."""
        with self._lock:
            problem = self.problem(size)
            if problem is None:
                self._reserved += size
            return problem

    def unreserve(self, size: int) -> None:
        with self._lock:
            self._reserved -= size

    def hold(self, entry_id: str, size: int) -> None:
        with self._lock:
            held = self._held.setdefault(entry_id, [0, size])
            held[0] += 1
            if held[0] == 1:
                self._used += size

    def drop(self, entry_id: str) -> None:
        with self._lock:
            held = self._held.get(entry_id)
            if held is None:
                return
            held[0] -= 1
            released = held[0] <= 0
            if released:
                del self._held[entry_id]
                self._used -= held[1]
        if released and self.on_released is not None:
            self.on_released(entry_id)


@dataclass(frozen=True)
class SpoolMeta:
    """The UIDs an entry is uploaded and reported with (no patient data)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    transfer_syntax_uid: str | None = None
    calling_ae: str | None = None
    called_ae: str | None = None


@dataclass(eq=False)
class SpoolEntry:
    """One instance in ``ready/``; ``attempts``/``not_before`` belong to the delivery
    service; ``waiter`` (in memory only) is whoever waits for its delivery."""

    id: str
    path: Path
    size: int
    meta: SpoolMeta
    received_at: float
    attempts: int = 0
    first_attempt: float | None = None
    last_error: str | None = None
    broken: int = 0  # attempts during which the destination broke mid-request
    not_before: float = 0.0  # time.monotonic() before which it is not claimed again
    waiter: DeliveryWaiter | None = None

    @property
    def sop_instance_uid(self) -> str:
        return self.meta.sop_instance_uid


def new_entry_id(calling_ae: str | None = None, called_ae: str | None = None) -> str:
    """Time-ordered and unique: ``<time_ns>-<uuid4hex>`` (sorts as received), then, when
    known, ``-<calling AE>-<called AE>`` in hex: the origin survives a restart with the file
    (rules and echo suppression need it) without a second file or a second fsync."""
    base = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
    if not (calling_ae or called_ae):
        return base
    return f"{base}-{(calling_ae or '').encode().hex()}-{(called_ae or '').encode().hex()}"


def origin_of(entry_id: str) -> tuple[str | None, str | None]:
    """(calling AE, called AE) that :func:`new_entry_id` wrote into an entry id."""
    parts = entry_id.split("-")
    if len(parts) != 4:
        return None, None
    try:
        calling, called = (bytes.fromhex(p).decode("ascii") for p in parts[2:])
    except (ValueError, UnicodeDecodeError):
        return None, None
    return calling or None, called or None


def received_at(entry_id: str) -> float:
    try:
        return int(entry_id.split("-", 1)[0]) / 1e9
    except ValueError:
        return time.time()


def read_spool_meta(
    path: Path, calling_ae: str | None = None, called_ae: str | None = None
) -> SpoolMeta:
    """UIDs from a Part-10 file: the meta header and a bounded read that stops before Pixel
    Data and skips every other value. Raises on a file that is not DICOM."""
    ds = dcmread(path, stop_before_pixels=True, specific_tags=_META_TAGS)
    fm = ds.file_meta
    sop_class = str(fm.get("MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    sop_instance = str(fm.get("MediaStorageSOPInstanceUID", "") or ds.get("SOPInstanceUID", ""))
    if not sop_class or not sop_instance:
        raise ValueError("no SOP Class/Instance UID in the file meta or the data set")
    study = ds.get("StudyInstanceUID")
    series = ds.get("SeriesInstanceUID")
    syntax = fm.get("TransferSyntaxUID")
    return SpoolMeta(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=str(study) if study else None,
        series_instance_uid=str(series) if series else None,
        transfer_syntax_uid=str(syntax) if syntax else None,
        calling_ae=calling_ae,
        called_ae=called_ae,
    )


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk (before it is renamed or linked in)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_durably(src: Path, incoming: Path, dst: Path) -> None:
    """fsync ``src`` and rename it to ``dst``; across filesystems copy via ``incoming`` first."""
    try:
        fsync_file(src)
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = incoming / f"{dst.stem}.copy"
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            os.rename(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        src.unlink(missing_ok=True)


def adopt_into_spool(spool_path: Path, src: Path) -> Path:
    """Move a file into a spool's ``ready/`` from outside the owning process (dead-letter
    requeue); the running adapter finds it at its next rescan."""
    ready, incoming = Path(spool_path) / "ready", Path(spool_path) / "incoming"
    ready.mkdir(parents=True, exist_ok=True)
    incoming.mkdir(parents=True, exist_ok=True)
    dst = ready / f"{new_entry_id()}{SUFFIX}"
    move_durably(Path(src), incoming, dst)
    fsync_dir(ready)
    return dst


def disk_floor_problem(path: Path, incoming_bytes: int, min_free_bytes: int) -> str | None:
    """Why ``incoming_bytes`` more would break the free-disk floor under ``path`` (None: fits)."""
    if not min_free_bytes:
        return None
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free - incoming_bytes < min_free_bytes:
        return f"{free} bytes free on disk, floor is {min_free_bytes}"
    return None
