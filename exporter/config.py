"""The ``exporter:`` section of the site YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import ByteSize, Field, model_validator
from pydantic_core import PydanticCustomError

from adapter.config import AeTitle, ConfigModel, DicomwebConfig
from adapter.destinations.config import DicomwebDestination, DimseDestination
from adapter.pipeline.rules import RoutingConfig
from exporter.notification import SourceUrlKind

__all__ = [
    "PEER_DESTINATION",
    "DicomwebDestination",
    "DimseDestination",
    "EchoGuardConfig",
    "ExporterConfig",
    "FilterConfig",
    "PubSubConfig",
]


#: The destination name of ``exporter.destination`` (the Java adapter's ``--peer_*`` flags).
PEER_DESTINATION = "peer"


class PubSubConfig(ConfigModel):
    """The subscription the DICOM store's notifications arrive on, and flow control."""

    project: str
    subscription: str
    max_outstanding_messages: int = Field(64, ge=1)
    max_outstanding_bytes: int = Field(64 * 1024**2, ge=1024)
    #: Fetch attempts of one message before a dead letter (local record); 0 = no count limit:
    #: the budget is ``retry.max_elapsed`` seconds (default a day, 0 = forever).
    max_delivery_attempts: int = Field(0, ge=0)
    dead_letter_topic: str | None = None
    emulator_host: str | None = None  # host:port of the Pub/Sub emulator (= PUBSUB_EMULATOR_HOST)


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
    #: The one destination of a plain export (named ``peer`` in rules and metrics); with
    #: ``routing``, rules may also name the site's ``destinations``.
    destination: (
        Annotated[DimseDestination | DicomwebDestination, Field(discriminator="kind")] | None
    ) = None
    routing: RoutingConfig = RoutingConfig()
    #: Disk the outboxes may take (instances waiting for a destination that is down).
    outbox_max_bytes: ByteSize = ByteSize(10 * 1024**3)
    # How source (or dicomweb) url relates to notification paths: see exporter.notification.
    source_url_kind: SourceUrlKind = "auto"
    filters: FilterConfig = FilterConfig()
    echo_guard: EchoGuardConfig = EchoGuardConfig()
    state_dir: Path = Path("/var/lib/dicom-adapter/export")
    #: Messages handled at once (each: WADO-RS fetch, then C-STORE on a pooled association);
    #: more than destination.pool_size so that fetches overlap the stores.
    workers: int = Field(16, ge=1, le=128)

    @model_validator(mode="after")
    def _somewhere_to_go(self) -> ExporterConfig:
        if self.destination is None and not self.routing.destination_names():
            raise PydanticCustomError(
                "destination",
                "exporter needs a destination (or routing rules naming destinations)",
            )
        return self

    @property
    def outbox_dir(self) -> Path:
        """One outbox per destination (beside tmp/: hard links need one filesystem)."""
        return self.state_dir / "outbox"
