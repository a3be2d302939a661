"""Config models of the stage kinds, joined in a discriminated union on ``kind`` (the registry
in :mod:`adapter.stages` pairs each with the stage that runs it)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from adapter.stages.deidentify_config import DeidentifyStageConfig
from adapter.stages.transcode_config import TranscodeStageConfig

__all__ = ["DeidentifyStageConfig", "StageConfig", "TranscodeStageConfig"]

StageConfig = Annotated[DeidentifyStageConfig | TranscodeStageConfig, Field(discriminator="kind")]
