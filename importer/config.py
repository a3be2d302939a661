"""The ``importer:`` section of the site YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, model_validator
from pydantic_core import PydanticCustomError

from adapter.config import AeTitle, ConfigModel, DimseServerConfig, Port
from adapter.pipeline.rules import RoutingConfig

__all__ = [
    "STORE_DESTINATION",
    "ImporterConfig",
    "MoveDestination",
    "QueryConfig",
    "SpoolBackupConfig",
    "SpoolConfig",
    "UploadConfig",
]

#: The destination name of the top-level ``dicomweb`` store, the importer's default route.
STORE_DESTINATION = "store"


class SpoolBackupConfig(ConfigModel):
    """A Cloud Storage copy of the spool (pods without a persistent volume): each instance is
    in ``gs://bucket/prefix/`` before its C-STORE is answered, and comes back after a restart."""

    bucket: str = Field(min_length=3, max_length=222, pattern=r"^[a-z0-9][a-z0-9._-]+[a-z0-9]$")
    prefix: str = ""
    project: str | None = None
    timeout: float = Field(60.0, gt=0)


class SpoolConfig(ConfigModel):
    """Where received instances wait, durably, for upload; and how much disk they may take."""

    path: Path = Path("/var/lib/dicom-adapter/spool")
    max_bytes: ByteSize = ByteSize(10 * 1024**3)
    min_free_bytes: ByteSize = ByteSize(1024**3)
    backup: SpoolBackupConfig | None = None


class UploadConfig(ConfigModel):
    """Delivery to the ``store`` destination (the top-level ``dicomweb``) by STOW-RS:
    concurrency, batch bounds, and what a 409 'already exists' means."""

    workers: int = Field(4, ge=1, le=64)
    batch_max_instances: int = Field(20, ge=1, le=1000)
    batch_max_bytes: ByteSize = ByteSize(64 * 1024**2)
    batch_linger: float = Field(0.05, ge=0, le=10)  # seconds to wait for batch-mates
    on_conflict: Literal["done", "overwrite"] = "done"


class QueryConfig(ConfigModel):
    """C-FIND / C-MOVE / C-GET from the store: QIDO-RS paging, never truncated silently."""

    page_size: int = Field(1000, ge=1, le=100000)
    max_results: int | None = Field(None, ge=1)  # over it: a clear failure, not a cut list
    commitment_wait: float = Field(600.0, ge=0)  # storage commitment: wait for the spool
    #: Calling AE title of the associations that carry C-MOVE sub-operations to the move
    #: destination (unset: ``importer.dimse.ae_title``); the Java ``--dimse_cmove_aet``.
    move_calling_ae_title: AeTitle | None = None
    #: Storage commitment N-EVENT-REPORT: attempts, on a new association each, and the first
    #: wait between them (doubled each time, at most 5 min) when the requester does not take it.
    commitment_report_attempts: int = Field(6, ge=1, le=100)
    commitment_report_delay: float = Field(2.0, ge=0)
    #: C-FIND answers hold the request's keys (PS3.4 C.4.1.1.3.2), or every attribute the
    #: store's QIDO-RS result held, as the Java adapter answered ("store"; legacy flags).
    return_keys: Literal["requested", "store"] = "requested"
    #: Ask QIDO-RS for fuzzy person-name matching (``fuzzymatching=true``, PS3.18 8.3.4.5).
    fuzzy_matching: bool = False


class MoveDestination(ConfigModel):
    """A C-MOVE destination AE (the Java adapter's ``--aet_dictionary`` entry)."""

    name: AeTitle
    host: str
    port: Port


class ImporterConfig(ConfigModel):
    """PACS -> DICOMweb: the DIMSE listener, when to answer, the spool and the uploader."""

    enabled: bool = True
    dimse: DimseServerConfig = DimseServerConfig()
    #: after-spool: answer once the instance is durable here; after-upload: once every
    #: destination it is routed to accepted it (or 0xA700 after ``upload_timeout``).
    ack: Literal["after-spool", "after-upload"] = "after-spool"
    upload_timeout: float = Field(20.0, gt=0, le=3600)
    spool: SpoolConfig = SpoolConfig()
    upload: UploadConfig = UploadConfig()
    dead_letter_path: Path | None = None  # default: <spool.path>/../deadletter
    move_destinations: tuple[MoveDestination, ...] = ()  # C-MOVE destinations by AE title
    query: QueryConfig = QueryConfig()
    #: Where received instances go: rules over the header and the calling/called AE, naming
    #: top-level ``destinations`` (or ``store``, the top-level ``dicomweb``, the default).
    routing: RoutingConfig = RoutingConfig()

    @model_validator(mode="after")
    def _receivers(self) -> ImporterConfig:
        if self.dimse.processes > 1 and self.ack != "after-spool":
            raise PydanticCustomError(
                "processes",
                "importer.dimse.processes > 1 needs ack: after-spool (the receiving processes "
                "cannot wait for the uploader)",
            )
        if self.dimse.processes > 1 and self.dimse.port == 0:
            raise PydanticCustomError(
                "processes", "importer.dimse.processes > 1 needs a fixed importer.dimse.port"
            )
        return self

    @property
    def dead_letter_dir(self) -> Path:
        return self.dead_letter_path or self.spool.path.parent / "deadletter"

    @property
    def outbox_dir(self) -> Path:
        """One outbox per destination, beside the spool (hard links need one filesystem)."""
        return self.spool.path / "outbox"
