"""The Storage SCP (PS3.4 Annex B): C-STORE requests -> checked Part-10 file -> spool -> status.

pynetdicom 3 (with ``STORE_RECV_CHUNKED_DATASET``) has already written the received data set to
``event.dataset_path`` as a complete Part-10 file: preamble, File Meta Information built from the
request's AffectedSOPClassUID/AffectedSOPInstanceUID and the accepted context's transfer syntax,
then the data set bytes exactly as received. We check it cheaply, move it into the spool (a
rename: same filesystem) and answer once it is durable -- or, with ``ack: after-upload``, once
the store has it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event

from adapter import failures, metrics
from adapter.dicomweb.json_model import is_strict_uid
from adapter.dimse.server import Handler, on_c_echo
from adapter.dimse.storage_acceptor import StoreRequest, StoreResult
from adapter.pipeline.waiter import DeliveryWaiter, Verdict
from adapter.provenance import ProvenanceLog
from adapter.spool import SpoolEntry, SpoolFullError, SpoolMeta
from adapter.spool_backup import SpoolBackupError
from adapter.status import Status
from importer.part10 import InvalidDatasetError, check_part10, printable

__all__ = ["SpoolTarget", "StoreScp"]

log = logging.getLogger(__name__)

_MAX_COMMENT = 64  # ErrorComment is LO (PS3.7 C.4.2.1.4, PS3.5 6.2)


class SpoolTarget(Protocol):
    """Where accepted instances go: the Spool, or a receiving child's view of it."""

    max_bytes: int

    @property
    def bytes_used(self) -> int: ...

    def has_room(self, incoming_bytes: int = 0) -> bool: ...

    def put_file(
        self, src_tmp_path: Path, meta: SpoolMeta, waiter: DeliveryWaiter | None = None
    ) -> SpoolEntry: ...

    def discard(self, entry: SpoolEntry) -> None: ...


class _RefusedError(Exception):
    def __init__(self, status: Status, comment: str, reason: str = "other") -> None:
        super().__init__(comment)
        self.status, self.comment, self.reason = status, comment, reason


