"""One destination's delivery: workers drain its durable outbox into the destination.

Each worker claims a batch (bounded by the destination's ``max_batch`` and bytes, lingering
briefly for batch-mates), delivers it, and settles every instance on its own outcome:
delivered -> removed from the outbox; rejected -> dead letter with the reason; unavailable ->
back into the outbox with backoff. A whole-batch rejection is split to find the bad instance.
A destination that is down only delays its own outbox: every destination has its own workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from adapter import failures, metrics
from adapter.destinations.base import DeliveryOutcome, Destination
from adapter.errors import PermanentError, TransientError
from adapter.pipeline.instance import Instance, Origin
from adapter.pipeline.waiter import DeliveryWaiter, Verdict
from adapter.retry import RetryPolicy
from adapter.spool import Spool, SpoolEntry
from adapter.status import Status

__all__ = ["DeliveryService"]

log = logging.getLogger(__name__)


def _short(exc: BaseException | str, limit: int = 300) -> str:
    text = str(exc)
    return text[:limit] or type(exc).__name__


def _stow_result(outcome: DeliveryOutcome) -> str:
    """A delivery outcome as the STOW-RS per-instance counter names it."""
    if outcome.kind == "delivered":
        return "warning" if outcome.warning else "stored"
    return f"{outcome.kind}_error"


class DeliveryService:
    """A Service: ``workers`` threads delivering ``outbox`` to ``destination``."""

    def __init__(
        self,
        plugin: str,
        outbox: Spool,
        destination: Destination,
        policy: RetryPolicy,
        *,
        workers: int,
        batch_max_bytes: int = 64 * 1024**2,
        linger: float = 0.05,
        rescan_interval: float = 10.0,
    ) -> None:
        self.plugin = plugin
        self.destination = destination
        self.name = f"{plugin}.deliver.{destination.name}"
        self.outbox = outbox
        self.policy = policy
        self.workers = workers
        self.batch_max_instances = destination.max_batch
        self.batch_max_bytes = batch_max_bytes
        self.linger = linger
        self.rescan_interval = rescan_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._labels = {"plugin": plugin, "destination": destination.name}

    # ------------------------------------------------------------------ Service
    def start(self) -> None:
        """Start the workers; they resume whatever the outbox holds."""
        metrics.OUTBOX_DEPTH.labels(**self._labels).set_function(self.outbox.depth)
        metrics.OUTBOX_OLDEST_AGE_SECONDS.labels(**self._labels).set_function(
            self.outbox.oldest_age
        )
        metrics.DESTINATION_UP.labels(**self._labels).set(1)
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"{self.name}-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "destination %s (%s): %d worker(s), %d instance(s) waiting in its outbox",
            self.destination.name,
            self.destination.kind,
            self.workers,
            self.outbox.depth(),
            extra={"destination": self.destination.name},
        )

    def stop(self, timeout: float) -> None:
        """Stop claiming; in-flight batches get ``timeout``; the rest stays in the outbox."""
        self._stop.set()
        self.outbox.wake()
        deadline = time.monotonic() + max(0.0, timeout)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        if busy:
            log.warning("%s still delivering at shutdown; their instances stay queued", busy)
        self._threads = []
        try:
            self.destination.close()
        finally:
            self.outbox.close()

    def readiness(self) -> dict[str, bool]:
        """Workers alive; a destination that is down does not make the adapter unready (its
        instances wait in the outbox), it shows in :meth:`status` and the metrics."""
        return {"workers": bool(self._threads) and all(t.is_alive() for t in self._threads)}

    def status(self) -> dict[str, Any]:
        """State for /status and /readyz: up or failing since when and why, queue depth."""
        with self._lock:
            failing, error = self._failing_since, self._last_error
        return {
            "kind": "queue",
            "destination": self.destination.name,
            "type": self.destination.kind,
            "plugin": self.plugin,
            "state": "up" if failing is None else "failing",
            "failing_for_seconds": round(time.time() - failing, 1) if failing else 0.0,
            "last_error": error,
            "queued": self.outbox.depth(),
            "oldest_age_seconds": round(self.outbox.oldest_age(), 1),
            "workers": f"{sum(t.is_alive() for t in self._threads)}/{self.workers}",
        }

    @property
    def failing(self) -> str | None:
        """Why the destination is failing right now (None: its last attempt worked)."""
        with self._lock:
            return self._last_error if self._failing_since is not None else None

    # ------------------------------------------------------------------ workers
    def _run(self, index: int) -> None:
        next_rescan = time.monotonic() + self.rescan_interval
        while not self._stop.is_set():
            if index == 0 and time.monotonic() >= next_rescan:
                next_rescan = time.monotonic() + self.rescan_interval
                self.outbox.rescan()  # instances requeued from the dead letters
            batch = self.outbox.claim_batch(
                self.batch_max_instances,
                self.batch_max_bytes,
                timeout=1.0,
                linger=self.linger,
                stop=self._stop,
            )
            if not batch:
                continue
            try:
                self._deliver(batch)
            except Exception as exc:  # a bug must not lose instances: back to the outbox
                log.exception(
                    "%s: unexpected error delivering %d instance(s)", self.name, len(batch)
                )
                for entry in batch:
                    self._retry(entry, DeliveryOutcome.transient(_short(exc)))

    def _deliver(self, batch: Sequence[SpoolEntry]) -> None:
        if len(batch) > 1 and any(e.broken for e in batch):  # suspects go alone
            for entry in batch:
                if entry.broken:
                    self._deliver([entry])
            rest = [e for e in batch if not e.broken]
            if rest:
                self._deliver(rest)
            return
        now = time.time()
        for entry in batch:
            entry.attempts += 1
            entry.first_attempt = entry.first_attempt or now
        instances = [
            Instance(e.path, e.meta, Origin("dimse", e.meta.calling_ae, e.meta.called_ae))
            for e in batch
        ]
        start = time.perf_counter()
        try:
            outcomes = self.destination.deliver(instances)
        except (TransientError, PermanentError) as exc:
            self._timed(start, len(batch))
            kind = "transient_error" if isinstance(exc, TransientError) else "permanent_error"
            self._count_stow(kind, [kind] * len(batch))
            self._batch_failed(batch, exc)
            return
        self._timed(start, len(batch))
        if len(outcomes) != len(batch):  # pragma: no cover - a destination bug
            raise RuntimeError(
                f"{self.destination.name}: {len(outcomes)} outcomes for {len(batch)}"
            )
        results = [_stow_result(o) for o in outcomes]
        self._count_stow("success" if set(results) <= {"stored", "warning"} else "partial", results)
        done: list[SpoolEntry] = []
        for entry, outcome in zip(batch, outcomes, strict=True):
            if outcome.kind == "delivered":
                done.append(entry)
                self._count("warning" if outcome.warning else "delivered")
                if outcome.warning:
                    log.info(
                        "%s took it with a warning: %s",
                        self.destination.name,
                        outcome.detail,
                        extra={"sop_instance_uid": entry.sop_instance_uid},
                    )
            elif outcome.kind == "transient":
                self._retry(entry, outcome)
            else:
                self._reject(entry, outcome)
        if done:
            self._up()
            for entry in done:  # answered first: a copy left by a crash is only sent again
                if entry.waiter is not None:
                    entry.waiter.delivered(self.destination.name)
            self.outbox.complete(*done)
            if self.plugin == "importer":
                metrics.INSTANCES_UPLOADED_TOTAL.inc(len(done))

    def _batch_failed(
        self, batch: Sequence[SpoolEntry], exc: TransientError | PermanentError
    ) -> None:
        http_status = getattr(exc, "http_status", None)
        if self.policy.is_retryable(exc) or isinstance(exc, TransientError):
            log.warning(
                "%s: delivery of %d instance(s) failed, will retry: %s",
                self.destination.name,
                len(batch),
                _short(exc),
                extra={"http_status": http_status, "destination": self.destination.name},
            )
            broke = isinstance(exc, TransientError) and exc.in_flight
            for entry in batch:
                outcome = DeliveryOutcome.transient(
                    _short(exc),
                    http_status=http_status,
                    retry_after=getattr(exc, "retry_after", None),
                )
                if broke and self._poisoned(entry, outcome):
                    continue
                self._retry(entry, outcome)
            return
        if len(batch) > 1:  # find the bad one(s): one request per instance
            log.warning(
                "%s: %d instances rejected as a whole (%s): retrying singly",
                self.destination.name,
                len(batch),
                _short(exc, 120),
            )
            for entry in batch:
                if self._stop.is_set():
                    self.outbox.release(entry)
                else:
                    entry.attempts -= 1  # the split is not a new attempt of this instance
                    self._deliver([entry])
            return
        self._reject(
            batch[0],
            DeliveryOutcome.permanent(
                _short(exc),
                http_status=http_status,
                status=getattr(exc, "failure_reason", None),
            ),
        )

    # ------------------------------------------------------------------ outcomes
    def _timed(self, start: float, size: int) -> None:
        elapsed = time.perf_counter() - start
        metrics.DELIVERY_DURATION_SECONDS.labels(**self._labels).observe(elapsed)
        if self.destination.kind == "dicomweb":  # the STOW-RS batch histograms
            metrics.UPLOAD_BATCH_DURATION_SECONDS.observe(elapsed)
            metrics.UPLOAD_BATCH_SIZE.observe(size)

    def _count_stow(self, batch_outcome: str, results: Sequence[str]) -> None:
        """The STOW-RS batch and per-instance counters (dicomweb destinations only)."""
        if self.destination.kind != "dicomweb":
            return
        metrics.UPLOAD_BATCHES_TOTAL.labels(outcome=batch_outcome).inc()
        for result in results:
            metrics.UPLOAD_RESULTS_TOTAL.labels(outcome=result).inc()

    def _count(self, outcome: str) -> None:
        metrics.DELIVERIES_TOTAL.labels(**self._labels, outcome=outcome).inc()

    def _up(self) -> None:
        with self._lock:
            was_failing = self._failing_since is not None
            self._failing_since, self._last_error = None, None
        if was_failing:
            metrics.DESTINATION_UP.labels(**self._labels).set(1)
            log.info(
                "destination %s is delivering again",
                self.destination.name,
                extra={"destination": self.destination.name},
            )

    def _failed(self, entry: SpoolEntry, outcome: DeliveryOutcome, *, transient: bool) -> None:
        failures.record(
            self.plugin,
            f"deliver to {self.destination.name}",
            outcome.detail or "failed",
            permanent=not transient,
            dimse_status=outcome.status,
            http_status=outcome.http_status,
            sop_instance_uid=entry.sop_instance_uid,
        )
        with self._lock:
            if not transient:
                return
            self._last_error = outcome.detail
            newly = self._failing_since is None
            if newly:
                self._failing_since = time.time()
        if newly:
            metrics.DESTINATION_UP.labels(**self._labels).set(0)
            log.warning(
                "destination %s is failing: %s",
                self.destination.name,
                outcome.detail,
                extra={"destination": self.destination.name, "http_status": outcome.http_status},
            )

    def _retry(self, entry: SpoolEntry, outcome: DeliveryOutcome) -> None:
        entry.last_error = outcome.detail
        self._count("transient_error")
        self._failed(entry, outcome, transient=True)
        waiter = entry.waiter
        if waiter is not None and waiter.cancelled:  # the sender was answered: it resends
            self.outbox.complete(entry)
            return
        waiting = waiter is not None and waiter.result is None and waiter.mode == "delivered"
        exhausted = self.policy.exhausted(entry.attempts, entry.first_attempt, time.time())
        delay = self.policy.delay_for(entry.attempts, _RetryAfterError(outcome.retry_after))
        if outcome.retry_after == 0.0:
            delay = 0.0
        if (
            waiting
            and waiter is not None
            and (
                exhausted
                or (waiter.deadline is not None and time.monotonic() + delay > waiter.deadline)
            )
        ):
            self._give_back(
                entry, waiter, f"{self.destination.name} unavailable: {entry.last_error}"
            )
            return
        if exhausted and not waiting:
            limit = self.policy.max_attempts
            spent = (
                f"{entry.attempts} attempts"
                if limit and entry.attempts >= limit
                else f"{time.time() - (entry.first_attempt or time.time()):.0f}s"
                f" ({entry.attempts} attempts)"
            )
            self._reject(
                entry,
                DeliveryOutcome.permanent(
                    f"gave up after {spent}: {entry.last_error}",
                    http_status=outcome.http_status,
                    status=outcome.status,
                ),
                reason_class="max_attempts",
            )
            return
        if waiter is not None:
            waiter.held(self.destination.name, _short(outcome.detail or "", 120))
        metrics.RETRIES_TOTAL.labels(plugin=self.plugin).inc()
        self.outbox.release(entry, delay)

    def _poisoned(self, entry: SpoolEntry, outcome: DeliveryOutcome) -> bool:
        """Count a request that broke with ``entry`` in flight; after ``poison_attempts`` of
        them it is dead-lettered (a store that crashes on it must not be crashed forever)."""
        entry.broken += 1
        limit = self.policy.poison_attempts
        if not limit or entry.broken < limit:
            return False
        log.error(
            "%s broke the connection %d times with this instance in flight: dead-lettering it",
            self.destination.name,
            entry.broken,
            extra={
                "sop_instance_uid": entry.sop_instance_uid,
                "destination": self.destination.name,
            },
        )
        reason = f"the destination broke the connection {entry.broken} times while it was in "
        self._reject(
            entry,
            DeliveryOutcome.permanent(f"{reason}flight (last: {outcome.detail})"),
            reason_class="poison",
        )
        return True

    def _give_back(self, entry: SpoolEntry, waiter: DeliveryWaiter, comment: str) -> None:
        """After-upload: answer 0xA700 and drop our copy; the sender still has it."""
        self.outbox.complete(entry)
        waiter.rejected(self.destination.name, Verdict(Status.REFUSED_OUT_OF_RESOURCES, comment))

    def _reject(
        self, entry: SpoolEntry, outcome: DeliveryOutcome, reason_class: str = "permanent"
    ) -> None:
        self._count("permanent_error")
        self._failed(entry, outcome, transient=False)
        self.outbox.dead_letter(
            entry,
            {
                "reason": outcome.detail or "rejected",
                "http_status": outcome.http_status,
                "failure_reason": outcome.status,
                "destination": self.destination.name,
                "extra": {
                    "calling_ae": entry.meta.calling_ae,
                    "transfer_syntax_uid": entry.meta.transfer_syntax_uid,
                    "sop_class_uid": entry.meta.sop_class_uid,
                },
            },
            reason_class=reason_class,
        )
        if entry.waiter is not None:
            term = "FailureReason" if self.destination.kind == "dicomweb" else "status"
            code = (
                f": {term} 0x{outcome.status:04X}"
                if outcome.status is not None
                else f": HTTP {outcome.http_status}"
                if outcome.http_status is not None
                else ""
            )
            entry.waiter.rejected(
                self.destination.name,
                Verdict(Status.CANNOT_UNDERSTAND, f"{self.destination.name} rejected it{code}"),
            )


class _RetryAfterError(Exception):
    """Carries a destination's Retry-After into RetryPolicy.delay_for."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("retry")
        self.retry_after = retry_after
