"""Multi-process receive (``importer.dimse.processes: N`` > 1, ack after-spool only).

pynetdicom spends most of its CPU in two 1 ms polling threads per association, and one Python
process runs Python on one core: with many associations the listener, not the store, is the
limit. Here N child processes (``spawn``) each run the importer's DimseServer on the same
bind/port with SO_REUSEPORT (the kernel spreads new associations over them; same user only).

A child writes each instance into the shared spool exactly as the single-process path does
(pynetdicom's file in ``incoming/``, fsync, rename into ``ready/``, directory fsync), records
provenance (SQLite WAL, multi-process safe), answers Success, and tells the parent the file's
name over its pipe; the parent's Spool adopts it at once (the parent keeps the spool's
``.lock``, the claims and the uploader). A lost message costs nothing but latency: the file is
durable and the uploader's periodic rescan (or the next start) finds it.

Budget: a shared array holds the bytes the parent's spool holds (republished every 0.2 s and on
every adoption) and the bytes children moved in that the parent has not adopted yet; a child
reserves under its lock before the rename, and refuses with 0xA700 as the single-process path
does. The free-disk floor is checked with statvfs in the child.

Storage commitment in a child asks the parent whether the spool still holds an instance (the
same pipe). The association limit (``max_associations``) applies per process.

Lifetime: the parent sends "stop" (graceful, within the stop timeout), then kills leftovers by
PID. A child whose parent dies sees EOF on its pipe (or a new parent PID) and exits at once;
everything it acknowledged is already durable in ``ready/``.

Metrics: each child's DIMSE, association and receive counters stay in that child and are not
exported by the parent's /metrics; the parent counts ``instances_spooled`` for what the children
hand over, and the spool/upload metrics are the parent's as always.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from adapter import metrics
from adapter.config import CoreConfig, SiteConfig
from adapter.deadletter import fsync_dir
from adapter.dimse.server import DimseServer
from adapter.log import configure_logging
from adapter.pipeline.waiter import DeliveryWaiter
from adapter.plugin import PluginContext
from adapter.provenance import ProvenanceLog
from adapter.spool import Spool, SpoolBackup
from adapter.spool_files import (
    SUFFIX,
    SpoolEntry,
    SpoolFullError,
    SpoolMeta,
    disk_floor_problem,
    move_durably,
    new_entry_id,
)
from importer.config import ImporterConfig
from importer.store_scp import StoreScp

__all__ = ["ReceiverPool", "ReceiverSpool", "run_receiver"]

log = logging.getLogger(__name__)

_PARENT, _RESERVED = 0, 1  # slots of the shared budget array


# ====================================================================== child side
class _ParentLink:
    """The child's end of its pipe: thread-safe sends, spool questions answered by the parent."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self._ask_lock = threading.Lock()
        self._replies: queue.Queue[bool] = queue.Queue()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def holds(self, sop_instance_uid: str) -> bool:
        """Does the parent's spool still hold this instance (storage commitment waits)?"""
        with self._ask_lock:
            try:
                self.send(("holds", sop_instance_uid))
                return self._replies.get(timeout=10.0)
            except (OSError, queue.Empty):
                return False

    def serve(self, stop: threading.Event, parent_pid: int) -> float:
        """Read the parent's messages until told to stop (returns the grace period) or the
        parent is gone (EOF, or we were re-parented: returns a short one)."""
        while not stop.is_set():
            if os.getppid() != parent_pid:
                log.warning("receiver: parent %d is gone, exiting", parent_pid)
                return 1.0
            try:
                if not self.conn.poll(0.5):
                    continue
                message = self.conn.recv()
            except (EOFError, OSError):
                log.warning("receiver: parent %d is gone, exiting", parent_pid)
                return 1.0
            if message[0] == "stop":
                return float(message[1])
            if message[0] == "holds":
                self._replies.put(bool(message[1]))
        return 5.0  # SIGTERM to the child itself