def _response(status: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = comment.replace("\\", "/")[:_MAX_COMMENT]
    return ds


class StoreScp:
    """``on_c_store``/``on_c_echo`` handlers bound to one spool (and uploader, for waiting)."""

    def __init__(
        self,
        spool: SpoolTarget,
        provenance: ProvenanceLog | None,
        *,
        ack: Literal["after-spool", "after-upload"] = "after-spool",
        upload_timeout: float = 20.0,
    ) -> None:
        """``upload_timeout``: with ``ack: after-upload``, how long a C-STORE waits for every
        destination before it is answered 0xA700 (under the sender's own DIMSE timeout)."""
        self.spool = spool
        self.provenance = provenance
        self.ack = ack
        self.upload_timeout = upload_timeout

    def open_receive_file(self, path: Path) -> IO[bytes]:
        """Where the native acceptor writes a data set: a file the spool may recycle."""
        opener = getattr(self.spool, "open_receive_file", None)
        return opener(path) if opener is not None else open(path, "wb", buffering=0)

    def handlers(self) -> list[tuple[evt.EventType, Handler]]:
        """What to bind on the DimseServer."""
        return [(evt.EVT_C_STORE, self.on_c_store), (evt.EVT_C_ECHO, on_c_echo)]

    def on_c_store(self, event: Event) -> Dataset:
        """Answer one C-STORE (PS3.7 9.1.1) on a pynetdicom association: the same checks and
        answers as the native acceptor's :meth:`precheck` and :meth:`store`."""
        req: Any = event.request
        requestor = event.assoc.requestor
        cx = event.context
        request = StoreRequest(
            sop_class_uid=str(getattr(req, "AffectedSOPClassUID", "") or ""),
            sop_instance_uid=str(getattr(req, "AffectedSOPInstanceUID", "") or ""),
            transfer_syntax_uid=str(cx.transfer_syntax[0]) if cx.transfer_syntax else "",
            calling_ae=str(requestor.ae_title).strip(),
            peer=f"{requestor.address}:{requestor.port}",
            called_ae=str(event.assoc.acceptor.ae_title).strip(),
        )
        result = self.precheck(request) or self.store(request, Path(event.dataset_path))
        return _response(result.status, result.comment)

    def precheck(self, request: StoreRequest) -> StoreResult | None:
        """Refuse before the data set arrives: UIDs that are not UIDs (PS3.5 9.1)."""
        metrics.INSTANCES_RECEIVED_TOTAL.inc()
        if not is_strict_uid(request.sop_class_uid):
            return self._refused(request, Status.CANNOT_UNDERSTAND, "invalid AffectedSOPClassUID")
        if not is_strict_uid(request.sop_instance_uid):
            return self._refused(
                request, Status.CANNOT_UNDERSTAND, "invalid AffectedSOPInstanceUID (PS3.5 9.1)"
            )
        return None

    def store(self, request: StoreRequest, dataset_path: Path) -> StoreResult:
        """Success once the file is durable in the spool (or uploaded), else a precise failure
        status with an ErrorComment, logged once with the cause."""
        try:
            verdict = self._store(dataset_path, request)
        except _RefusedError as refusal:
            return self._refused(request, refusal.status, refusal.comment, refusal.reason)
        except Exception as exc:  # never let one bad request take the listener down
            log.exception("C-STORE handler error")
            return self._refused(
                request, Status.UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}"
            )
        if verdict.status != Status.SUCCESS:
            self._log_refusal(request, verdict.status, verdict.comment)
        return StoreResult(int(verdict.status), verdict.comment)

    def _refused(
        self, request: StoreRequest, status: Status, comment: str, reason: str = "invalid"
    ) -> StoreResult:
        metrics.INSTANCES_FAILED_TOTAL.labels(reason=reason).inc()
        self._log_refusal(request, status, comment)
        return StoreResult(int(status), comment)

    @staticmethod
    def _log_refusal(request: StoreRequest, status: int, comment: str | None) -> None:
        failures.record(
            "importer",
            f"C-STORE from {request.calling_ae}",
            comment or "refused",
            dimse_status=int(status),
            sop_instance_uid=printable(request.sop_instance_uid),
            peer=request.peer,
        )
        log.warning(
            "C-STORE refused: %s",
            comment,
            extra={
                "sop_instance_uid": printable(request.sop_instance_uid),
                "calling_ae": request.calling_ae,
                "peer": request.peer,
                "status": int(status),
            },
        )

    def _store(self, path: Path, request: StoreRequest) -> Verdict:
        sop_class, sop_instance = request.sop_class_uid, request.sop_instance_uid
        calling_ae = request.calling_ae
        size = path.stat().st_size
        metrics.BYTES_RECEIVED_TOTAL.inc(size)
        if not self.spool.has_room(size):
            raise _RefusedError(
                Status.REFUSED_OUT_OF_RESOURCES, self._full_comment(size), "spool_full"
            )
        try:
            facts = check_part10(path, sop_class, sop_instance)
        except InvalidDatasetError as exc:
            raise _RefusedError(exc.status, exc.comment, "invalid") from exc
        meta = SpoolMeta(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            study_instance_uid=facts.study_instance_uid,
            series_instance_uid=facts.series_instance_uid,
            transfer_syntax_uid=facts.transfer_syntax_uid,
            calling_ae=calling_ae,
            called_ae=request.called_ae or None,
        )
        waiter: DeliveryWaiter | None = None
        if self.ack == "after-upload":
            waiter = DeliveryWaiter("delivered", deadline=time.monotonic() + self.upload_timeout)
        if self.provenance is not None:  # first: a failure here refuses, nothing is spooled
            self.provenance.record(sop_instance, calling_ae)
        try:
            entry = self.spool.put_file(path, meta, waiter=waiter)
        except SpoolFullError as exc:
            raise _RefusedError(
                Status.REFUSED_OUT_OF_RESOURCES, f"spool full: {exc}", "spool_full"
            ) from exc
        except SpoolBackupError as exc:  # not kept remotely: the sender keeps it, resends
            raise _RefusedError(Status.REFUSED_OUT_OF_RESOURCES, str(exc), "backup") from exc
        metrics.INSTANCES_SPOOLED_TOTAL.inc()
        if waiter is None:
            return Verdict(Status.SUCCESS)
        verdict = waiter.wait(timeout=self.upload_timeout)
        if verdict is not None:
            return verdict
        if waiter.cancel():  # we answer first: the sender keeps the instance and resends it
            self.spool.discard(entry)
            cause = waiter.last_error() or "no answer"
            return Verdict(
                Status.REFUSED_OUT_OF_RESOURCES,
                f"not delivered in {self.upload_timeout:g}s: {cause}",
            )
        return waiter.result or Verdict(Status.SUCCESS)

    def _full_comment(self, size: int) -> str:
        return (
            f"spool full: {self.spool.bytes_used + size} > {self.spool.max_bytes} bytes"
            if self.spool.bytes_used + size > self.spool.max_bytes
            else "spool full: disk low"
        )
