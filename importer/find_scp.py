"""C-FIND SCP (PS3.4 C.4.1) answered from the DICOMweb store with QIDO-RS.

Results are paged from the store, so a large match is streamed to the SCU in full (the Java
adapter truncated it silently). Statuses are precise: 0xA900 for a bad identifier, 0xA700 when
the store is unreachable, 0xC001 with an ErrorComment when the store refuses the query.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset

from adapter import metrics
from adapter.dicomweb.qido import QidoClient
from adapter.errors import PermanentError, TransientError
from adapter.status import Status
from importer.query_mapping import (
    QidoQuery,
    QueryRetrieveLevel,
    ReturnKeys,
    identifier_to_query,
    result_to_identifier,
)

__all__ = ["FindScp"]

log = logging.getLogger(__name__)


def _failure(status: Status, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = int(status)
    ds.ErrorComment = comment[:64]  # LO: 64 characters
    return ds


class FindScp:
    """Handles EVT_C_FIND for the Patient Root and Study Root information models.

    ``return_keys``: answer with the request's keys (PS3.4) or every attribute the store
    returned (the Java adapter); ``fuzzy_matching``: the QIDO client asks for fuzzy matching.
    """

    def __init__(self, qido: QidoClient, return_keys: ReturnKeys = "requested") -> None:
        self.qido = qido
        self.return_keys = return_keys

    def _search(self, query: QidoQuery) -> Iterator[dict[str, Any]]:
        match = query.store_match
        if query.level == QueryRetrieveLevel.STUDY:
            results = self.qido.search_for_studies(match, query.includefield)
        elif query.level == QueryRetrieveLevel.SERIES:
            results = self.qido.search_for_series(
                query.study_instance_uid, match, query.includefield
            )
        elif query.level == QueryRetrieveLevel.IMAGE:
            results = self.qido.search_for_instances(
                query.study_instance_uid, query.series_instance_uid, match, query.includefield
            )
        else:
            return self._patients(query)
        return (r for r in results if query.accepts(r))

    def _patients(self, query: QidoQuery) -> Iterator[dict[str, Any]]:
        """PATIENT level: DICOMweb has no patient resource. One answer per distinct PatientID
        from its studies: the patient's attributes (group 0010) and the patient-level counts
        NumberOfPatientRelatedStudies/Series/Instances (PS3.4 C.6.1.1.2), summed from the
        studies' NumberOfStudyRelatedSeries/Instances."""
        include = [*query.includefield, "NumberOfStudyRelatedSeries"]
        include.append("NumberOfStudyRelatedInstances")
        patients: dict[str, dict[str, Any]] = {}
        for study in self.qido.search_for_studies(query.store_match, include):
            if not query.accepts(study):
                continue
            pid = str((study.get("00100020") or {}).get("Value", [""])[0])
            patient = patients.get(pid)
            if patient is None:
                patient = {tag: v for tag, v in study.items() if tag.startswith("0010")}
                patient["_counts"] = [0, 0, 0]
                patients[pid] = patient
            counts = patient["_counts"]
            counts[0] += 1
            counts[1] += _int(study, "00201206")
            counts[2] += _int(study, "00201208")
        for patient in patients.values():
            counts = patient.pop("_counts")
            for tag, value in zip(("00201200", "00201202", "00201204"), counts, strict=True):
                patient[tag] = {"vr": "IS", "Value": [value]}
            yield patient

    def on_c_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """Yield (Pending, identifier) per match, then the final status (PS3.4 C.4.1.3)."""
        calling_ae = event.assoc.requestor.ae_title
        try:
            query = identifier_to_query(event.identifier, fuzzy=self.qido.fuzzy_matching)
        except (PermanentError, ValueError, TypeError) as exc:
            log.warning(
                "C-FIND refused: %s", exc, extra={"calling_ae": calling_ae, "status": 0xA900}
            )
            metrics.DIMSE_REQUESTS_TOTAL.labels(service="C-FIND", status="0xA900").inc()
            yield _failure(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
            return
        matches = 0
        try:
            for result in self._search(query):
                if event.is_cancelled:
                    yield Status.CANCEL, None
                    return
                matches += 1
                yield Status.PENDING, result_to_identifier(result, query, self.return_keys)
        except TransientError as exc:
            log.warning(
                "C-FIND: store unreachable: %s",
                exc,
                extra={"calling_ae": calling_ae, "status": 0xA700},
            )
            yield _failure(Status.REFUSED_OUT_OF_RESOURCES, "DICOMweb store unreachable"), None
            return
        except PermanentError as exc:
            log.warning(
                "C-FIND: store refused the query: %s",
                exc,
                extra={"calling_ae": calling_ae, "status": 0xC001},
            )
            yield _failure(Status.UNABLE_TO_PROCESS, str(exc)), None
            return
        log.info(
            "C-FIND %s level: %d match(es)",
            query.level,
            matches,
            extra={"calling_ae": calling_ae, "status": 0},
        )
        metrics.DIMSE_REQUESTS_TOTAL.labels(service="C-FIND", status="0x0000").inc()
        yield Status.SUCCESS, None


def _int(result: dict[str, Any], tag: str) -> int:
    try:
        return int((result.get(tag) or {}).get("Value", [0])[0])
    except (TypeError, ValueError, IndexError):
        return 0
