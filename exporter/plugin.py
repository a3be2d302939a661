"""The export plugin's entry point: config model and the services it runs."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import ClassVar

from adapter.config import CoreConfig
from adapter.deadletter import DeadLetter, DeadLetterQueue
from adapter.destinations import DestinationConfig, DimseDestination, echo_aets
from adapter.dicomweb.wado import WadoClient
from adapter.pipeline.build import BuiltPipeline, build_pipeline, check_routing, outbox_path
from adapter.pipeline.router import Router
from adapter.plugin import PluginContext
from adapter.provenance import ProvenanceLog
from adapter.service import Service
from adapter.spool import SpoolBudget, adopt_into_spool
from exporter.config import PEER_DESTINATION, ExporterConfig
from exporter.delivery import DelayedNacks, MessageHandler
from exporter.echo_guard import EchoGuard
from exporter.filters import NotificationFilter
from exporter.subscriber import SubscriberService, dead_letter_publisher, requeue_publisher


def _use_emulator(config: ExporterConfig) -> None:
    """``pubsub.emulator_host`` makes this process's Pub/Sub clients talk to the emulator."""
    if config.pubsub.emulator_host:
        os.environ["PUBSUB_EMULATOR_HOST"] = config.pubsub.emulator_host


class ExporterPlugin:
    """DICOMweb -> PACS: Pub/Sub notifications, WADO-RS fetch, then the routing pipeline into
    one outbox per destination (C-STORE, STOW-RS, GCS, folder)."""

    name: ClassVar[str] = "exporter"
    config_model: ClassVar[type[ExporterConfig]] = ExporterConfig

    def check(self, core: CoreConfig, config: ExporterConfig) -> list[str]:
        if config.source is None and core.dicomweb is None:
            return ["source: required (or a top-level dicomweb) to fetch instances from"]
        problems = check_routing(
            config.routing, list(self.destinations(core, config)), stages=list(core.stages)
        )
        if config.destination is None and config.routing.default is None:
            problems.append(
                "routing.default: required when there is no exporter.destination "
                "(destination names, or drop)"
            )
        return problems

    @staticmethod
    def destinations(core: CoreConfig, config: ExporterConfig) -> dict[str, DestinationConfig]:
        """The site's destinations plus ``peer``, the exporter's own ``destination``."""
        found: dict[str, DestinationConfig] = {}
        if config.destination is not None:
            found[PEER_DESTINATION] = config.destination
        return {**found, **core.destinations}

    def router(self, core: CoreConfig, config: ExporterConfig) -> Router:
        """The rules as the running exporter applies them (``dicom-adapter route``)."""
        destinations = self.destinations(core, config)
        return Router(
            config.routing,
            [PEER_DESTINATION] if config.destination is not None else [],
            {name: echo_aets(cfg) for name, cfg in destinations.items()},
        )

    def build(self, context: PluginContext, config: ExporterConfig) -> Sequence[Service]:
        _use_emulator(config)
        source = config.source or context.core.dicomweb
        if source is None:  # pragma: no cover - check() refuses this config
            raise ValueError("exporter: no source DICOMweb store")
        session = context.dicomweb_session(source)
        destinations = self.destinations(context.core, config)
        peer = destinations.get(PEER_DESTINATION)
        if isinstance(peer, DimseDestination):  # the PACS often calls from another AE title
            destinations[PEER_DESTINATION] = peer.model_copy(
                update={"echo_aets": (*peer.echo_aets, *config.echo_guard.source_aets)}
            )
        provenance = (
            ProvenanceLog(context.core.state_dir / "provenance.sqlite")
            if config.echo_guard.enabled
            else None
        )
        tmp_dir = config.state_dir / "tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)  # partial downloads of an earlier run
        dead_letters = self.dead_letters(context.core, config)
        built = build_pipeline(
            self.name,
            context,
            routing=config.routing,
            destinations=destinations,
            default=[PEER_DESTINATION] if config.destination is not None else [],
            outbox_root=config.outbox_dir,
            work_dir=config.state_dir / "work",
            budget=SpoolBudget(int(config.outbox_max_bytes)),
            dead_letters=dead_letters,
            provenance=provenance,
            stages=context.core.stages,
            state_dir=context.core.state_dir,
        )
        if not config.echo_guard.enabled:
            built.pipeline.router.echo_aets = {}
        stop = threading.Event()
        nacks = DelayedNacks()
        pubsub = config.pubsub
        handler = MessageHandler(
            source_url=source.url,
            source_url_kind=config.source_url_kind,
            wado_client=cache(lambda root: WadoClient(session, root)),
            pipeline=built.pipeline,
            notification_filter=NotificationFilter(config.filters),
            echo_guard=_prefetch_echo_guard(built, provenance),
            dead_letters=dead_letters,
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
        subscriber = SubscriberService(
            pubsub,
            handler,
            workers=config.workers,
            nacks=nacks,
            on_stop=built.close,
            stop_event=stop,
        )
        return [*built.deliveries, subscriber]

    def dead_letters(self, core: CoreConfig, config: ExporterConfig) -> DeadLetterQueue:
        """Local dead letters. Retrying one a destination refused puts the instance back into
        that destination's outbox; one without an instance publishes its notification again
        (see :func:`exporter.subscriber.requeue_publisher`)."""
        _use_emulator(config)
        republish = requeue_publisher(config.pubsub)

        def requeue(entry: DeadLetter, payload: Path | None) -> None:
            if entry.destination and payload is not None:
                adopt_into_spool(outbox_path(config.outbox_dir, entry.destination), payload)
            else:
                republish(entry, payload)

        return DeadLetterQueue(config.state_dir / "deadletter", self.name, requeue=requeue)


def _prefetch_echo_guard(built: BuiltPipeline, provenance: ProvenanceLog | None) -> EchoGuard:
    """Skips the WADO-RS fetch of an instance every destination would refuse as an echo:
    decidable before the fetch when the only destination is a PACS (the router decides the
    rest after the fetch, per destination)."""
    echo_aets = built.pipeline.router.echo_aets
    if provenance is not None and len(built.deliveries) == 1 and len(echo_aets) == 1:
        (aets,) = echo_aets.values()
        return EchoGuard(provenance, sorted(aets))
    return EchoGuard(None, ())
