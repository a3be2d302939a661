"""C-MOVE and C-GET SCPs (PS3.4 C.4.2, C.4.3): QIDO-RS finds the instances, WADO-RS fetches each
to a temporary file, and pynetdicom C-STOREs the file (to the move destination over a new
association, or back over the same association for C-GET).

One instance is on disk at a time and none is decoded, so memory stays flat whatever the size.
Move destinations come from ``importer.move_destinations`` (the Java ``--aet_dictionary``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from adapter import metrics
from adapter.dicomweb.json_model import get_str
from adapter.dicomweb.qido import QidoClient
from adapter.dicomweb.wado import WadoClient
from adapter.errors import AdapterError, PermanentError, TransientError
from adapter.status import Status
from importer.config import MoveDestination
from importer.query_mapping import QidoQuery, identifier_to_query

__all__ = ["RetrieveScp"]

log = logging.getLogger(__name__)

_STUDY, _SERIES, _SOP = "0020000D", "0020000E", "00080018"


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
    ) -> None:
        self.qido = qido
        self.wado = wado
        self.destinations = dict(destinations)
        self.tmp_dir = tmp_dir

    def _instances(self, query: QidoQuery) -> list[tuple[str, str, str]]:
        """(study, series, instance) UIDs of every instance the identifier selects."""
        match = dict(query.match)
        if query.level == "IMAGE" and "SOPInstanceUID" in match:
            wanted: set[str] | None = set(match.pop("SOPInstanceUID").split("\\"))
        else:
            wanted = None
        if query.level in ("PATIENT", "STUDY"):
            # Studies first (their matching keys are study-level), then their instances.
            uids = [get_str(s, _STUDY) for s in self.qido.search_for_studies(match)]
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
                found.append((str(ids[0]), str(ids[1]), str(ids[2])))
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
        self, instances: list[tuple[str, str, str]], service: str, calling_ae: str
    ) -> Iterator[tuple[int | Dataset, Path | None]]:
        """Yield (Pending, file) per instance, fetched one at a time and deleted after its send."""
        workdir = Path(tempfile.mkdtemp(prefix="retrieve-", dir=self.tmp_dir))
        try:
            for study, series, sop in instances:
                path = workdir / "instance.dcm"
                try:
                    self.wado.retrieve_instance(study, series, sop, path)
                except AdapterError as exc:
                    log.warning(
                        "%s: cannot fetch instance: %s",
                        service,
                        exc,
                        extra={"sop_instance_uid": sop, "calling_ae": calling_ae},
                    )
                    yield Status.UNABLE_TO_PROCESS, None  # counted as a failed sub-operation
                    continue
                yield Status.PENDING, path
                path.unlink(missing_ok=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _prepare(self, event: Any, service: str) -> list[tuple[str, str, str]] | Dataset:
        calling_ae = event.assoc.requestor.ae_title
        try:
            query = identifier_to_query(event.identifier)
            return self._instances(query)
        except TransientError as exc:
            log.warning("%s: store unreachable: %s", service, exc, extra={"calling_ae": calling_ae})
            return _failure(Status.REFUSED_OUT_OF_RESOURCES_MATCHES, "DICOMweb store unreachable")
        except (PermanentError, ValueError, TypeError) as exc:
            log.warning("%s refused: %s", service, exc, extra={"calling_ae": calling_ae})
            return _failure(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))

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
        yield destination.host, destination.port, {"ae_title": destination.name}
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
        yield from self._fetched(prepared, "C-MOVE", calling_ae)

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
        yield from self._fetched(prepared, "C-GET", calling_ae)
