"""The Google Cloud Pub/Sub emulator (Java) on 127.0.0.1, driven with the real client library.

Usage::

    emu = PubSubEmulator(project="test-project").start()
    os.environ / subprocess env: emu.env()   # PUBSUB_EMULATOR_HOST, PUBSUB_PROJECT_ID, ...
    topic = emu.create_topic("dicom-store")
    sub = emu.create_subscription("dicom-export", "dicom-store", ack_deadline_seconds=10)
    emu.publish("dicom-store", b"projects/p/.../instances/1.2.3", storeName="s")
    emu.pull("dicom-export")
    emu.stop()

The helper's own clients talk to the emulator over an explicit insecure gRPC channel, so they
never depend on (or change) ``PUBSUB_EMULATOR_HOST`` in this process's environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.peers.lifecycle import ManagedPeer
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.wait import (
    WaitAbortedError,
    describe_exit,
    spawn,
    stop_process,
    tail,
    wait_until,
)

EMULATOR_BIN = os.environ.get(
    "PUBSUB_EMULATOR_BIN",
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)
DEFAULT_PROJECT = "test-project"


class PubSubEmulatorError(RuntimeError):
    """The emulator is missing or did not start."""


def require_pubsub_emulator() -> None:
    """Raise with an install hint if the emulator or Java is missing (fail, don't skip)."""
    if not Path(EMULATOR_BIN).is_file():
        raise PubSubEmulatorError(
            f"Pub/Sub emulator not found at {EMULATOR_BIN} (Debian package "
            "google-cloud-cli-pubsub-emulator, preinstalled on this machine kind; "
            "set PUBSUB_EMULATOR_BIN to override)"
        )
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise PubSubEmulatorError(
            "java not found: install 'default-jre-headless' (.ci/run and local-stack.sh do)"
        )


class PubSubEmulator(ManagedPeer):
    """One Pub/Sub emulator process on a free port of 127.0.0.1."""

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        project: str = DEFAULT_PROJECT,
        port: int | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pubsub-emulator-")).resolve()
        self.project = project
        self.port = port
        self._port_fixed = port is not None
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._publisher: Any = None
        self._subscriber: Any = None

    # ---------------------------------------------------------------- addresses
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the value for ``PUBSUB_EMULATOR_HOST``."""
        if self.port is None:
            raise PubSubEmulatorError("emulator has no port yet: call start() first")
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "pubsub-emulator.log"

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def env(self) -> dict[str, str]:
        """Variables that point a google-cloud-pubsub client (e.g. the adapter) here."""
        return {
            "PUBSUB_EMULATOR_HOST": self.host,
            "PUBSUB_PROJECT_ID": self.project,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }

    def log_tail(self, max_bytes: int = 4000) -> str:
        return tail(self.log_path, max_bytes)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> PubSubEmulator:
        """Start the emulator and wait (bounded) until its gRPC API answers.

        A cold JVM start takes about 1.5-3 s here; ``startup_timeout`` (60 s) is generous for
        a loaded CI machine.
        """
        if self.is_running:
            return self
        require_pubsub_emulator()
        attempts = 1 if self._port_fixed else 3
        for attempt in range(1, attempts + 1):
            if self.port is None:
                self.port = free_port()
            began = time.monotonic()
            self.proc = spawn(
                [EMULATOR_BIN, f"--host={LOOPBACK}", f"--port={self.port}"],
                self.log_path,
                cwd=self.workdir,
            )
            try:
                wait_until(
                    self._answers,
                    timeout=self.startup_timeout,
                    interval=0.2,
                    what=f"Pub/Sub emulator at {self.host}",
                    abort=lambda: describe_exit(self.proc),
                )
                self.startup_seconds = time.monotonic() - began
                return self
            except (TimeoutError, WaitAbortedError) as exc:
                stop_process(self.proc, timeout=5.0)
                if attempt == attempts:
                    raise PubSubEmulatorError(
                        f"{exc}\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
                    ) from exc
                self.port = None
        raise AssertionError("unreachable")

    def _answers(self) -> bool:
        # The emulator serves gRPC and, on the same port, a small HTTP/1 front: a GET of "/"
        # answers 200 "Ok" once the server is up. Then prove the gRPC API itself answers.
        import requests

        r = requests.get(f"http://{self.host}/", timeout=2)
        if r.status_code != 200:
            return False
        list(self.publisher().list_topics(request={"project": f"projects/{self.project}"}))
        return True

    def stop(self, timeout: float = 10.0) -> int | None:
        self._close_clients()
        if self.proc is None:
            return None
        return stop_process(self.proc, timeout=timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"PubSubEmulator(host={self.port and self.host}, project={self.project!r})"

    # ---------------------------------------------------------------- clients
    def publisher(self) -> Any:
        """A ``google.cloud.pubsub_v1.PublisherClient`` bound to this emulator (cached)."""
        if self._publisher is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            transport = PublisherGrpcTransport(channel=grpc.insecure_channel(self.host))
            self._publisher = pubsub_v1.PublisherClient(transport=transport)
        return self._publisher

    def subscriber(self) -> Any:
        """A ``google.cloud.pubsub_v1.SubscriberClient`` bound to this emulator (cached)."""
        if self._subscriber is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            transport = SubscriberGrpcTransport(channel=grpc.insecure_channel(self.host))
            self._subscriber = pubsub_v1.SubscriberClient(transport=transport)
        return self._subscriber

    def _close_clients(self) -> None:
        for client in (self._publisher, self._subscriber):
            if client is not None:
                with contextlib.suppress(Exception):  # closing is best effort
                    client.transport.close()
        self._publisher = None
        self._subscriber = None

    # ---------------------------------------------------------------- resources
    def topic_path(self, topic: str) -> str:
        return topic if topic.startswith("projects/") else f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        if subscription.startswith("projects/"):
            return subscription
        return f"projects/{self.project}/subscriptions/{subscription}"

    def create_topic(self, topic: str) -> str:
        """Create a topic (idempotent); returns its full path."""
        from google.api_core.exceptions import AlreadyExists

        path = self.topic_path(topic)
        with contextlib.suppress(AlreadyExists):
            self.publisher().create_topic(request={"name": path}, timeout=30)
        return path

    def create_subscription(
        self,
        subscription: str,
        topic: str,
        *,
        ack_deadline_seconds: int = 10,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int = 5,
        retain_acked_messages: bool = False,
    ) -> str:
        """Create a pull subscription (idempotent); returns its full path.

        With ``dead_letter_topic`` (created if needed) messages nacked or not acked
        ``max_delivery_attempts`` times (5..100) move there.
        """
        from google.api_core.exceptions import AlreadyExists

        path = self.subscription_path(subscription)
        request: dict[str, Any] = {
            "name": path,
            "topic": self.create_topic(topic),
            "ack_deadline_seconds": ack_deadline_seconds,
            "retain_acked_messages": retain_acked_messages,
        }
        if dead_letter_topic is not None:
            request["dead_letter_policy"] = {
                "dead_letter_topic": self.create_topic(dead_letter_topic),
                "max_delivery_attempts": max_delivery_attempts,
            }
        with contextlib.suppress(AlreadyExists):
            self.subscriber().create_subscription(request=request, timeout=30)
        return path

    def delete_subscription(self, subscription: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.subscriber().delete_subscription(
                request={"subscription": self.subscription_path(subscription)}, timeout=30
            )

    def delete_topic(self, topic: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.publisher().delete_topic(request={"topic": self.topic_path(topic)}, timeout=30)

    # ---------------------------------------------------------------- messages
    def publish(self, topic: str, data: bytes, timeout: float = 30.0, **attrs: str) -> str:
        """Publish one message and wait for its ID."""
        future = self.publisher().publish(self.topic_path(topic), data, **attrs)
        return str(future.result(timeout=timeout))

    def pull(
        self,
        subscription: str,
        max_messages: int = 10,
        *,
        ack: bool = True,
        timeout: float = 10.0,
        min_messages: int = 1,
    ) -> list[Any]:
        """Synchronously pull until at least ``min_messages`` arrived or ``timeout`` passed.

        Returns ``ReceivedMessage`` objects (``.message.data``, ``.message.attributes``,
        ``.ack_id``, ``.delivery_attempt``); acks them when ``ack``. Returns what it has at the
        deadline (possibly ``[]`` when ``min_messages`` is 0 or nothing came).
        """
        from google.api_core.exceptions import DeadlineExceeded

        path = self.subscription_path(subscription)
        deadline = time.monotonic() + timeout
        received: list[Any] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(received) >= max(min_messages, 1):
                break
            try:
                response = self.subscriber().pull(
                    request={"subscription": path, "max_messages": max_messages - len(received)},
                    timeout=max(0.5, min(remaining, 5.0)),
                    retry=None,
                )
            except DeadlineExceeded:
                if min_messages == 0:
                    break
                continue
            received += list(response.received_messages)
            if len(received) >= max_messages or min_messages == 0:
                break
        if ack and received:
            self.subscriber().acknowledge(
                request={"subscription": path, "ack_ids": [m.ack_id for m in received]},
                timeout=30,
            )
        return received

    def attributes(self, message: Any) -> Mapping[str, str]:
        """The attributes of a ``ReceivedMessage`` as a plain dict."""
        return dict(message.message.attributes)
