"""The import plugin's entry point: config model and the services it runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from pynetdicom import evt
from pynetdicom.events import EventType
from pynetdicom.presentation import PresentationContext

from adapter.config import CoreConfig
from adapter.deadletter import DeadLetter, DeadLetterQueue
from adapter.dicomweb.qido import QidoClient
from adapter.dicomweb.stow import StowClient
from adapter.dicomweb.wado import WadoClient
from adapter.dimse.contexts import (
    query_retrieve_contexts,
    storage_commitment_context,
    storage_contexts,
)
from adapter.dimse.server import DimseServer, Handler
from adapter.plugin import PluginContext
from adapter.provenance import ProvenanceLog
from adapter.service import Service
from adapter.spool import Spool, adopt_into_spool
from importer.commitment import StorageCommitmentScp
from importer.config import ImporterConfig
from importer.find_scp import FindScp
from importer.retrieve_scp import RetrieveScp
from importer.store_scp import StoreScp
from importer.upload import UploadService


class _CommitmentReports:
    """Storage commitment reports run in background threads: a Service so that shutdown
    lets them finish (PS3.4 J.3.3)."""

    name = "commitment"

    def __init__(self, scp: StorageCommitmentScp) -> None:
        self.scp = scp

    def start(self) -> None:
        pass

    def stop(self, timeout: float) -> None:
        self.scp.stop(timeout)

    def readiness(self) -> dict[str, bool]:
        return {}


def importer_contexts() -> list[PresentationContext]:
    """Storage (both roles), query/retrieve and storage commitment."""
    return [
        *storage_contexts(both_roles=True),
        *query_retrieve_contexts(),
        storage_commitment_context(),
    ]


def dimse_handlers(
    context: PluginContext, config: ImporterConfig, is_pending: Callable[[str], bool]
) -> tuple[list[tuple[EventType, Handler]], StorageCommitmentScp]:
    """The C-FIND/C-MOVE/C-GET/N-ACTION handlers (all from the store) and the commitment SCP
    whose reports must be let finish at shutdown; ``is_pending``: the spool still holds it."""
    core = context.core
    assert core.dicomweb is not None  # check() made sure
    url = core.dicomweb.url
    session = context.dicomweb_session(core.dicomweb)
    qido = QidoClient(
        session, url, page_size=config.query.page_size, max_results=config.query.max_results
    )
    destinations = {d.name: d for d in config.move_destinations}
    retrieve_dir = config.spool.path / "retrieve"  # WADO-RS downloads, one at a time
    retrieve_dir.mkdir(parents=True, exist_ok=True)
    retrieve = RetrieveScp(qido, WadoClient(session, url), destinations, retrieve_dir)
    commitment = StorageCommitmentScp(
        qido,
        destinations,
        config.dimse.ae_title,
        wait_for_upload=config.query.commitment_wait,
        is_pending=is_pending,
        report_attempts=config.query.commitment_report_attempts,
        report_delay=config.query.commitment_report_delay,
    )
    find_qido = QidoClient(
        session,
        url,
        page_size=config.query.page_size,
        max_results=config.query.max_results,
        fuzzy_matching=config.query.fuzzy_matching,
    )
    handlers: list[tuple[EventType, Handler]] = [
        (evt.EVT_C_FIND, FindScp(find_qido, config.query.return_keys).on_c_find),
        (evt.EVT_C_MOVE, retrieve.on_c_move),
        (evt.EVT_C_GET, retrieve.on_c_get),
        (evt.EVT_N_ACTION, commitment.on_n_action),
    ]
    return handlers, commitment


class ImporterPlugin:
    """PACS -> DICOMweb: a DIMSE SCP whose C-STOREs are spooled and uploaded by STOW-RS; it
    also answers C-FIND/C-MOVE/C-GET and storage commitment from the store."""

    name: ClassVar[str] = "importer"
    config_model: ClassVar[type[ImporterConfig]] = ImporterConfig

    def check(self, core: CoreConfig, config: ImporterConfig) -> list[str]:
        if core.dicomweb is None:
            return ["dicomweb: required key is missing (the store the importer uploads to)"]
        return []

    def build(self, context: PluginContext, config: ImporterConfig) -> Sequence[Service]:
        """Workers first, listener last: stopped in reverse, the listener closes before the
        commitment reports and the upload workers drain."""
        core = context.core
        assert core.dicomweb is not None  # check() made sure
        url = core.dicomweb.url
        session = context.dicomweb_session(core.dicomweb)
        spool = Spool(
            config.spool.path,
            max_bytes=int(config.spool.max_bytes),
            min_free_bytes=int(config.spool.min_free_bytes),
            dead_letters=self.dead_letters(core, config),
        )
        upload = UploadService(
            spool,
            StowClient(session, url),
            context.retry_policy(),
            config.upload,
            owns_spool=True,
            linger=0.0 if config.ack == "after-upload" else None,
        )
        if config.dimse.processes > 1:  # receiving child processes own the listener
            from importer.receivers import ReceiverPool

            return [upload, ReceiverPool(context.core, config, spool)]
        store = StoreScp(
            spool,
            ProvenanceLog(core.state_dir / "provenance.sqlite"),
            ack=config.ack,
            upload_timeout=config.dimse.dimse_timeout,
        )
        handlers, commitment = dimse_handlers(context, config, spool.holds)
        server = DimseServer(
            config.dimse,
            [*store.handlers(), *handlers],
            importer_contexts(),
            receive_dir=spool.incoming_dir,
            require_called_aet=config.dimse.check_called_aet,
            storage_handler=store,
        )
        return [upload, _CommitmentReports(commitment), server]

    def dead_letters(self, core: CoreConfig, config: ImporterConfig) -> DeadLetterQueue | None:
        """Dead letters whose retry moves the file back into the spool (picked up by the
        running importer at its next rescan)."""
        spool_path = config.spool.path

        def requeue(entry: DeadLetter, payload: Path | None) -> None:
            if payload is None:
                raise RuntimeError(f"dead letter {entry.id} has no instance file to retry")
            adopt_into_spool(spool_path, payload)

        return DeadLetterQueue(config.dead_letter_dir, self.name, requeue=requeue)