class ReceiverSpool:
    """A child's view of the spool: the same durable move into ``ready/``, a shared budget,
    and a message to the parent, which indexes and uploads the file."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        min_free_bytes: int,
        budget: Any,
        link: _ParentLink,
        backup: SpoolBackup | None = None,
    ) -> None:
        self.path = Path(path)
        self.backup = backup  # the child's own client; the parent deletes the objects
        self.incoming_dir = self.path / "incoming"
        self.ready_dir = self.path / "ready"
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self._budget = budget
        self._link = link

    @property
    def bytes_used(self) -> int:
        with self._budget.get_lock():
            return int(self._budget[_PARENT] + self._budget[_RESERVED])

    def has_room(self, incoming_bytes: int = 0) -> bool:
        return self._disk_problem(incoming_bytes) is None and (
            self.bytes_used + incoming_bytes <= self.max_bytes
        )

    def _disk_problem(self, incoming_bytes: int) -> str | None:
        return disk_floor_problem(self.path, incoming_bytes, self.min_free_bytes)

    def put_file(
        self, src_tmp_path: Path, meta: SpoolMeta, waiter: DeliveryWaiter | None = None
    ) -> SpoolEntry:
        src = Path(src_tmp_path)
        size = src.stat().st_size
        problem = self._disk_problem(size)
        with self._budget.get_lock():
            used = self._budget[_PARENT] + self._budget[_RESERVED]
            if problem is None and used + size > self.max_bytes:
                problem = f"spool holds {used} of {self.max_bytes} bytes"
            if problem is None:
                self._budget[_RESERVED] += size
        if problem is not None:
            raise SpoolFullError(problem)
        entry_id = new_entry_id(meta.calling_ae, meta.called_ae)
        dst = self.ready_dir / f"{entry_id}{SUFFIX}"
        try:
            move_durably(src, self.incoming_dir, dst)
            fsync_dir(self.ready_dir)
            if self.backup is not None:
                try:
                    self.backup.put(entry_id, dst)
                except BaseException:  # not acknowledged: the file must not be routed
                    dst.unlink(missing_ok=True)
                    fsync_dir(self.ready_dir)
                    raise
        finally:
            if dst.exists():  # durable or not, it is in ready/: the parent owns it now
                with contextlib.suppress(OSError):  # parent gone: its next start finds it
                    self._link.send(("spooled", dst.name, meta, size))
            else:
                with self._budget.get_lock():
                    self._budget[_RESERVED] -= size
        return SpoolEntry(entry_id, dst, size, meta, time.time(), waiter=waiter)

    def discard(self, entry: SpoolEntry) -> None:
        """Only ack after-upload discards, and children never run it."""
        raise RuntimeError("a receiving child does not discard spool entries")


def run_receiver(
    index: int, core: CoreConfig, config: ImporterConfig, conn: Connection, budget: Any
) -> None:
    """A receiving child's main (the ``spawn`` target): serve until told to stop."""
    from importer.plugin import dimse_handlers, importer_contexts, spool_backup

    configure_logging(core.log.format, core.log.level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent_pid = os.getppid()
    link = _ParentLink(conn)
    context = PluginContext(site=SiteConfig(core=core, plugins={"importer": config}))
    try:
        spool_cfg = config.spool
        spool = ReceiverSpool(
            spool_cfg.path,
            int(spool_cfg.max_bytes),
            int(spool_cfg.min_free_bytes),
            budget,
            link,
            backup=spool_backup(config),
        )
        store = StoreScp(spool, ProvenanceLog(core.state_dir / "provenance.sqlite"))
        handlers, commitment = dimse_handlers(context, config, link.holds)
        server = DimseServer(
            config.dimse,
            [*store.handlers(), *handlers],
            importer_contexts(),
            receive_dir=spool.incoming_dir,
            require_called_aet=config.dimse.check_called_aet,
            name=f"dimse-receiver-{index}",
            reuse_port=True,
            storage_handler=store,
        )
        server.start()
    except Exception as exc:
        log.exception("receiver %d failed to start", index)
        with contextlib.suppress(OSError):
            link.send(("failed", f"{type(exc).__name__}: {exc}"))
        logging.shutdown()
        os._exit(1)
    link.send(("ready", os.getpid()))
    grace = link.serve(stop, parent_pid)
    server.stop(grace)
    commitment.stop(grace)
    context.close()
    logging.shutdown()
    os._exit(0)  # association/report threads are done or abandoned: do not wait for them


# ====================================================================== parent side
@dataclass
class _Child:
    index: int
    process: BaseProcess
    conn: Connection
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    reader: threading.Thread | None = None


class ReceiverPool:
    """A Service: N receiving child processes feeding this process's spool."""

    name = "receivers"

    def __init__(
        self, core: CoreConfig, config: ImporterConfig, spool: Spool, start_timeout: float = 60.0
    ) -> None:
        self.core = core
        self.config = config
        self.spool = spool
        self.start_timeout = start_timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._budget: Any = None
        self._children: list[_Child] = []
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        """Spawn the children; return once every one of them listens (or raise)."""
        self._stopping.clear()
        self._budget = self._ctx.Array("q", 2)
        self._publish()
        for i in range(self.config.dimse.processes):
            parent_conn, child_conn = self._ctx.Pipe(duplex=True)
            args = (i, self.core, self.config, child_conn, self._budget)
            proc = self._ctx.Process(
                target=run_receiver, args=args, name=f"dimse-receiver-{i}", daemon=True
            )
            proc.start()
            child_conn.close()  # only the child holds its end: EOF tells each side of a death
            self._children.append(_Child(i, proc, parent_conn))
        deadline = time.monotonic() + self.start_timeout
        try:
            for child in self._children:
                self._await_ready(child, deadline)
        except BaseException:
            self.stop(0.0)
            raise
        for child in self._children:
            child.reader = threading.Thread(
                target=self._read, args=(child,), name=f"receiver-{child.index}", daemon=True
            )
            child.reader.start()
        self._monitor = threading.Thread(target=self._watch, name="receivers", daemon=True)
        self._monitor.start()
        log.info(
            "DIMSE listener %s on %s:%d: %d receiving processes (pids %s)",
            self.config.dimse.ae_title,
            self.config.dimse.bind,
            self.config.dimse.port,
            len(self._children),
            ", ".join(str(c.process.pid) for c in self._children),
        )

    def _await_ready(self, child: _Child, deadline: float) -> None:
        left = max(0.0, deadline - time.monotonic())
        message: Any = None
        with contextlib.suppress(EOFError, OSError):
            if child.conn.poll(left):
                message = child.conn.recv()
        if not message or message[0] != "ready":
            why = message[1] if message and message[0] == "failed" else "no answer"
            raise RuntimeError(
                f"receiver {child.index} did not start ({why}; exit code {child.process.exitcode})"
            )

    def stop(self, timeout: float) -> None:
        """Tell the children to stop (they finish open associations within ``timeout``), then
        kill what is left, by PID."""
        self._stopping.set()
        for child in self._children:
            with child.send_lock, contextlib.suppress(OSError, ValueError):
                child.conn.send(("stop", max(0.0, timeout - 1.0)))
        deadline = time.monotonic() + max(0.0, timeout)
        for child in self._children:
            child.process.join(max(0.0, deadline - time.monotonic()))
        for child in self._children:
            if child.process.is_alive():
                log.warning(
                    "receiver %d (pid %s) did not stop: killing it", child.index, child.process.pid
                )
                child.process.kill()
                child.process.join(5.0)
            if child.reader is not None:
                child.reader.join(2.0)
            child.conn.close()
        if self._monitor is not None:
            self._monitor.join(2.0)
        self._children, self._monitor = [], None

    def status(self) -> dict[str, Any]:
        """For /status: the shared DIMSE port and its receiving processes."""
        return {
            "kind": "listener",
            "ae_title": self.config.dimse.ae_title,
            "address": f"{self.config.dimse.bind}:{self.config.dimse.port}",
            "receivers_alive": f"{sum(c.process.is_alive() for c in self._children)}"
            f"/{self.config.dimse.processes}",
            "allowed_calling_aets": list(self.config.dimse.allowed_calling_aets) or "any",
        }

    def readiness(self) -> dict[str, bool]:
        alive = bool(self._children) and all(c.process.is_alive() for c in self._children)
        return {"dimse_receivers": alive}

    # ------------------------------------------------------------------ messages
    def _read(self, child: _Child) -> None:
        while True:
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                break
            try:
                if message[0] == "spooled":
                    self._adopt(message[1], message[2], int(message[3]))
                elif message[0] == "holds":
                    held = self.spool.holds(str(message[1]))
                    with child.send_lock:
                        child.conn.send(("holds", held))
            except Exception:  # a bug here must not stop the child's hand-overs
                log.exception("receiver %d: message %r failed", child.index, message[0])
        if not self._stopping.is_set():
            log.error(
                "receiver %d (pid %s) exited unexpectedly (code %s)",
                child.index,
                child.process.pid,
                child.process.exitcode,
            )

    def _adopt(self, name: str, meta: SpoolMeta, size: int) -> None:
        try:
            if self.spool.adopt(name, meta) is not None:
                metrics.INSTANCES_SPOOLED_TOTAL.inc()
        finally:
            with self._budget.get_lock():
                self._budget[_RESERVED] = max(0, self._budget[_RESERVED] - size)
                self._budget[_PARENT] = self.spool.bytes_used

    def _publish(self) -> None:
        with self._budget.get_lock():
            self._budget[_PARENT] = self.spool.bytes_used

    def _watch(self) -> None:
        """Keep the children's view of the budget fresh (uploads free room)."""
        while not self._stopping.wait(0.2):
            self._publish()
