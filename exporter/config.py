"""The ``exporter:`` section of the site YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from adapter.config import AeTitle, AuthConfig, ConfigModel, DicomwebConfig, Port

__all__ = [
    "DicomwebDestination",
    "DimseDestination",
    "ExporterConfig",
    "FilterConfig",
    "PubSubConfig",
]


class PubSubConfig(ConfigModel):
    """The subscription the DICOM store's notifications arrive on, and flow control."""

    project: str
    subscription: str
    max_outstanding_messages: int = Field(64, ge=1)
    max_outstanding_bytes: int = Field(64 * 1024**2, ge=1024)
    max_delivery_attempts: int = Field(10, ge=1)  # then dead letter (local record)
    dead_letter_topic: str | None = None


class DimseDestination(ConfigModel):
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


class DicomwebDestination(ConfigModel):
    """Another DICOMweb store reached by STOW-RS (PS3.18 10.5)."""

    kind: Literal["dicomweb"] = "dicomweb"
    url: str
    auth: AuthConfig = AuthConfig()
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(300.0, gt=0)

    def as_dicomweb(self) -> DicomwebConfig:
        return DicomwebConfig(
            url=self.url, auth=self.auth,
            connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
        )


class FilterConfig(ConfigModel):
    """Which notifications to export; all listed conditions must hold (empty = any)."""

    actions: tuple[str, ...] = ("create", "store", "stored", "created")
    modalities: tuple[str, ...] = ()
    store_names: tuple[str, ...] = ()
    attributes: dict[str, str] = Field(default_factory=dict)


class ExporterConfig(ConfigModel):
    """DICOMweb -> PACS, driven by Pub/Sub notifications."""

    enabled: bool = True
    pubsub: PubSubConfig
    source: DicomwebConfig | None = None  # default: the top-level dicomweb
    destination: Annotated[
        DimseDestination | DicomwebDestination, Field(discriminator="kind")
    ]
    filters: FilterConfig = FilterConfig()
    state_dir: Path = Path("/var/lib/dicom-adapter/export")
    workers: int = Field(8, ge=1, le=128)
