"""A Cloud Storage copy of the import spool, for pods without a persistent volume.

Each received instance is uploaded as ``<prefix>/<entry id>.dcm`` before its C-STORE is
answered; the object is deleted once the instance's last local copy is gone (delivered to,
or dead-lettered by, every destination); at start every object left under the prefix is
downloaded back into the spool's ``ready/`` under its entry id (which carries the calling and
called AE), and routed again. Object names are entry ids, never UIDs.

At-least-once: a crash between a delivery and the object's delete re-delivers that instance
after the restart (every destination kind treats a re-sent instance as a duplicate).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
from collections.abc import Container
from pathlib import Path
from typing import Any

from adapter.deadletter import fsync_dir
from adapter.gcs_client import classify, make_client, upload_file
from adapter.spool_files import SUFFIX, move_durably

__all__ = ["GcsSpoolBackup", "SpoolBackupError", "entry_ids_in"]

log = logging.getLogger(__name__)

#: What :func:`adapter.spool_files.new_entry_id` makes (and dead-letter requeues: the base).
_ENTRY_ID = re.compile(r"^[0-9]{1,20}-[0-9a-f]{32}(-[0-9a-f]*-[0-9a-f]*)?$")


class SpoolBackupError(Exception):
    """The backup copy could not be written: the instance must not be acknowledged."""


class GcsSpoolBackup:
    """``put``/``delete``/``restore`` of spool entries under ``gs://bucket/prefix/``; also a
    Service whose thread runs the deletes :meth:`release` queues (it is called under a spool's
    lock, so it never waits on the network itself)."""

    name = "spool-backup"

    def __init__(self, bucket: str, prefix: str, client: Any, *, timeout: float = 60.0) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.timeout = timeout
        self._deletes: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @classmethod
    def create(
        cls, bucket: str, prefix: str, project: str | None, timeout: float = 60.0
    ) -> GcsSpoolBackup:
        """A backup with its own client (application default credentials or the emulator)."""
        return cls(bucket, prefix, make_client(project), timeout=timeout)

    @property
    def location(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}" if self.prefix else f"gs://{self.bucket}"

    def object_name(self, entry_id: str) -> str:
        name = f"{entry_id}{SUFFIX}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, entry_id: str, path: Path) -> None:
        """Upload one entry (blocking); raises SpoolBackupError with a short reason."""
        try:
            upload_file(self.client, self.bucket, self.object_name(entry_id), path, self.timeout)
        except Exception as exc:
            failure = classify(exc)
            log.error(
                "spool backup: upload to %s failed (%s)%s",
                self.location,
                failure.detail,
                ": check the bucket and the credentials" if failure.kind == "setup" else "",
                extra={"http_status": failure.http_status},
            )
            reason = f"backup to gs://{self.bucket} failed: {failure.detail}"
            raise SpoolBackupError(reason) from exc

    def delete(self, entry_id: str) -> None:
        """Remove an entry's object; a failure is logged (the object would be restored and
        its instance re-delivered after a restart), never raised."""
        try:
            self.client.bucket(self.bucket).blob(self.object_name(entry_id)).delete(
                timeout=self.timeout, retry=None
            )
        except Exception as exc:
            failure = classify(exc)
            if failure.http_status == 404:
                return  # already gone: a second release, or an operator cleaned up
            log.warning(
                "spool backup: cannot delete %s in %s (%s): it would be delivered again "
                "after a restart",
                entry_id,
                self.location,
                failure.detail,
            )

    def restore(self, ready_dir: Path, known: Container[str] = ()) -> int:
        """Download every object under the prefix into ``ready_dir`` as ``<entry id>.dcm``
        (skipping ids in ``known`` or already there); returns how many came back. Run before
        the spool opens; downloads land in its ``incoming/`` first (deleted on open if cut)."""
        ready_dir = Path(ready_dir)
        incoming = ready_dir.parent / "incoming"
        ready_dir.mkdir(parents=True, exist_ok=True)
        incoming.mkdir(parents=True, exist_ok=True)
        listing_prefix = f"{self.prefix}/" if self.prefix else ""
        restored = 0
        try:
            blobs = list(
                self.client.list_blobs(self.bucket, prefix=listing_prefix, timeout=self.timeout)
            )
        except Exception as exc:
            failure = classify(exc)
            raise SpoolBackupError(
                f"cannot list the spool backup {self.location}: {failure.detail}"
            ) from exc
        for blob in blobs:
            name = str(blob.name)[len(listing_prefix) :]
            entry_id = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else ""
            if not _ENTRY_ID.match(entry_id):
                log.warning(
                    "spool backup: %s in %s is not a spool entry; left alone", name, self.location
                )
                continue
            target = ready_dir / name
            if entry_id in known or target.exists():
                continue
            tmp = incoming / f"{entry_id}.restore"
            try:
                blob.download_to_filename(str(tmp), timeout=self.timeout, retry=None)
                move_durably(tmp, incoming, target)
            except Exception as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise SpoolBackupError(
                    f"cannot restore {entry_id} from {self.location}: {classify(exc).detail}"
                ) from exc
            restored += 1
        if restored:
            fsync_dir(ready_dir)
            log.info("spool backup: restored %d instance(s) from %s", restored, self.location)
        return restored

    # ------------------------------------------------------------------ Service
    def release(self, entry_id: str) -> None:
        """The entry's last local copy is gone: delete its object soon (SpoolBudget's
        ``on_released``)."""
        self._deletes.put(entry_id)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> None:
        """Run the queued deletes (up to ``timeout``), then close the client."""
        if self._thread is not None:
            self._deletes.put(None)
            self._thread.join(max(0.0, timeout))
            if self._thread.is_alive():
                log.warning("spool backup: %d delete(s) left undone", self._deletes.qsize())
            self._thread = None
        self.close()

    def readiness(self) -> dict[str, bool]:
        return {}

    def _run(self) -> None:
        while True:
            entry_id = self._deletes.get()
            if entry_id is None:
                return
            self.delete(entry_id)  # logs its own failures, never raises

    def pending_deletes(self) -> int:
        return self._deletes.qsize()

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()


def entry_ids_in(root: Path) -> set[str]:
    """Entry ids of the ``*.dcm`` files in ``root/*/ready/`` (the outboxes), for ``known``."""
    found: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for outbox in os.scandir(root):
            ready = Path(outbox.path) / "ready"
            if ready.is_dir():
                found.update(
                    p.name[: -len(SUFFIX)] for p in os.scandir(ready) if p.name.endswith(SUFFIX)
                )
    return found
