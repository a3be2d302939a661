"""Background STOW-RS of the spool (PS3.18 10.5): batches, per-instance outcomes, retries.

N workers claim batches from the spool (bounded by count and bytes, lingering briefly for
batch-mates), send each as one streamed multipart POST, and settle every instance on its own
outcome: stored -> deleted from the spool; rejected -> dead letter with the reason; store
unavailable -> back to the spool with backoff. A whole-batch rejection is split to find the one
bad instance. With ``ack: after-upload`` the C-STORE handler waits on a Future in the entry's
context, resolved here with the status the sender should see.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from adapter import failures, metrics
from adapter.dicomweb.stow import (
    FAILURE_DUPLICATE_SOP_INSTANCE,
    InstanceOutcome,
    StowClient,
    StowItem,
)
from adapter.errors import PermanentError, TransientError
from adapter.retry import RetryPolicy
from adapter.spool import Spool, SpoolEntry
from adapter.status import Status
from importer.config import UploadConfig

__all__ = ["UploadService", "Verdict"]

log = logging.getLogger(__name__)

PLUGIN = "importer"
AdapterErrorT = TransientError | PermanentError
#: Whole-request answers that blame the adapter's setup (auth, URL, media type), never one
#: instance: retried with backoff like an outage instead of dead-lettering every instance.
_REFUSES_US = frozenset({401, 403, 404, 405, 407, 415})


@dataclass(frozen=True)
class Verdict:
    """The C-STORE status for one instance (and the ErrorComment for a failure)."""

    status: Status
    comment: str | None = None


def _short(exc: BaseException, limit: int = 300) -> str:
    return str(exc)[:limit] or type(exc).__name__


class UploadService:
    """A Service: ``workers`` threads draining the spool into the DICOMweb store."""

    def __init__(
        self,
        spool: Spool,
        stow: StowClient,
        policy: RetryPolicy,
        config: UploadConfig,
        *,
        rescan_interval: float = 10.0,
        owns_spool: bool = False,
        linger: float | None = None,
        name: str = "upload",
    ) -> None:
        """``linger`` overrides ``config.batch_linger`` (0 with ``ack: after-upload``: every
        sender then waits for its instance, so lingering only adds latency; batches still form
        by themselves while the workers are busy)."""
        self.name = name
        self.spool = spool
        self.stow = stow
        self.policy = policy
        self.config = config
        self.rescan_interval = rescan_interval
        self.owns_spool = owns_spool
        self.linger = config.batch_linger if linger is None else linger
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ Service
    def start(self) -> None:
        """Start the workers; they resume whatever the spool holds."""
        metrics.set_spool_depth_callback(self.spool.depth)
        metrics.set_spool_bytes_callback(lambda: self.spool.bytes_used)
        metrics.set_spool_oldest_age_callback(self.spool.oldest_age)
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"{self.name}-{i}", daemon=True)
            for i in range(self.config.workers)
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "%s: %d worker(s), %d instance(s) waiting in the spool",
            self.name,
            len(self._threads),
            self.spool.depth(),
        )

    def stop(self, timeout: float) -> None:
        """Stop claiming; in-flight batches get ``timeout`` to finish; the rest stays spooled."""
        self._stop.set()
        self.spool.wake()
        deadline = time.monotonic() + max(0.0, timeout)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        if busy:
            log.warning(
                "%s: %s still uploading at shutdown; their instances stay spooled",
                self.name,
                ", ".join(busy),
            )
        self._threads = []
        if self.owns_spool:
            self.spool.close()

    def readiness(self) -> dict[str, bool]:
        return {"upload_workers": bool(self._threads) and all(t.is_alive() for t in self._threads)}

    def status(self) -> dict[str, Any]:
        """For /status: the spool as the queue towards the DICOMweb store."""
        return {
            "kind": "queue",
            "destination": f"dicomweb:{self.stow.base_url}",
            "spool_depth": self.spool.depth(),
            "spool_bytes": self.spool.bytes_used,
            "spool_oldest_age_seconds": round(self.spool.oldest_age(), 1),
            "workers": f"{sum(t.is_alive() for t in self._threads)}/{self.config.workers}",
        }

    # ------------------------------------------------------------------ workers
    def _run(self, index: int) -> None:
        next_rescan = time.monotonic() + self.rescan_interval
        cfg = self.config
        while not self._stop.is_set():
            if index == 0 and time.monotonic() >= next_rescan:
                next_rescan = time.monotonic() + self.rescan_interval
                self.spool.rescan()  # instances requeued from the dead letters
            batch = self.spool.claim_batch(
                cfg.batch_max_instances,
                int(cfg.batch_max_bytes),
                timeout=1.0,
                linger=self.linger,
                stop=self._stop,
            )
            if not batch:
                continue
            try:
                self._upload(batch)
            except Exception as exc:  # a bug must not lose instances: back to the spool
                log.exception(
                    "%s: unexpected error uploading %d instance(s)", self.name, len(batch)
                )
                for entry in batch:
                    self._retry(entry, exc)

    def _upload(self, batch: Sequence[SpoolEntry]) -> None:
        now = time.time()
        for entry in batch:
            entry.attempts += 1
            entry.first_attempt = entry.first_attempt or now
        items = [
            StowItem(
                e.path, e.meta.sop_class_uid, e.meta.sop_instance_uid, e.meta.study_instance_uid
            )
            for e in batch
        ]
        metrics.UPLOAD_BATCH_SIZE.observe(len(batch))
        start = time.perf_counter()
        try:
            outcomes = self.stow.store_instances(items)
        except (TransientError, PermanentError) as exc:
            metrics.UPLOAD_BATCH_DURATION_SECONDS.observe(time.perf_counter() - start)
            self._batch_failed(batch, exc)
            return
        metrics.UPLOAD_BATCH_DURATION_SECONDS.observe(time.perf_counter() - start)
        stored = [e for e in batch if (o := outcomes.get(e.sop_instance_uid)) and o.stored]
        metrics.UPLOAD_BATCHES_TOTAL.labels(
            outcome="success" if len(stored) == len(batch) else "partial"
        ).inc()
        done: list[SpoolEntry] = []
        for entry in batch:
            outcome = outcomes.get(entry.sop_instance_uid)
            if outcome is not None and outcome.stored:
                done.append(entry)
                result = "warning" if outcome.warning else "stored"
                metrics.UPLOAD_RESULTS_TOTAL.labels(outcome=result).inc()
                if outcome.warning:
                    log.info(
                        "stored with a warning: %s",
                        outcome.warning,
                        extra={"sop_instance_uid": entry.sop_instance_uid},
                    )
            else:
                self._instance_failed(entry, outcome)
        self._delivered(done)

    # ------------------------------------------------------------------ outcomes
    def _delivered(self, entries: Sequence[SpoolEntry]) -> None:
        if not entries:
            return
        self.spool.complete(*entries)
        metrics.INSTANCES_UPLOADED_TOTAL.inc(len(entries))
        for entry in entries:
            self._resolve(entry, Verdict(Status.SUCCESS))

    def _batch_failed(self, batch: Sequence[SpoolEntry], exc: AdapterErrorT) -> None:
        http_status = getattr(exc, "http_status", None)
        if http_status in _REFUSES_US:
            log.error(
                "the store refuses the adapter itself (HTTP %s), not an instance: check the "
                "dicomweb URL and credentials; %d instance(s) stay spooled: %s",
                http_status,
                len(batch),
                _short(exc),
                extra={"http_status": http_status},
            )
        if self.policy.is_retryable(exc) or http_status in _REFUSES_US:
            metrics.UPLOAD_BATCHES_TOTAL.labels(outcome="transient_error").inc()
            metrics.UPLOAD_RESULTS_TOTAL.labels(outcome="transient_error").inc(len(batch))
            log.warning(
                "STOW-RS of %d instance(s) failed, will retry: %s",
                len(batch),
                _short(exc),
                extra={"http_status": getattr(exc, "http_status", None)},
            )
            for entry in batch:
                self._retry(entry, exc)
            return
        metrics.UPLOAD_BATCHES_TOTAL.labels(outcome="permanent_error").inc()
        if len(batch) == 1 and http_status == 409:
            self._conflict(batch[0])
        elif len(batch) > 1:  # find the bad one(s): one request per instance
            log.warning(
                "STOW-RS of %d instances rejected as a whole (%s): retrying singly",
                len(batch),
                _short(exc, 120),
            )
            for entry in batch:
                if self._stop.is_set():
                    self.spool.release(entry)
                else:
                    entry.attempts -= 1  # the split is not a new attempt of this instance
                    self._upload([entry])
        else:
            failure_reason = getattr(exc, "failure_reason", None)
            self._reject(
                batch[0], _short(exc), http_status=http_status, failure_reason=failure_reason
            )

    def _instance_failed(self, entry: SpoolEntry, outcome: InstanceOutcome | None) -> None:
        if outcome is None:
            self._retry(entry, TransientError("the store's answer did not mention the instance"))
            return
        reason = outcome.failure_reason
        if reason == FAILURE_DUPLICATE_SOP_INSTANCE:
            self._conflict(entry)
        elif reason is None or 0xA700 <= reason <= 0xA7FF:  # not acknowledged / out of resources
            why = f"FailureReason 0x{reason:04X}" if reason is not None else outcome.warning
            self._retry(entry, TransientError(f"store did not store it: {why}"))
        else:
            note = f" ({outcome.warning})" if outcome.warning else ""
            self._reject(
                entry,
                f"store rejected it: FailureReason 0x{reason:04X}{note}",
                failure_reason=reason,
            )

    def _conflict(self, entry: SpoolEntry) -> None:
        """The store has this SOP Instance already (409 / FailureReason 0x0111)."""
        metrics.UPLOAD_RESULTS_TOTAL.labels(outcome="conflict").inc()
        if self.config.on_conflict == "done":
            self._delivered([entry])
            return
        meta = entry.meta
        if not (meta.study_instance_uid and meta.series_instance_uid):
            self._reject(entry, "conflict: cannot overwrite without Study/Series Instance UID")
            return
        try:
            self.stow.delete_instance(
                meta.study_instance_uid, meta.series_instance_uid, meta.sop_instance_uid
            )
        except TransientError as exc:
            self._retry(entry, exc)
            return
        except PermanentError as exc:
            self._reject(
                entry, f"conflict, and overwrite failed: {_short(exc)}", http_status=exc.http_status
            )
            return
        log.info(
            "overwrite: deleted the stored copy, storing again",
            extra={"sop_instance_uid": meta.sop_instance_uid},
        )
        self.spool.release(entry)

    def _retry(self, entry: SpoolEntry, exc: BaseException) -> None:
        entry.last_error = _short(exc)
        failures.record(PLUGIN, "STOW-RS", exc, sop_instance_uid=entry.meta.sop_instance_uid)
        waiter = self._waiter(entry)
        if waiter is not None and waiter.cancelled():  # sender was answered: it will resend
            self.spool.complete(entry)
            return
        limit = self.policy.max_attempts
        if limit and entry.attempts >= limit:
            if waiter is not None:
                self._give_back(entry, f"store unavailable: {entry.last_error}")
            else:
                self._reject(
                    entry,
                    f"gave up after {entry.attempts} attempts: {entry.last_error}",
                    http_status=getattr(exc, "http_status", None),
                    reason_class="max_attempts",
                )
            return
        delay = self.policy.delay_for(entry.attempts, exc)
        deadline = entry.context.get("deadline")
        if waiter is not None and deadline is not None and time.monotonic() + delay > deadline:
            self._give_back(entry, f"store unavailable: {entry.last_error}")
            return
        metrics.RETRIES_TOTAL.labels(plugin=PLUGIN).inc()
        self.spool.release(entry, delay)

    def _give_back(self, entry: SpoolEntry, comment: str) -> None:
        """After-upload: answer 0xA700 and drop our copy; the sender still has it."""
        self.spool.complete(entry)
        self._resolve(entry, Verdict(Status.REFUSED_OUT_OF_RESOURCES, comment))

    def _reject(
        self,
        entry: SpoolEntry,
        reason: str,
        *,
        http_status: int | None = None,
        failure_reason: int | None = None,
        reason_class: str = "permanent",
    ) -> None:
        metrics.UPLOAD_RESULTS_TOTAL.labels(outcome="permanent_error").inc()
        self.spool.dead_letter(
            entry,
            {
                "reason": reason,
                "http_status": http_status,
                "failure_reason": failure_reason,
                "extra": {
                    "calling_ae": entry.meta.calling_ae,
                    "transfer_syntax_uid": entry.meta.transfer_syntax_uid,
                    "sop_class_uid": entry.meta.sop_class_uid,
                },
            },
            reason_class=reason_class,
        )
        code = (
            f": FailureReason 0x{failure_reason:04X}"
            if failure_reason is not None
            else f": HTTP {http_status}"
            if http_status is not None
            else ""
        )
        self._resolve(entry, Verdict(Status.CANNOT_UNDERSTAND, f"store rejected it{code}"))

    # ------------------------------------------------------------------ after-upload waiters
    @staticmethod
    def _waiter(entry: SpoolEntry) -> Future[Verdict] | None:
        waiter: Any = entry.context.get("waiter")
        return waiter if isinstance(waiter, Future) else None

    def _resolve(self, entry: SpoolEntry, verdict: Verdict) -> None:
        waiter = self._waiter(entry)
        if waiter is None or waiter.done():
            return
        with contextlib.suppress(InvalidStateError):  # the handler gave up a moment ago
            waiter.set_result(verdict)
