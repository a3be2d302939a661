"""The import plugin's entry point: config model and the services it runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from pynetdicom import evt
from pynetdicom.events import EventType
from pynetdicom.presentation import PresentationContext

from adapter import metrics
from adapter.config import CoreConfig
from adapter.deadletter import DeadLetter, DeadLetterQueue
from adapter.destinations import (
    DeliveryConfig,
    DestinationConfig,
    DicomwebDestination,
    echo_aets,
)
from adapter.dicomweb.qido import QidoClient
from adapter.dicomweb.wado import WadoClient
from adapter.dimse.contexts import (
    query_retrieve_contexts,
    storage_commitment_context,
    storage_contexts,
)
from adapter.dimse.server import DimseServer, Handler
from adapter.pipeline.build import build_pipeline, check_routing, outbox_path
from adapter.pipeline.pipeline import RoutingService
from adapter.pipeline.router import Router
from adapter.plugin import PluginContext
from adapter.provenance import ProvenanceLog
from adapter.service import Service
from adapter.spool import Spool, SpoolBudget, adopt_into_spool
from adapter.spool_backup import GcsSpoolBackup, entry_ids_in
from adapter.spool_pool import FilePool
from importer.commitment import StorageCommitmentScp
from importer.config import STORE_DESTINATION, ImporterConfig
from importer.find_scp import FindScp
from importer.retrieve_scp import RetrieveScp
from importer.store_scp import StoreScp


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
    retrieve = RetrieveScp(
        qido,
        WadoClient(session, url),
        destinations,
        retrieve_dir,
        move_calling_ae=config.query.move_calling_ae_title,
    )
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


def spool_backup(config: ImporterConfig) -> GcsSpoolBackup | None:
    """The spool's Cloud Storage copy, when ``importer.spool.backup`` is set."""
    cfg = config.spool.backup
    if cfg is None:
        return None
    return GcsSpoolBackup.create(cfg.bucket, cfg.prefix, cfg.project, timeout=cfg.timeout)


def upload_workers(config: ImporterConfig, pool_size: int) -> int:
    """STOW-RS workers of the store. With ``ack: after-upload`` every waiting association
    needs its request in flight at once (one round trip for all of them, not one each behind
    a busy worker): at least one per pooled connection (``dicomweb.pool_size``, 16); lower
    the pool size to cap the requests. Batches still form while all of them are busy."""
    workers = config.upload.workers
    if config.ack == "after-upload":
        workers = max(workers, pool_size)
    return workers


def restore_backup(config: ImporterConfig) -> GcsSpoolBackup | None:
    """Before the spool opens: bring back what the bucket holds and no outbox does (a pod
    that lost its disk gets everything back; one that kept it gets no second copy)."""
    backup = spool_backup(config)
    if backup is not None:
        backup.restore(config.spool.path / "ready", known=entry_ids_in(config.outbox_dir))
    return backup


