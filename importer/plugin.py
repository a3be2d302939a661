"""The import plugin's entry point: config model and the services it runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from adapter.config import CoreConfig
from adapter.deadletter import DeadLetterQueue
from adapter.plugin import PluginContext
from adapter.service import Service
from importer.config import ImporterConfig


class ImporterPlugin:
    """PACS -> DICOMweb: a DIMSE SCP whose C-STOREs are spooled and uploaded by STOW-RS."""

    name: ClassVar[str] = "importer"
    config_model: ClassVar[type[ImporterConfig]] = ImporterConfig

    def check(self, core: CoreConfig, config: ImporterConfig) -> list[str]:
        if core.dicomweb is None:
            return ["dicomweb: required key is missing (the store the importer uploads to)"]
        return []

    def build(self, context: PluginContext, config: ImporterConfig) -> Sequence[Service]:
        raise NotImplementedError  # filled by the import path

    def dead_letters(self, core: CoreConfig, config: ImporterConfig) -> DeadLetterQueue | None:
        return DeadLetterQueue(config.dead_letter_dir, self.name)
