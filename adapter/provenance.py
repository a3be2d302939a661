"""Where each instance came from: the importer records it, the exporter consults it.

Two-way sync must never send a PACS its own instances back (an echo). The importer records
(SOP Instance UID, calling AE) for everything it accepts; the exporter skips a notification whose
instance was received from the AE it would deliver to. SQLite in WAL mode, so an importer and
an exporter in the same pod (or process) share it safely; entries expire after ``ttl`` seconds.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["ProvenanceLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS received (
    sop_instance_uid TEXT NOT NULL,
    source_ae TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (sop_instance_uid, source_ae)
)
"""


class _Closer:
    """Closes a connection when the thread-local slot holding it is dropped."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class ProvenanceLog:
    """A persistent set of (SOP Instance UID, source AE) with a time-to-live."""

    def __init__(self, path: Path, ttl: float = 7 * 24 * 3600.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl
        self._local = threading.local()
        self._initialise()
        self.expire()  # entries past the TTL are never consulted: keep the file from growing

    def _initialise(self, deadline: float = 30.0) -> None:
        """WAL mode and the table. Several processes may open the file at once (receiving
        processes, importer and exporter pods): switching the journal mode can fail with
        "database is locked" without waiting for the busy timeout, so retry, bounded."""
        give_up = time.monotonic() + deadline
        delay = 0.01
        while True:
            try:
                conn = self._conn()
                mode = conn.execute("PRAGMA journal_mode").fetchone()
                if not mode or str(mode[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= give_up:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            # closed when its thread (one per association) ends and drops its thread-local
            # data; not left to the cyclic GC (a finalizer on the Thread object waited for
            # the Thread to be collected: an fd per finished association until then)
            self._local.closer = _Closer(conn)
        return conn

    def record(self, sop_instance_uid: str, source_ae: str) -> None:
        """Remember that ``source_ae`` sent us this instance (before we acknowledge it)."""
        self._conn().execute(
            "INSERT OR REPLACE INTO received VALUES (?, ?, ?)",
            (sop_instance_uid, source_ae.strip(), time.time()),
        )

    def sources(self, sop_instance_uid: str) -> set[str]:
        """The AEs this instance was received from within the TTL."""
        rows = self._conn().execute(
            "SELECT source_ae FROM received WHERE sop_instance_uid = ? AND received_at >= ?",
            (sop_instance_uid, time.time() - self.ttl),
        )
        return {r[0] for r in rows}

    def came_from(self, sop_instance_uid: str, ae_title: str) -> bool:
        """True when delivering this instance to ``ae_title`` would echo it back."""
        return ae_title.strip() in self.sources(sop_instance_uid)

    def expire(self) -> int:
        """Drop entries older than the TTL; returns how many."""
        cur = self._conn().execute(
            "DELETE FROM received WHERE received_at < ?", (time.time() - self.ttl,)
        )
        return cur.rowcount
