"""Storage Commitment Push Model SCP (PS3.4 Annex J): commit only to what the store really has.

The N-ACTION is answered at once; a background thread then checks each referenced instance in
the DICOMweb store (QIDO-RS), waiting a bounded time for instances still in the spool, and sends
the N-EVENT-REPORT over a new association to the requester, found by AE title among the
configured move destinations (as the Java adapter's ``--aet_dictionary``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from adapter.dicomweb.json_model import is_valid_uid
from adapter.dicomweb.qido import QidoClient
from adapter.dimse.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from adapter.errors import AdapterError
from adapter.status import Status
from importer.config import MoveDestination

__all__ = ["CommitmentRequest", "StorageCommitmentScp"]

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
EVENT_ALL_SUCCESS, EVENT_SOME_FAILED = 1, 2
FAILURE_NO_SUCH_OBJECT_INSTANCE = 0x0112
FAILURE_PROCESSING = 0x0110


@dataclass(frozen=True)
class CommitmentRequest:
    """One commitment transaction: who asked, and for which instances."""

    transaction_uid: str
    requester_ae: str
    references: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID)


def _reference(
    sop_class: str,
    sop_instance: str,
    reason: int | None = None,
    retrieve_ae: str | None = None,
) -> Dataset:
    """An item of the Referenced or Failed SOP Sequence (PS3.4 J.3.3.1); a committed one names
    the AE it can be retrieved from (Retrieve AE Title, C.14.1)."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if retrieve_ae is not None:
        item.RetrieveAETitle = retrieve_ae
    if reason is not None:
        item.FailureReason = reason
    return item


