"""The exporter's Service: a Pub/Sub streaming pull whose callbacks run the export pipeline.

google-cloud-pubsub keeps leases alive, applies flow control (max messages/bytes outstanding)
and runs callbacks on a thread pool sized to ``workers``. Honours ``PUBSUB_EMULATOR_HOST``.
If the stream ends with an error, it is opened again with backoff; readiness reports it.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adapter.deadletter import DeadLetter
from adapter.errors import ConfigError
from exporter.config import PubSubConfig
from exporter.delivery import DelayedNacks, PubSubMessage

__all__ = [
    "SubscriberService",
    "dead_letter_publisher",
    "requeue_publisher",
    "subscription_path",
    "topic_path",
]

log = logging.getLogger(__name__)


def subscription_path(project: str, subscription: str) -> str:
    """``projects/P/subscriptions/S`` (a full path is kept as it is)."""
    if subscription.startswith("projects/"):
        return subscription
    return f"projects/{project}/subscriptions/{subscription}"


def topic_path(project: str, topic: str) -> str:
    """``projects/P/topics/T`` (a full path is kept as it is)."""
    return topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"


def dead_letter_publisher(project: str, topic: str) -> Callable[[bytes, Mapping[str, str]], None]:
    """A function publishing a message to the dead-letter topic and waiting for its ID."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    path = topic_path(project, topic)

    def publish(data: bytes, attributes: Mapping[str, str]) -> None:
        client.publish(path, data, **dict(attributes)).result(timeout=30)

    return publish


def requeue_publisher(config: PubSubConfig) -> Callable[[DeadLetter, Path | None], None]:
    """For ``dicom-adapter deadletters retry``: publish the dead letter's notification again on
    the subscription's topic, so the running exporter takes it through the whole pipeline.
    Other subscriptions of that topic see it too (harmless for a store notification)."""

    def requeue(entry: DeadLetter, payload: Path | None) -> None:
        from google.cloud import pubsub_v1

        extra = entry.extra
        if "resource" in extra:
            data = str(extra["resource"]).encode("ascii")
        else:
            data = base64.b64decode(extra.get("data_base64", ""))
        attributes = {str(k): str(v) for k, v in dict(extra.get("attributes", {})).items()}
        attributes["requeuedDeadLetter"] = entry.id
        path = subscription_path(config.project, config.subscription)
        topic = (
            pubsub_v1.SubscriberClient()
            .get_subscription(request={"subscription": path}, timeout=30)
            .topic
        )
        pubsub_v1.PublisherClient().publish(topic, data, **attributes).result(timeout=30)

    return requeue


class SubscriberService:
    """Streaming pull on the export subscription; stops gracefully (in-flight callbacks finish)."""

    name = "exporter.subscriber"

    def __init__(
        self,
        config: PubSubConfig,
        callback: Callable[[PubSubMessage], None],
        *,
        workers: int,
        nacks: DelayedNacks,
        on_stop: Callable[[], None] | None = None,
        stop_event: threading.Event | None = None,
        restart_delay: float = 1.0,
    ) -> None:
        self.config = config
        self.callback = callback
        self.workers = workers
        self.nacks = nacks
        self.on_stop = on_stop
        self.stop_event = stop_event or threading.Event()
        self.restart_delay = restart_delay
        self.path = subscription_path(config.project, config.subscription)
        self._stopping = threading.Event()
        self._client: Any = None
        self._future: Any = None
        self._lock = threading.Lock()
        self._runner: threading.Thread | None = None

    def start(self) -> None:
        """Check the subscription exists, then open the stream in the background."""
        from google.api_core import exceptions
        from google.cloud import pubsub_v1

        self._client = pubsub_v1.SubscriberClient()
        try:
            self._client.get_subscription(request={"subscription": self.path}, timeout=30)
        except exceptions.NotFound:
            self._client.close()
            raise ConfigError(
                f"exporter.pubsub.subscription: {self.path} does not exist (create it on the "
                "DICOM store's notification topic)"
            ) from None
        except exceptions.GoogleAPICallError as exc:
            log.warning("cannot check %s yet (%s); subscribing anyway", self.path, exc)
        self._open_stream()
        self._runner = threading.Thread(target=self._watch, name="export-pull", daemon=True)
        self._runner.start()
        log.info("exporter subscribed to %s with %d workers", self.path, self.workers)

    def _open_stream(self) -> None:
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

        flow = pubsub_v1.types.FlowControl(
            max_messages=self.config.max_outstanding_messages,
            max_bytes=self.config.max_outstanding_bytes,
        )
        executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="export")
        with self._lock:
            self._future = self._client.subscribe(
                self.path,
                self.callback,
                flow_control=flow,
                scheduler=ThreadScheduler(executor=executor),
                await_callbacks_on_shutdown=True,
            )

    def _watch(self) -> None:
        """Re-open the stream if it ends by itself (e.g. a fatal gRPC error)."""
        delay = self.restart_delay
        while not self._stopping.is_set():
            try:
                self._future.result()
            except Exception as exc:  # the stream's own error, already final
                if self._stopping.is_set():
                    return
                log.error(
                    "streaming pull on %s ended: %s; reopening in %.0fs", self.path, exc, delay
                )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, 60.0)
            try:
                self._open_stream()
            except Exception:
                log.exception("cannot reopen streaming pull on %s", self.path)

    def stop(self, timeout: float) -> None:
        """Stop pulling, nack what waits for backoff, let running callbacks finish, close."""
        self._stopping.set()
        self.stop_event.set()
        self.nacks.close()
        with self._lock:
            future = self._future
        if future is not None:
            future.cancel()
            try:
                future.result(timeout=timeout)
            except Exception as exc:  # a timeout or the stream's last error: we are leaving
                log.warning("streaming pull on %s did not stop cleanly: %s", self.path, exc)
        if self._runner is not None:
            self._runner.join(timeout=5.0)
        if self.on_stop is not None:
            self.on_stop()
        if self._client is not None:
            self._client.close()

    def readiness(self) -> dict[str, bool]:
        with self._lock:
            future = self._future
        return {"streaming_pull": future is not None and not future.done()}

    def status(self) -> dict[str, Any]:
        """For /status: the subscription we read and the destinations we route to."""
        pipeline = getattr(self.callback, "pipeline", None)
        return {
            "kind": "subscriber",
            "subscription": self.path,
            "destinations": ", ".join(getattr(pipeline, "deliveries", {})) or "?",
            "streaming": self.readiness()["streaming_pull"],
            "workers": self.workers,
        }
