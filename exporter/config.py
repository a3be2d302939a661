"""The ``exporter:`` section of the site YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from adapter.config import AeTitle, AuthConfig, ConfigModel, DicomwebConfig, Port
from exporter.notification import SourceUrlKind

__all__ = [
    "DicomwebDestination",
    "DimseDestination",
    "EchoGuardConfig",
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
    emulator_host: str | None = None  # host:port of the Pub/Sub emulator (= PUBSUB_EMULATOR_HOST)


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
    idle_timeout: float = Field(20.0, gt=0)  # release a kept-open association idle this long


class DicomwebDestination(ConfigModel):
    """Another DICOMweb store reached by STOW-RS (PS3.18 10.5)."""

    kind: Literal["dicomweb"] = "dicomweb"
    url: str
    auth: AuthConfig = AuthConfig()
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(300.0, gt=0)

    def as_dicomweb(self) -> DicomwebConfig:
        return DicomwebConfig(
            url=self.url,
            auth=self.auth,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )


class FilterConfig(ConfigModel):
    """Which notifications to export; all listed conditions must hold (empty = any)."""

    # Matched case-insensitively; a message without ``action`` passes; deletions never do.
    # StoreInstances / ImportDicomData: the Cloud Healthcare API's names.
    actions: tuple[str, ...] = (
        "create",
        "store",
        "stored",
        "created",
        "StoreInstances",
        "ImportDicomData",
    )
    modalities: tuple[str, ...] = ()
    store_names: tuple[str, ...] = ()
    # DICOM keywords (e.g. InstitutionName) match the instance's header, other keys the message
    # attributes; values are shell-style patterns.
    attributes: dict[str, str] = Field(default_factory=dict)


class EchoGuardConfig(ConfigModel):
    """Skip instances that the importer received from the destination (two-way sync)."""

    enabled: bool = True
    # AE titles the PACS calls us from; a DIMSE destination's ae_title is always included.
    source_aets: tuple[AeTitle, ...] = ()


class ExporterConfig(ConfigModel):
    """DICOMweb -> PACS, driven by Pub/Sub notifications."""

    enabled: bool = True
    pubsub: PubSubConfig
    source: DicomwebConfig | None = None  # default: the top-level dicomweb
    destination: Annotated[DimseDestination | DicomwebDestination, Field(discriminator="kind")]
    # How source (or dicomweb) url relates to notification paths: see exporter.notification.
    source_url_kind: SourceUrlKind = "auto"
    filters: FilterConfig = FilterConfig()
    echo_guard: EchoGuardConfig = EchoGuardConfig()
    state_dir: Path = Path("/var/lib/dicom-adapter/export")
    #: Messages handled at once (each: WADO-RS fetch, then C-STORE on a pooled association);
    #: more than destination.pool_size so that fetches overlap the stores.
    workers: int = Field(16, ge=1, le=128)