class StorageCommitmentScp:
    """Handles EVT_N_ACTION for Storage Commitment and reports the outcome asynchronously."""

    def __init__(
        self,
        qido: QidoClient,
        destinations: Mapping[str, MoveDestination],
        ae_title: str,
        wait_for_upload: float = 600.0,
        poll_interval: float = 2.0,
        is_pending: Callable[[str], bool] | None = None,
        report_attempts: int = 6,
        report_delay: float = 2.0,
    ) -> None:
        """``report_attempts``/``report_delay``: an N-EVENT-REPORT the requester does not take
        (not reachable, rejected, failure status) is sent again on a new association, waiting
        ``report_delay`` seconds, doubled each time (at most 5 min), between attempts."""
        self.qido = qido
        self.destinations = dict(destinations)
        self.ae_title = ae_title
        self.wait_for_upload = wait_for_upload
        self.poll_interval = poll_interval
        self.is_pending = is_pending  # True while the spool still holds the instance
        self.report_attempts = max(1, report_attempts)
        self.report_delay = report_delay
        self._threads: set[threading.Thread] = set()
        self._stop = threading.Event()

    def on_n_action(self, event: Any) -> tuple[int | Dataset, Dataset | None]:
        """Validate the request and answer N-ACTION; the result follows by N-EVENT-REPORT."""
        requester = str(event.assoc.requestor.ae_title).strip()
        info = event.action_information
        if event.action_type != 1:
            return 0x0123, None  # No such action
        if requester not in self.destinations:
            log.warning(
                "storage commitment from unknown AE %r (not a move destination)",
                requester,
                extra={"calling_ae": requester, "status": 0x0124},
            )
            return 0x0124, None  # Refused: not authorised (we could not report back)
        try:
            refs = tuple(
                (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
                for i in info.ReferencedSOPSequence
            )
            transaction = str(info.TransactionUID)
        except (AttributeError, TypeError, ValueError):
            return 0x0115, None  # Invalid argument value
        if not is_valid_uid(transaction) or not refs:
            return 0x0115, None
        request = CommitmentRequest(transaction, requester, refs)
        thread = threading.Thread(
            target=self._commit,
            args=(request,),
            daemon=True,
            name=f"commitment-{transaction[-12:]}",
        )
        self._threads.add(thread)
        thread.start()
        log.info(
            "storage commitment requested for %d instance(s)",
            len(refs),
            extra={"calling_ae": requester},
        )
        return Status.SUCCESS, None

    def _stored(self, sop_instance: str) -> bool:
        if not is_valid_uid(sop_instance):
            return False
        found = self.qido.search_for_instances(match={"SOPInstanceUID": sop_instance}, limit=1)
        return any(True for _ in found)

    def check(self, request: CommitmentRequest) -> tuple[list[Dataset], list[Dataset]]:
        """Split references into (committed, failed), waiting while uploads are pending."""
        deadline = time.monotonic() + self.wait_for_upload
        missing = list(request.references)
        committed: list[Dataset] = []
        while True:
            still: list[tuple[str, str]] = []
            for sop_class, sop_instance in missing:
                try:
                    ok = self._stored(sop_instance)
                except AdapterError:
                    ok = False
                if ok:
                    committed.append(_reference(sop_class, sop_instance, None, self.ae_title))
                else:
                    still.append((sop_class, sop_instance))
            missing = still
            pending = [m for m in missing if self.is_pending and self.is_pending(m[1])]
            if not pending or time.monotonic() >= deadline or self._stop.wait(self.poll_interval):
                break
        failed = [_reference(c, i, FAILURE_NO_SUCH_OBJECT_INSTANCE) for c, i in missing]
        return committed, failed

    def _commit(self, request: CommitmentRequest) -> None:
        try:
            committed, failed = self.check(request)
            delay = self.report_delay
            for attempt in range(1, self.report_attempts + 1):
                if self.report(request, committed, failed) == Status.SUCCESS:
                    return
                if attempt == self.report_attempts or self._stop.wait(delay):
                    break
                log.info(
                    "storage commitment: report attempt %d of %d failed; again in %gs",
                    attempt,
                    self.report_attempts,
                    delay,
                    extra={"calling_ae": request.requester_ae},
                )
                delay = min(delay * 2, 300.0)
            log.error(
                "storage commitment: report for transaction %s not delivered after %d attempts",
                request.transaction_uid,
                self.report_attempts,
                extra={"calling_ae": request.requester_ae},
            )
        except Exception:
            log.exception(
                "storage commitment report failed", extra={"calling_ae": request.requester_ae}
            )
        finally:
            self._threads.discard(threading.current_thread())

    def report(
        self, request: CommitmentRequest, committed: list[Dataset], failed: list[Dataset]
    ) -> int:
        """Send the N-EVENT-REPORT (PS3.4 J.3.3) to the requester; returns its status."""
        destination = self.destinations[request.requester_ae]
        ds = Dataset()
        ds.TransactionUID = request.transaction_uid
        ds.RetrieveAETitle = self.ae_title  # also at the top level, as the Java adapter sends it
        if committed:
            ds.ReferencedSOPSequence = DicomSequence(committed)
        if failed:
            ds.FailedSOPSequence = DicomSequence(failed)
        event_type = EVENT_SOME_FAILED if failed else EVENT_ALL_SUCCESS
        ae = AE(ae_title=self.ae_title)
        ae.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        assoc = ae.associate(
            destination.host, destination.port, ae_title=destination.name, ext_neg=[role]
        )
        if not assoc.is_established:
            log.warning(
                "storage commitment: cannot associate with %s to report",
                destination.name,
                extra={"calling_ae": request.requester_ae},
            )
            return -1
        try:
            status, _ = assoc.send_n_event_report(
                ds, event_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
            )
        finally:
            if assoc.is_established:
                assoc.release()
        code = int(getattr(status, "Status", -1))
        log.info(
            "storage commitment reported: %d committed, %d failed (0x%04X)",
            len(committed),
            len(failed),
            code & 0xFFFF,
            extra={"calling_ae": request.requester_ae},
        )
        return code

    def stop(self, timeout: float) -> None:
        """Stop waiting for uploads; reports still in flight finish with what is known."""
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout)
