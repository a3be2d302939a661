"""Config model of the transcoding stage (PS3.5 Section 8, Annex A)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adapter.config_types import ConfigModel

__all__ = ["LOSSLESS_TARGETS", "LOSSY_TARGETS", "TARGETS", "TranscodeStageConfig"]

#: Lossless targets (PS3.5 A.4.4, A.4.3, A.4.2, A.2, A.5).
LOSSLESS_TARGETS: dict[str, str] = {
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
}
#: Lossy targets: only with ``lossy`` set (PS3.5 A.4.4 JPEG 2000, A.4.3 JPEG-LS near-lossless).
LOSSY_TARGETS: dict[str, str] = {
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
}
TARGETS = {**LOSSLESS_TARGETS, **LOSSY_TARGETS}


class LossyOptions(ConfigModel):
    """Asking for lossy compression: JPEG 2000 by ratio or PSNR, JPEG-LS by its NEAR error."""

    #: JPEG 2000 (.4.91): compression ratio of the single quality layer (e.g. 10 for 10:1).
    compression_ratio: float | None = Field(None, gt=1)
    #: JPEG 2000 (.4.91): peak signal-to-noise ratio in dB, instead of a ratio.
    psnr: float | None = Field(None, gt=0)
    #: JPEG-LS near-lossless (.4.81): the largest difference per sample (NEAR, 1-255).
    near_lossless_error: int | None = Field(None, ge=1, le=255)
    #: PS3.3 C.12.1.1.1: a lossy copy is a new instance; False keeps the SOP Instance UID.
    new_instance_uid: bool = True


class TranscodeStageConfig(ConfigModel):
    """Re-encode each instance in another transfer syntax (lossless unless ``lossy`` is set)."""

    kind: Literal["transcode"] = "transcode"
    transfer_syntax: str = "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    #: Colour JPEG 2000: the reversible colour transform (PS3.5 8.2.4, Photometric YBR_RCT; YBR_ICT
    #: for lossy); False keeps RGB.
    colour_transform: bool = True
    #: Lossy compression; only with a lossy ``transfer_syntax`` (.4.91 or .4.81).
    lossy: LossyOptions | None = None
    #: An instance the target cannot hold (float pixels, 1 bit, 32-bit JPEG-LS...): keep it as it
    #: came ("keep", logged and counted) or refuse it ("reject", dead-lettered).
    on_unsupported: Literal["keep", "reject"] = "keep"
    #: Worker processes that run the codecs (shared by every transcode stage and the DIMSE
    #: export conversion of the process); 0: one per CPU, at most 4.
    workers: int = Field(0, ge=0, le=64)

    @model_validator(mode="after")
    def _check(self) -> TranscodeStageConfig:
        ts = self.transfer_syntax
        if ts not in TARGETS:
            have = ", ".join(f"{uid} ({name})" for uid, name in TARGETS.items())
            raise ValueError(f"transfer_syntax: {ts!r} is not a target (have: {have})")
        if ts in LOSSY_TARGETS:
            lossy = self.lossy
            if lossy is None:
                raise ValueError(
                    f"transfer_syntax: {ts} ({TARGETS[ts]}) is lossy: set 'lossy' to ask for it"
                )
            if ts.endswith(".91") and (lossy.compression_ratio is None) == (lossy.psnr is None):
                raise ValueError("lossy: JPEG 2000 needs one of compression_ratio or psnr")
            if ts.endswith(".81") and lossy.near_lossless_error is None:
                raise ValueError("lossy: JPEG-LS near-lossless needs near_lossless_error")
        elif self.lossy is not None:
            raise ValueError(f"lossy: {ts} ({TARGETS[ts]}) is lossless; use .4.91 or .4.81")
        return self
