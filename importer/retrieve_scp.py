"""C-MOVE and C-GET SCPs (PS3.4 C.4.2, C.4.3): QIDO-RS finds the instances, WADO-RS fetches each
to a temporary file, and pynetdicom C-STOREs the file (to the move destination over a new
association, or back over the same association for C-GET).

One instance is on disk at a time. An instance that cannot be fetched is a failed sub-operation
and the retrieve goes on; pynetdicom keeps the counts, sends Pending responses with them and the
final status (0x0000, 0xB000 with the Failed SOP Instance UID List, 0xA702 when all failed) and
honours C-CANCEL (0xFE00), PS3.4 C.4.2.1.5, C.4.3.1.4.
Move destinations come from ``importer.move_destinations`` (the Java ``--aet_dictionary``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pynetdicom import build_context
from pynetdicom.presentation import PresentationContext

from adapter import metrics
from adapter.dicomweb.json_model import get_str
from adapter.dicomweb.qido import QidoClient
from adapter.dicomweb.wado import WadoClient
from adapter.dimse.contexts import COMPRESSED_TRANSFER_SYNTAXES, UNCOMPRESSED_TRANSFER_SYNTAXES
from adapter.errors import AdapterError, PermanentError, TransientError
from adapter.status import Status
from importer.config import MoveDestination
from importer.query_mapping import QidoQuery, identifier_to_query

__all__ = ["RetrieveScp"]

log = logging.getLogger(__name__)

_STUDY, _SERIES, _SOP, _SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: at most 128 presentation contexts per association
Instance = tuple[str, str, str, str]  # study, series, SOP instance, SOP class UIDs


class FailedSubOperation(Dataset):
    """Stands for an instance that could not be fetched from the store: yielded as Pending,
    pynetdicom's C-STORE of it fails before anything is sent (no SOP Class UID), so the
    sub-operation is counted as failed, its SOP Instance UID goes into the Failed SOP Instance
    UID List (PS3.4 C.4.2.1.5, C.4.3.1.4) and the retrieve goes on with the next instance."""

    def __init__(self, sop_instance_uid: str) -> None:
        super().__init__()
        self.SOPInstanceUID = sop_instance_uid


def _failure(status: Status, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = int(status)
    ds.ErrorComment = comment[:64]
    return ds


class RetrieveScp:
    """Handles EVT_C_MOVE and EVT_C_GET from the DICOMweb store."""

    def __init__(
        self,
        qido: QidoClient,
        wado: WadoClient,
        destinations: Mapping[str, MoveDestination],
        tmp_dir: Path,
        move_calling_ae: str | None = None,
    ) -> None:
        self.qido = qido
        self.wado = wado
        self.destinations = dict(destinations)
        self.tmp_dir = tmp_dir
        self.move_calling_ae = move_calling_ae  # unset: the listener's own AE title

    def _instances(self, query: QidoQuery) -> list[Instance]:
        """(study, series, instance) UIDs of every instance the identifier selects."""
        match = dict(query.store_match)
        if query.level == "IMAGE" and "SOPInstanceUID" in match:
            wanted: set[str] | None = set(match.pop("SOPInstanceUID").split("\\"))
        else:
            wanted = None
        if query.level in ("PATIENT", "STUDY"):
            # Studies first (their matching keys are study-level), then their instances.
            studies = self.qido.search_for_studies(match)
            uids = [get_str(s, _STUDY) for s in studies if query.accepts(s)]
            results = [i for uid in uids if uid for i in self.qido.search_for_instances(uid)]
        else:
            results = list(
                self.qido.search_for_instances(
                    query.study_instance_uid,
                    query.series_instance_uid,
                    match if query.level == "IMAGE" else {},
                )
                if query.level == "IMAGE"
                else self._series_instances(query, match)
            )
        found = []
        for r in results:
            ids = (get_str(r, _STUDY), get_str(r, _SERIES), get_str(r, _SOP))
            if all(ids) and (wanted is None or ids[2] in wanted):
                sop_class = get_str(r, _SOP_CLASS) or ""
                found.append((str(ids[0]), str(ids[1]), str(ids[2]), sop_class))
        return found

    def _series_instances(self, query: QidoQuery, match: dict[str, str]) -> Iterator[Any]:
        for series in self.qido.search_for_series(query.study_instance_uid, match):
            study, uid = (
                get_str(series, _STUDY) or query.study_instance_uid,
                get_str(series, _SERIES),
            )
            if study and uid:
                yield from self.qido.search_for_instances(study, uid)

    def _fetched(
        self,
        instances: list[Instance],
        service: str,
        event: Any,
        accepted: set[tuple[str, str]] | None = None,
    ) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """Yield (Pending, dataset) per instance, fetched one at a time to disk; an instance
        that cannot be fetched is a failed sub-operation, never the end of the retrieve.

        pynetdicom 3 sends sub-operations from a Dataset, so one instance at a time is held in
        memory. With ``accepted`` (C-GET: the requestor's (SOP class, syntax) pairs) a compressed
        instance the requestor cannot take is decompressed first.
        """
        extra = {"calling_ae": event.assoc.requestor.ae_title}

        def is_cancelled() -> bool:
            return bool(getattr(event, "is_cancelled", False))

        workdir = Path(tempfile.mkdtemp(prefix="retrieve-", dir=self.tmp_dir))
        try:
            for study, series, sop, _sop_class in instances:
                if is_cancelled():  # C-CANCEL (PS3.7 9.3.3.3): pynetdicom answers 0xFE00
                    log.info("%s cancelled by the requestor", service, extra=extra)
                    yield Status.CANCEL, None
                    return
                path = workdir / "instance.dcm"
                try:
                    self.wado.retrieve_instance(study, series, sop, path)
                    ds = pydicom.dcmread(path)
                except (AdapterError, OSError, InvalidDicomError) as exc:
                    log.warning(
                        "%s: cannot fetch instance (sub-operation failed): %s",
                        service,
                        exc,
                        extra={"sop_instance_uid": sop, **extra},
                    )
                    path.unlink(missing_ok=True)
                    yield Status.PENDING, FailedSubOperation(sop)
                    continue
                path.unlink(missing_ok=True)
                syntax = str(ds.file_meta.TransferSyntaxUID)
                if (
                    accepted is not None
                    and syntax not in UNCOMPRESSED_TRANSFER_SYNTAXES
                    and ((str(ds.SOPClassUID), syntax) not in accepted)
                ):
                    try:
                        ds.decompress()
                    except Exception as exc:  # no decoder: the sub-operation fails, not all
                        log.warning(
                            "%s: cannot decompress %s: %s",
                            service,
                            syntax,
                            exc,
                            extra={"sop_instance_uid": sop, **extra},
                        )
                yield Status.PENDING, ds
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _prepare(self, event: Any, service: str) -> list[Instance] | Dataset:
        calling_ae = event.assoc.requestor.ae_title
        try:
            query = identifier_to_query(event.identifier)
            return self._instances(query)
        except TransientError as exc:
            log.warning("%s: store unreachable: %s", service, exc, extra={"calling_ae": calling_ae})
            return _failure(Status.REFUSED_OUT_OF_RESOURCES_MATCHES, "DICOMweb store unreachable")
        except (PermanentError, ValueError, TypeError) as exc:
            log.warning("%s refused: %s", service, exc, extra={"calling_ae": calling_ae})
            return _failure(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc))

    def on_c_move(self, event: Any) -> Iterator[Any]:
        """Yield the destination, the sub-operation count, then (status, file) pairs."""
        calling_ae = event.assoc.requestor.ae_title
        move_aet = event.move_destination
        move_aet = (move_aet.decode() if isinstance(move_aet, bytes) else str(move_aet)).strip()
        destination = self.destinations.get(move_aet)
        if destination is None:
            log.warning(
                "C-MOVE: unknown move destination %r",
                move_aet,
                extra={"calling_ae": calling_ae, "status": 0xA801},
            )
            metrics.DIMSE_REQUESTS_TOTAL.labels(service="C-MOVE", status="0xA801").inc()
            yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
            return
        prepared = self._prepare(event, "C-MOVE")
        contexts = _move_contexts(prepared) if isinstance(prepared, list) else []
        yield (
            destination.host,
            destination.port,
            {
                "ae_title": destination.name,
                "contexts": contexts or None,
                # DimseServer's AE takes it for the sub-operations' association
                **({"calling_ae_title": self.move_calling_ae} if self.move_calling_ae else {}),
            },
        )
        if isinstance(prepared, Dataset):
            yield 1  # pynetdicom needs a count before it takes a final failure status
            yield prepared, None
            return
        log.info(
            "C-MOVE of %d instance(s) to %s",
            len(prepared),
            move_aet,
            extra={"calling_ae": calling_ae},
        )
        yield len(prepared)
        yield from self._fetched(prepared, "C-MOVE", event)

    def on_c_get(self, event: Any) -> Iterator[Any]:
        """Yield the sub-operation count, then (status, file) pairs sent on this association."""
        calling_ae = event.assoc.requestor.ae_title
        prepared = self._prepare(event, "C-GET")
        if isinstance(prepared, Dataset):
            yield 1
            yield prepared, None
            return
        log.info("C-GET of %d instance(s)", len(prepared), extra={"calling_ae": calling_ae})
        yield len(prepared)
        accepted = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in event.assoc.accepted_contexts
            if cx.transfer_syntax
        }
        yield from self._fetched(prepared, "C-GET", event, accepted)


def _move_contexts(instances: list[Instance]) -> list[PresentationContext]:
    """Storage contexts for the move destination: per SOP class, uncompressed plus each
    compressed syntax on its own, so what was stored compressed can be sent as it is."""
    contexts: list[PresentationContext] = []
    for sop_class in dict.fromkeys(i[3] for i in instances if i[3]):
        wanted = [build_context(sop_class, list(UNCOMPRESSED_TRANSFER_SYNTAXES))]
        wanted += [build_context(sop_class, [ts]) for ts in COMPRESSED_TRANSFER_SYNTAXES]
        if len(contexts) + len(wanted) > _MAX_CONTEXTS:
            wanted = wanted[:1]
        if len(contexts) + len(wanted) > _MAX_CONTEXTS:
            break
        contexts += wanted
    return contexts
