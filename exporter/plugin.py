"""The export plugin's entry point: config model and the services it runs."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from functools import cache
from typing import ClassVar

from adapter.config import CoreConfig
from adapter.deadletter import DeadLetterQueue
from adapter.dicomweb.wado import WadoClient
from adapter.plugin import PluginContext
from adapter.provenance import ProvenanceLog
from adapter.service import Service
from exporter.config import DimseDestination, ExporterConfig
from exporter.delivery import DelayedNacks, MessageHandler
from exporter.echo_guard import EchoGuard
from exporter.filters import NotificationFilter
from exporter.sinks import build_sink
from exporter.subscriber import SubscriberService, dead_letter_publisher, requeue_publisher


def _use_emulator(config: ExporterConfig) -> None:
    """``pubsub.emulator_host`` makes this process's Pub/Sub clients talk to the emulator."""
    if config.pubsub.emulator_host:
        os.environ["PUBSUB_EMULATOR_HOST"] = config.pubsub.emulator_host


class ExporterPlugin:
    """DICOMweb -> PACS: Pub/Sub notifications, WADO-RS fetch, C-STORE or STOW-RS delivery."""

    name: ClassVar[str] = "exporter"
    config_model: ClassVar[type[ExporterConfig]] = ExporterConfig

    def check(self, core: CoreConfig, config: ExporterConfig) -> list[str]:
        if config.source is None and core.dicomweb is None:
            return ["source: required (or a top-level dicomweb) to fetch instances from"]
        return []

    def build(self, context: PluginContext, config: ExporterConfig) -> Sequence[Service]:
        _use_emulator(config)
        source = config.source or context.core.dicomweb
        if source is None:  # pragma: no cover - check() refuses this config
            raise ValueError("exporter: no source DICOMweb store")
        session = context.dicomweb_session(source)
        destination = config.destination
        sink = build_sink(
            destination,
            None
            if isinstance(destination, DimseDestination)
            else context.dicomweb_session(destination.as_dicomweb()),
        )
        aets = list(config.echo_guard.source_aets)
        if isinstance(destination, DimseDestination):
            aets.insert(0, destination.ae_title)
        provenance = (
            ProvenanceLog(context.core.state_dir / "provenance.sqlite")
            if config.echo_guard.enabled and aets
            else None
        )
        tmp_dir = config.state_dir / "tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)  # partial downloads of an earlier run
        stop = threading.Event()
        nacks = DelayedNacks()
        pubsub = config.pubsub
        handler = MessageHandler(
            source_url=source.url,
            source_url_kind=config.source_url_kind,
            wado_client=cache(lambda root: WadoClient(session, root)),
            sink=sink,
            notification_filter=NotificationFilter(config.filters),
            echo_guard=EchoGuard(provenance, aets),
            dead_letters=self.dead_letters(context.core, config),
            retry_policy=context.retry_policy(),
            max_delivery_attempts=pubsub.max_delivery_attempts,
            tmp_dir=tmp_dir,
            nacks=nacks,
            publish_dead_letter=(
                dead_letter_publisher(pubsub.project, pubsub.dead_letter_topic)
                if pubsub.dead_letter_topic
                else None
            ),
            stop_event=stop,
        )
        return [
            SubscriberService(
                pubsub,
                handler,
                workers=config.workers,
                nacks=nacks,
                on_stop=sink.close,
                stop_event=stop,
            )
        ]

    def dead_letters(self, core: CoreConfig, config: ExporterConfig) -> DeadLetterQueue:
        """Local dead letters; retrying one publishes its notification again (see
        :func:`exporter.subscriber.requeue_publisher`)."""
        _use_emulator(config)
        return DeadLetterQueue(
            config.state_dir / "deadletter", self.name, requeue=requeue_publisher(config.pubsub)
        )
