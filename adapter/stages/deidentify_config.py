"""Config model of the de-identification stage (PS3.15 Annex E)."""

from __future__ import annotations

from typing import Literal

from adapter.config_types import ConfigModel

__all__ = ["DeidentifyStageConfig"]


class DeidentifyStageConfig(ConfigModel):
    """De-identify each instance (PS3.15 E.1, Basic Application Level Confidentiality Profile)."""

    kind: Literal["deidentify"] = "deidentify"
