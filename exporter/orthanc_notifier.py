"""Orthanc Python plugin: publish a Cloud-Healthcare-style notification per stored instance.

The local two-way default: Orthanc plays the DICOM store, this script plays the store's Pub/Sub
notification config. Load it with Orthanc's Python plugin (Debian ``orthanc-python``, which
embeds the system Python 3.11, standard library only)::

    "Plugins": [".../libOrthancPython.so"], "PythonScript": ".../exporter/orthanc_notifier.py",
    "DicomAdapterNotifier": {"PubSubHost": "127.0.0.1:8085", "Project": "local-project",
                             "Topic": "dicom-store", "StoreName": "orthanc"}

Keys missing from ``DicomAdapterNotifier`` come from the environment: ``PUBSUB_EMULATOR_HOST``,
``PUBSUB_PROJECT_ID``, ``PUBSUB_TOPIC`` (a name or ``projects/P/topics/T``), ``DICOM_STORE_NAME``.
Data: ``projects/P/locations/local/datasets/local/dicomStores/S/dicomWeb/studies/X/series/Y/
instances/Z``; attributes: action (StoreInstances), storeName, the three UIDs, modality.
Messages go out from a background thread in batches over the emulator's REST API, retried with
backoff, so a slow or absent emulator never slows Orthanc's C-STORE/STOW answers.
Importing this module outside Orthanc does nothing (the ``orthanc`` module is absent).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

try:  # only inside Orthanc's embedded interpreter
    import orthanc  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    orthanc = None

__all__ = ["Notifier", "NotifierSettings", "build_message"]

CONFIG_SECTION = "DicomAdapterNotifier"
MAX_BATCH = 100
MAX_QUEUE = 100_000


@dataclass(frozen=True)
class NotifierSettings:
    """Where to publish, and how the store is named in the notification."""

    host: str  # emulator host:port (REST on the same port as gRPC)
    project: str
    topic: str
    location: str = "local"
    dataset: str = "local"
    store: str = "orthanc"

    @property
    def store_name(self) -> str:
        return (
            f"projects/{self.project}/locations/{self.location}/datasets/{self.dataset}"
            f"/dicomStores/{self.store}"
        )

    @property
    def publish_url(self) -> str:
        topic = self.topic
        if not topic.startswith("projects/"):
            topic = f"projects/{self.project}/topics/{topic}"
        return f"http://{self.host}/v1/{topic}:publish"

    @classmethod
    def from_sources(
        cls, config: Mapping[str, Any], environ: Mapping[str, str]
    ) -> NotifierSettings:
        """Orthanc config section first, then the environment, then defaults."""
        section = config.get(CONFIG_SECTION) or {}

        def pick(key: str, env: str, default: str) -> str:
            value = section.get(key) or environ.get(env) or default
            return str(value)

        return cls(
            host=pick("PubSubHost", "PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
            project=pick("Project", "PUBSUB_PROJECT_ID", "local-project"),
            topic=pick("Topic", "PUBSUB_TOPIC", "dicom-store"),
            location=pick("Location", "DICOM_STORE_LOCATION", "local"),
            dataset=pick("Dataset", "DICOM_STORE_DATASET", "local"),
            store=pick("StoreName", "DICOM_STORE_NAME", "orthanc"),
        )


def build_message(settings: NotifierSettings, tags: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Pub/Sub message (REST JSON) for an instance's simplified tags; None without UIDs."""
    uids = [
        str(tags.get(k) or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    ]
    if not all(uids):
        return None
    study, series, instance = uids
    data = f"{settings.store_name}/dicomWeb/studies/{study}/series/{series}/instances/{instance}"
    attributes = {
        "action": "StoreInstances",
        "storeName": settings.store_name,
        "studyInstanceUID": study,
        "seriesInstanceUID": series,
        "sopInstanceUID": instance,
        "lastUpdatedTime": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
    }
    if tags.get("Modality"):
        attributes["modality"] = str(tags["Modality"])
    return {
        "data": base64.b64encode(data.encode("ascii")).decode("ascii"),
        "attributes": attributes,
    }


class Notifier:
    """A queue drained by one thread that POSTs batches to ``topics/T:publish``."""

    def __init__(
        self,
        settings: NotifierSettings,
        log: Callable[[str], None] = print,
        max_delay: float = 10.0,
    ) -> None:
        self.settings = settings
        self.log = log
        self.max_delay = max_delay
        self.published = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(MAX_QUEUE)
        self._thread = threading.Thread(target=self._run, name="pubsub-notifier", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> Notifier:
        self._thread.start()
        return self

    def notify(self, tags: Mapping[str, Any]) -> None:
        """Queue the notification for one stored instance (never blocks Orthanc)."""
        message = build_message(self.settings, tags)
        if message is None:
            self.log("dicom-adapter notifier: instance without UIDs, not notified")
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.log("dicom-adapter notifier: queue full, notification dropped")

    def stop(self, timeout: float = 5.0) -> None:
        """Publish what is queued (within ``timeout``) and end the thread."""
        self._stopped.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get(timeout=0.02)
                except queue.Empty:
                    break
                if item is None:
                    self._publish(batch)
                    return
                batch.append(item)
            self._publish(batch)

    def _publish(self, batch: list[dict[str, Any]]) -> None:
        body = json.dumps({"messages": batch}).encode()
        delay = 0.5
        while True:
            request = urllib.request.Request(
                self.settings.publish_url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
                self.published += len(batch)
                return
            except (urllib.error.URLError, OSError) as exc:
                self.log(
                    f"dicom-adapter notifier: publish to {self.settings.publish_url} "
                    f"failed ({exc}); retrying in {delay:.1f}s"
                )
            if self._stopped.is_set():  # shutting down: one try only
                self.log(f"dicom-adapter notifier: giving up on {len(batch)} notification(s)")
                return
            self._stopped.wait(delay)
            delay = min(delay * 2, self.max_delay)


def _register() -> None:  # pragma: no cover - runs inside Orthanc only
    config = json.loads(orthanc.GetConfiguration())
    settings = NotifierSettings.from_sources(config, os.environ)
    notifier = Notifier(settings, log=orthanc.LogWarning).start()
    orthanc.LogWarning(
        f"dicom-adapter notifier: publishing to {settings.publish_url} as {settings.store_name}"
    )

    def on_stored_instance(dicom: Any, instance_id: str) -> None:
        notifier.notify(json.loads(dicom.GetInstanceSimplifiedJson()))

    def on_change(change_type: Any, level: Any, resource_id: str) -> None:
        if change_type == orthanc.ChangeType.ORTHANC_STOPPED:
            notifier.stop()

    orthanc.RegisterOnStoredInstanceCallback(on_stored_instance)
    orthanc.RegisterOnChangeCallback(on_change)


if orthanc is not None:  # pragma: no cover
    _register()
