"""What happens to one notification: parse, filter, echo guard, WADO-RS fetch, then the
pipeline (rules, one durable outbox per destination), then ack; nack later when the fetch
fails transiently; dead-letter and ack when it fails for good (malformed, not in the store).

Acked once every destination the rules chose delivered the instance, rejected it (a dead
letter of that destination), or holds it durably in its outbox because it is down: one
destination down for an hour neither blocks the others nor loses anything. Delivery is
at-least-once; a re-delivered instance is harmless (same SOP Instance UID). Kept apart from
the Pub/Sub plumbing so it can be driven by any object with the Message interface below.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread

from adapter import failures, metrics
from adapter.deadletter import DeadLetterQueue
from adapter.dicomweb.wado import WadoClient
from adapter.errors import AdapterError, PermanentError
from adapter.part10_scan import read_file_meta
from adapter.pipeline.instance import Instance, Origin
from adapter.pipeline.pipeline import Pipeline
from adapter.pipeline.waiter import DeliveryWaiter
from adapter.retry import RetryPolicy
from adapter.spool_files import SpoolMeta
from exporter.echo_guard import EchoGuard
from exporter.filters import NotificationFilter
from exporter.notification import (
    MalformedNotificationError,
    Notification,
    SourceUrlKind,
    parse_notification,
    resolve_dicomweb_root,
)

__all__ = ["DelayedNacks", "MessageHandler", "PubSubMessage"]

log = logging.getLogger(__name__)

DeadLetterPublisher = Callable[[bytes, Mapping[str, str]], None]


class PubSubMessage(Protocol):
    """The part of ``google.cloud.pubsub_v1.subscriber.message.Message`` we use."""

    @property
    def data(self) -> bytes: ...
    @property
    def attributes(self) -> Mapping[str, str]: ...
    @property
    def message_id(self) -> str: ...
    @property
    def delivery_attempt(self) -> int | None: ...
    def ack(self) -> None: ...
    def nack(self) -> None: ...


class DelayedNacks:
    """Nacks messages after a backoff delay, from one thread.

    A nack makes Pub/Sub redeliver at once; holding the message (its lease is kept alive by the
    client) until the delay has passed turns that into backoff without blocking a worker.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, PubSubMessage]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="export-nack", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def schedule(self, message: PubSubMessage, delay: float) -> None:
        with self._cond:
            if self._closed:
                message.nack()
                return
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), message))
            self._cond.notify()

    def close(self) -> None:
        """Nack everything still waiting, now (so another subscriber can take it)."""
        with self._cond:
            self._closed = True
            pending, self._heap = self._heap, []
            self._cond.notify()
        for _, _, message in pending:
            message.nack()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _, _, message = heapq.heappop(self._heap)
            message.nack()


class _Attempts:
    """Local delivery-attempt counts by message ID (Pub/Sub reports them only with a
    dead-letter policy); bounded, oldest forgotten first."""

    def __init__(self, limit: int = 100_000) -> None:
        self._counts: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def next(self, message_id: str, reported: int | None) -> int:
        with self._lock:
            count, first = self._counts.pop(message_id, (0, time.time()))
            count = max(count + 1, reported or 0)
            self._counts[message_id] = (count, first)
            while len(self._counts) > self._limit:
                self._counts.popitem(last=False)
            return count

    def first_seen(self, message_id: str) -> float | None:
        """When this process first saw the message (epoch seconds)."""
        with self._lock:
            entry = self._counts.get(message_id)
            return entry[1] if entry is not None else None

    def forget(self, message_id: str) -> None:
        with self._lock:
            self._counts.pop(message_id, None)