class ImporterPlugin:
    """PACS -> DICOMweb: a DIMSE SCP whose C-STOREs are spooled and uploaded by STOW-RS; it
    also answers C-FIND/C-MOVE/C-GET and storage commitment from the store."""

    name: ClassVar[str] = "importer"
    config_model: ClassVar[type[ImporterConfig]] = ImporterConfig

    def check(self, core: CoreConfig, config: ImporterConfig) -> list[str]:
        if core.dicomweb is None:
            return ["dicomweb: required key is missing (the store the importer uploads to)"]
        return check_routing(
            config.routing, list(self.destinations(core, config)), stages=list(core.stages)
        )

    @staticmethod
    def destinations(core: CoreConfig, config: ImporterConfig) -> dict[str, DestinationConfig]:
        """The site's destinations plus ``store``: the top-level dicomweb, delivered with the
        ``importer.upload`` settings (a site destination named ``store`` replaces it)."""
        found: dict[str, DestinationConfig] = {}
        if core.dicomweb is not None:
            web, up = core.dicomweb, config.upload
            found[STORE_DESTINATION] = DicomwebDestination(
                **{k: getattr(web, k) for k in type(web).model_fields},
                on_conflict=up.on_conflict,
                delivery=DeliveryConfig(
                    workers=upload_workers(config, web.pool_size),
                    batch_max_instances=up.batch_max_instances,
                    batch_max_bytes=up.batch_max_bytes,
                    # every after-upload sender waits: lingering only adds latency (batches
                    # still form by themselves while the workers are busy)
                    batch_linger=0.0 if config.ack == "after-upload" else up.batch_linger,
                ),
            )
        return {**found, **core.destinations}

    def router(self, core: CoreConfig, config: ImporterConfig) -> Router:
        """The rules as the running importer applies them (``dicom-adapter route``)."""
        destinations = self.destinations(core, config)
        return Router(
            config.routing,
            [STORE_DESTINATION],
            {name: echo_aets(cfg) for name, cfg in destinations.items()},
        )

    def build(self, context: PluginContext, config: ImporterConfig) -> Sequence[Service]:
        """Delivery first, listener last: stopped in reverse, the listener closes before the
        commitment reports, the routing and the deliveries drain."""
        core = context.core
        assert core.dicomweb is not None  # check() made sure
        backup = restore_backup(config)
        pool = None if config.dimse.processes > 1 else FilePool(config.spool.path / "free")
        budget = SpoolBudget(
            int(config.spool.max_bytes), on_released=backup.release if backup else None, pool=pool
        )
        dead_letters = self.dead_letters(core, config)
        spool = Spool(
            config.spool.path,
            max_bytes=budget.max_bytes,
            min_free_bytes=int(config.spool.min_free_bytes),
            dead_letters=dead_letters,
            budget=budget,
            backup=backup,
        )
        first: list[Service] = [backup] if backup else []  # stopped last: the deletes
        provenance = ProvenanceLog(core.state_dir / "provenance.sqlite")
        built = build_pipeline(
            self.name,
            context,
            routing=config.routing,
            destinations=self.destinations(core, config),
            default=[STORE_DESTINATION],
            outbox_root=config.outbox_dir,
            work_dir=config.spool.path / "work",
            budget=budget,
            dead_letters=dead_letters,
            min_free_bytes=int(config.spool.min_free_bytes),
            provenance=provenance,
            stages=context.core.stages,
            state_dir=context.core.state_dir,
        )
        routing = RoutingService(spool, built.pipeline, context.retry_policy(), on_stop=built.close)
        metrics.set_spool_depth_callback(lambda: spool.depth() + built.depth())
        metrics.set_spool_bytes_callback(lambda: spool.bytes_used)
        metrics.set_spool_oldest_age_callback(lambda: max(spool.oldest_age(), built.oldest_age()))

        def is_pending(sop_instance_uid: str) -> bool:
            """Still on its way to the store (storage commitment waits for it)."""
            return spool.holds(sop_instance_uid) or any(
                d.outbox.holds(sop_instance_uid) for d in built.deliveries
            )

        if config.dimse.processes > 1:  # receiving child processes own the listener
            from importer.receivers import ReceiverPool

            return [*first, *built.deliveries, routing, ReceiverPool(context.core, config, spool)]
        store = StoreScp(spool, provenance, ack=config.ack, upload_timeout=config.upload_timeout)
        handlers, commitment = dimse_handlers(context, config, is_pending)
        server = DimseServer(
            config.dimse,
            [*store.handlers(), *handlers],
            importer_contexts(),
            receive_dir=spool.incoming_dir,
            require_called_aet=config.dimse.check_called_aet,
            storage_handler=store,
        )
        return [*first, *built.deliveries, routing, _CommitmentReports(commitment), server]

    def dead_letters(self, core: CoreConfig, config: ImporterConfig) -> DeadLetterQueue:
        """Dead letters whose retry moves the file back into the outbox of the destination
        that refused it (or into the spool, to be routed again); the running importer picks
        it up at its next rescan."""
        spool_path = config.spool.path

        def requeue(entry: DeadLetter, payload: Path | None) -> None:
            if payload is None:
                raise RuntimeError(f"dead letter {entry.id} has no instance file to retry")
            if entry.destination:
                adopt_into_spool(outbox_path(config.outbox_dir, entry.destination), payload)
            else:
                adopt_into_spool(spool_path, payload)

        return DeadLetterQueue(config.dead_letter_dir, self.name, requeue=requeue)
