"""Config models of the destination kinds, one per kind, joined in a discriminated union on
``kind`` (the registry pairs each with its handler)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import ByteSize, Field

from adapter.config_types import (
    AeTitle,
    ConfigModel,
    DicomwebConfig,
    Port,
    RetryConfig,
)

__all__ = [
    "DeliveryConfig",
    "DestinationConfig",
    "DicomwebDestination",
    "DimseDestination",
    "FolderDestination",
    "GcsDestination",
]


class DeliveryConfig(ConfigModel):
    """How one destination's outbox is drained: workers and batches (unset: the kind's
    default: STOW-RS 4 workers and 20 per request, C-STORE one worker per association)."""

    workers: int | None = Field(None, ge=1, le=64)
    batch_max_instances: int | None = Field(None, ge=1, le=1000)
    batch_max_bytes: ByteSize = ByteSize(64 * 1024**2)
    batch_linger: float = Field(0.05, ge=0, le=10)  # seconds to wait for batch-mates


class _DestinationBase(ConfigModel):
    delivery: DeliveryConfig = DeliveryConfig()
    #: This destination's own backoff (unset: the site's ``retry``).
    retry: RetryConfig | None = None


class DimseDestination(_DestinationBase):
    """A PACS reached by C-STORE (PS3.4 Annex B)."""

    kind: Literal["dimse"] = "dimse"
    ae_title: AeTitle
    host: str
    port: Port
    calling_ae_title: AeTitle = "EXPORTADAPTER"
    pool_size: int = Field(4, ge=1, le=64)  # associations kept open to this PACS
    acse_timeout: float = Field(30.0, gt=0)
    dimse_timeout: float = Field(120.0, gt=0)
    network_timeout: float = Field(120.0, gt=0)
    idle_timeout: float = Field(20.0, gt=0)  # release a kept-open association idle this long
    #: AE titles this PACS sends from (its ae_title is always one): instances received from
    #: them are never sent back to it (two-way sync).
    echo_aets: tuple[AeTitle, ...] = ()


class DicomwebDestination(_DestinationBase, DicomwebConfig):
    """A DICOMweb store reached by STOW-RS (PS3.18 10.5): the service's own keys
    (:class:`~adapter.config_types.DicomwebConfig`) plus delivery, retry and conflict policy."""

    kind: Literal["dicomweb"] = "dicomweb"
    #: What a 409 / FailureReason 0x0111 "already exists" means: delivered, or delete and store.
    on_conflict: Literal["done", "overwrite"] = "done"

    def as_dicomweb(self) -> DicomwebConfig:
        """The service alone (its pooled session is keyed by URL)."""
        return DicomwebConfig(**{k: getattr(self, k) for k in DicomwebConfig.model_fields})


class GcsDestination(_DestinationBase):
    """A Cloud Storage bucket: one object per instance,
    ``<prefix>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``."""

    kind: Literal["gcs"] = "gcs"
    bucket: str = Field(min_length=3, max_length=222, pattern=r"^[a-z0-9][a-z0-9._-]+[a-z0-9]$")
    prefix: str = ""
    project: str | None = None
    timeout: float = Field(60.0, gt=0)


class FolderDestination(_DestinationBase):
    """A local (or mounted) folder: ``<path>/<StudyInstanceUID>/<SeriesInstanceUID>/
    <SOPInstanceUID>.dcm``, written whole then renamed in, fsynced."""

    kind: Literal["folder"] = "folder"
    path: Path


DestinationConfig = Annotated[
    DimseDestination | DicomwebDestination | GcsDestination | FolderDestination,
    Field(discriminator="kind"),
]