class MessageHandler:
    """The export pipeline for one message; call it from the subscriber's worker threads."""

    def __init__(
        self,
        *,
        source_url: str,
        source_url_kind: SourceUrlKind,
        wado_client: Callable[[str], WadoClient],
        pipeline: Pipeline,
        notification_filter: NotificationFilter,
        echo_guard: EchoGuard,
        dead_letters: DeadLetterQueue,
        retry_policy: RetryPolicy,
        max_delivery_attempts: int,
        tmp_dir: Path,
        nacks: DelayedNacks,
        publish_dead_letter: DeadLetterPublisher | None = None,
        stop_event: threading.Event | None = None,
        settle_timeout: float = 60.0,
    ) -> None:
        """``settle_timeout``: the longest a message waits for its destinations' first answer
        before it is acked anyway (the instance is durable in their outboxes by then)."""
        self.source_url, self.source_url_kind = source_url, source_url_kind
        self._wado_client = wado_client
        self.pipeline = pipeline
        self.settle_timeout = settle_timeout
        self.filter = notification_filter
        self.echo_guard = echo_guard
        self.dead_letters = dead_letters
        self.retry_policy = retry_policy
        self.max_delivery_attempts = max_delivery_attempts
        self.tmp_dir = tmp_dir
        tmp_dir.mkdir(parents=True, exist_ok=True)  # once: WadoClient recreates it if removed
        self.nacks = nacks
        self.publish_dead_letter = publish_dead_letter
        self.stop_event = stop_event or threading.Event()
        self._attempts = _Attempts()

    def __call__(self, message: PubSubMessage) -> None:
        metrics.EXPORT_MESSAGES_RECEIVED_TOTAL.inc()
        if self.stop_event.is_set():
            message.nack()  # shutting down: leave it to the next subscriber
            return
        attempt = self._attempts.next(message.message_id, message.delivery_attempt)
        try:
            note = parse_notification(message.data, message.attributes)
        except MalformedNotificationError as exc:
            self._dead_letter(message, None, exc, attempt, "malformed")
            return
        try:
            self._handle(message, note, attempt)
        except Exception as exc:  # every failure ends in a nack or a dead letter
            try:
                self._failed(message, note, exc, attempt)
            except Exception:  # e.g. the dead-letter directory is not writable
                log.exception("cannot dead-letter message %s; handing it back", message.message_id)
                message.nack()

    # ------------------------------------------------------------------------------ steps
    def _handle(self, message: PubSubMessage, note: Notification, attempt: int) -> None:
        started = time.monotonic()
        uid = note.sop_instance_uid
        reason = self.filter.skip_reason(note)
        if reason is not None:
            self._skip(message, note, "filtered", reason)
            return
        source = self.echo_guard.echo_source(uid)
        if source is not None:
            self._skip(message, note, "echo", f"received from {source}, the destination")
            return
        root = resolve_dicomweb_root(self.source_url, note, self.source_url_kind)
        path = self.tmp_dir / f"{uid}-{uuid.uuid4().hex[:8]}.dcm"
        try:
            self._wado_client(root).retrieve_instance(
                note.study_instance_uid, note.series_instance_uid, uid, path
            )
            meta = _checked_meta(path, note)
            if self.filter.needs_header:
                header = dcmread(path, stop_before_pixels=True)
                reason = self.filter.skip_reason_for_header(note, header)
                if reason is not None:
                    self._skip(message, note, "filtered", reason)
                    return
            waiter = DeliveryWaiter("settled")
            decision = self.pipeline.submit(
                Instance(path, meta, Origin("pubsub")), waiter=waiter, durable=False
            )
            if not decision.routes:
                if decision.echoes:
                    why = f"received from {', '.join(decision.echoes)}, the destination"
                    self._skip(message, note, "echo", why)
                else:
                    self._skip(message, note, "filtered", decision.dropped or "no destination")
                return
            verdict = waiter.wait(self.settle_timeout)
            label = ",".join(decision.destinations)
            metrics.EXPORT_LATENCY_SECONDS.labels(destination=label).observe(
                time.monotonic() - started
            )
            log.info(
                "exported %s to %s (%s)",
                uid,
                label,
                "accepted" if verdict is not None and verdict.ok else "queued or dead-lettered",
                extra={"sop_instance_uid": uid},
            )
            self._ack(message)
        finally:
            path.unlink(missing_ok=True)

    def _failed(
        self, message: PubSubMessage, note: Notification, exc: Exception, attempt: int
    ) -> None:
        uid = note.sop_instance_uid
        if not isinstance(exc, AdapterError):
            log.exception("unexpected error exporting %s (will retry)", uid)
        elif not self.retry_policy.is_retryable(exc):
            self._dead_letter(message, note, exc, attempt, "permanent")
            return
        first = self._attempts.first_seen(message.message_id)
        if (
            self.max_delivery_attempts and attempt >= self.max_delivery_attempts
        ) or self.retry_policy.exhausted(attempt, first, time.time()):
            self._dead_letter(message, note, exc, attempt, "max_attempts")
            return
        delay = self.retry_policy.delay_for(attempt, exc)
        log.warning(
            "export of %s failed (attempt %d%s), redelivery in %.1fs: %s",
            uid,
            attempt,
            f"/{self.max_delivery_attempts}" if self.max_delivery_attempts else "",
            delay,
            exc,
            extra={"sop_instance_uid": uid},
        )
        failures.record("exporter", "WADO-RS fetch", exc, sop_instance_uid=uid)
        metrics.EXPORT_MESSAGES_NACKED_TOTAL.inc()
        metrics.RETRIES_TOTAL.labels(plugin="exporter").inc()
        self.nacks.schedule(message, delay)

    def _skip(self, message: PubSubMessage, note: Notification, kind: str, reason: str) -> None:
        log.info(
            "not exporting %s: %s",
            note.sop_instance_uid,
            reason,
            extra={"sop_instance_uid": note.sop_instance_uid},
        )
        metrics.EXPORT_MESSAGES_SKIPPED_TOTAL.labels(reason=kind).inc()
        self._ack(message)

    def _ack(self, message: PubSubMessage) -> None:
        message.ack()
        self._attempts.forget(message.message_id)
        metrics.EXPORT_MESSAGES_ACKED_TOTAL.inc()

    def _dead_letter(
        self,
        message: PubSubMessage,
        note: Notification | None,
        exc: Exception,
        attempt: int,
        reason_class: str,
        payload: Path | None = None,
    ) -> None:
        """Record it locally (and on the dead-letter topic, if configured), then ack."""
        prefix = ""
        if reason_class == "max_attempts":
            first = self._attempts.first_seen(message.message_id) or time.time()
            counted = self.max_delivery_attempts and attempt >= self.max_delivery_attempts
            spent = f"{time.time() - first:.0f}s ({attempt} attempts)"
            prefix = f"gave up after {f'{attempt} attempts' if counted else spent}: "
        reason = f"{prefix}{exc}"[:2000]
        extra: dict[str, Any] = {
            "message_id": message.message_id,
            "attributes": dict(message.attributes),
        }
        if note is None:
            extra["data_base64"] = base64.b64encode(message.data[:4096]).decode("ascii")
        else:
            extra["resource"] = (f"{note.store_path}/dicomWeb/" if note.store_path else "") + (
                note.dicomweb_path
            )
        fields: dict[str, Any] = {
            "reason": reason,
            "sop_instance_uid": note.sop_instance_uid if note else None,
            "study_instance_uid": note.study_instance_uid if note else None,
            "series_instance_uid": note.series_instance_uid if note else None,
            "http_status": getattr(exc, "http_status", None),
            "failure_reason": getattr(exc, "failure_reason", None),
            "attempts": attempt,
            "extra": extra,
        }
        self.dead_letters.add(fields, payload=payload, reason_class=reason_class)
        if self.publish_dead_letter is not None:
            attrs = {
                **message.attributes,
                "deadLetterReason": reason[:1000],
                "deliveryAttempts": str(attempt),
            }
            try:
                self.publish_dead_letter(message.data, attrs)
            except Exception:  # the local record is the one that counts
                log.exception("could not publish dead letter of message %s", message.message_id)
        metrics.EXPORT_MESSAGES_DEAD_LETTERED_TOTAL.inc()
        message.ack()
        self._attempts.forget(message.message_id)


def _checked_meta(path: Path, note: Notification) -> SpoolMeta:
    """The UIDs of the retrieved file (its File Meta Information, PS3.10 7.1), after checking
    that the store returned the instance that was asked for."""
    uid = note.sop_instance_uid
    try:
        meta = read_file_meta(path)
    except ValueError as exc:
        raise PermanentError(f"WADO-RS for {uid} returned {exc}") from exc
    instance, sop_class = meta.media_storage_sop_instance_uid, meta.media_storage_sop_class_uid
    if instance != uid or not sop_class:
        raise PermanentError(
            f"WADO-RS for {uid} returned instance {instance!r} of SOP class {sop_class!r}"
        )
    return SpoolMeta(
        sop_class_uid=sop_class,
        sop_instance_uid=uid,
        study_instance_uid=note.study_instance_uid,
        series_instance_uid=note.series_instance_uid,
        transfer_syntax_uid=meta.transfer_syntax_uid,
    )
