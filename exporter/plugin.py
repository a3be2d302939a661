"""The export plugin's entry point: config model and the services it runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from adapter.config import CoreConfig
from adapter.deadletter import DeadLetterQueue
from adapter.plugin import PluginContext
from adapter.service import Service
from exporter.config import ExporterConfig


class ExporterPlugin:
    """DICOMweb -> PACS: Pub/Sub notifications, WADO-RS fetch, C-STORE or STOW-RS delivery."""

    name: ClassVar[str] = "exporter"
    config_model: ClassVar[type[ExporterConfig]] = ExporterConfig

    def check(self, core: CoreConfig, config: ExporterConfig) -> list[str]:
        if config.source is None and core.dicomweb is None:
            return ["source: required (or a top-level dicomweb) to fetch instances from"]
        return []

    def build(self, context: PluginContext, config: ExporterConfig) -> Sequence[Service]:
        raise NotImplementedError  # filled by the export path

    def dead_letters(self, core: CoreConfig, config: ExporterConfig) -> DeadLetterQueue | None:
        return DeadLetterQueue(config.state_dir / "deadletter", self.name)
