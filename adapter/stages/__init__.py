"""Stages: one module per kind (deidentify, transcode), the :class:`~adapter.pipeline.stage.Stage`
protocol they meet, and the registry that builds each configured stage from its model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapter.pipeline.stage import Stage
from adapter.provenance import ProvenanceLog
from adapter.stages.config import DeidentifyStageConfig, StageConfig, TranscodeStageConfig

__all__ = ["StageConfig", "StageContext", "build_stage"]


@dataclass(frozen=True)
class StageContext:
    """What a stage may need besides its config: a state folder that survives restarts (e.g. a
    UID mapping) and the provenance log (so echo suppression knows rewritten UIDs)."""

    plugin: str
    state_dir: Path
    provenance: ProvenanceLog | None = None


def _deidentify(name: str, cfg: Any, context: StageContext) -> Stage:
    from adapter.stages.deidentify import DeidentifyStage

    return DeidentifyStage.from_config(name, cfg, context)


def _transcode(name: str, cfg: Any, context: StageContext) -> Stage:
    from adapter.stages.transcode import TranscodeStage

    return TranscodeStage.from_config(name, cfg, context)


_FACTORIES: dict[type[Any], Callable[[str, Any, StageContext], Stage]] = {
    DeidentifyStageConfig: _deidentify,
    TranscodeStageConfig: _transcode,
}


def build_stage(name: str, config: StageConfig, context: StageContext) -> Stage:
    """The stage for one configured ``stages:`` entry."""
    return _FACTORIES[type(config)](name, config, context)
