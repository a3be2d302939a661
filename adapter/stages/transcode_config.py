"""Config model of the transcoding stage (PS3.5 Section 8, Annex A)."""

from __future__ import annotations

from typing import Literal

from adapter.config_types import ConfigModel

__all__ = ["TranscodeStageConfig"]


class TranscodeStageConfig(ConfigModel):
    """Re-encode each instance in another transfer syntax (lossless unless said otherwise)."""

    kind: Literal["transcode"] = "transcode"
    transfer_syntax: str = "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
