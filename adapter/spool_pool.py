"""Delivered spool files kept for reuse: the next received instance is written over one.

Creating and deleting a file per instance costs the kernel an inode allocation and free, block
allocation and free (and, on a disk mounted with ``discard``, a TRIM per free); on ext4 without
a journal every inode allocation also skips, one by one, the inodes freed in the last 30 s
(``recently_deleted``), which at a few hundred instances/s is most of the spool's kernel time.
Renaming the delivered file into ``free/`` and later over the next receive file keeps the inode
and its blocks: the new data overwrites them, then the file is cut to its new length.

Safety ("acknowledged means on disk" is unchanged): a file goes into ``free/`` by a rename out
of ``ready/``; it becomes available for reuse only after the caller made that removal durable
(the spool's group-committed directory fsync, :meth:`FilePool.publish`), so a power cut can
never bring back a ``ready/`` name whose inode already holds another instance. Only a file's
last link is taken (an instance still linked in another outbox is unlinked as before). After a
restart ``free/`` is emptied: whatever is there is just a name.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

__all__ = ["FilePool"]


class _Overwrite(io.FileIO):
    """A reused file opened for writing from offset 0; closing cuts it where writing ended."""

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self.truncate(self.tell())
        super().close()


class FilePool:
    """At most ``max_files`` files of at most ``max_file_bytes`` (``max_bytes`` in all) in
    ``free_dir``, shared by a spool and its outboxes (one filesystem); thread-safe."""

    def __init__(
        self,
        free_dir: Path,
        *,
        max_files: int = 64,
        max_file_bytes: int = 8 * 1024**2,
        max_bytes: int = 128 * 1024**2,
    ) -> None:
        self.free_dir = Path(free_dir)
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._usable: list[tuple[Path, int]] = []  # old names durably gone: may be reused
        self._files = 0  # usable + retired but not yet published
        self._bytes = 0
        self.free_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.free_dir.iterdir():  # a restart: nothing here is waited for
            with contextlib.suppress(OSError):
                leftover.unlink()

    def retire(self, path: Path) -> tuple[Path, int] | None:
        """Move ``path`` into the pool if it is its file's last link and the pool has room;
        the new (path, size), not usable before :meth:`publish`. None: the caller unlinks."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_nlink != 1 or st.st_size > self.max_file_bytes:
            return None
        with self._lock:
            if self._files >= self.max_files or self._bytes + st.st_size > self.max_bytes:
                return None
            self._files += 1
            self._bytes += st.st_size
        new = self.free_dir / f"{uuid.uuid4().hex}.free"
        try:
            os.rename(path, new)
        except OSError:  # another filesystem, or gone: the caller unlinks as before
            self._forget(st.st_size)
            return None
        return new, st.st_size

    def publish(self, retired: Iterable[tuple[Path, int]]) -> None:
        """The removals of these files' old names are durable: they may be reused now."""
        with self._lock:
            self._usable.extend(retired)

    def open_for_writing(self, path: Path) -> io.FileIO:
        """``path`` opened for writing (buffering 0): a reused file renamed there when one
        is free (written over, cut to length on close), else a new file."""
        while True:
            with self._lock:
                if not self._usable:
                    break
                free, size = self._usable.pop()
            self._forget(size)
            try:
                os.rename(free, path)
                return _Overwrite(path, "r+")
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(free)
        return io.FileIO(path, "w")

    @property
    def files(self) -> int:
        return self._files

    def _forget(self, size: int) -> None:
        with self._lock:
            self._files -= 1
            self._bytes -= size
