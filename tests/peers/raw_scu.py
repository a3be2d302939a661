"""A C-STORE SCU that sends exactly the bytes and UIDs a test gives it -- garbage data sets,
hostile UIDs -- which dcmtk and pynetdicom's own ``send_c_store`` refuse to produce.

It uses pynetdicom's association and DIMSE layer but skips its request validation: the
AffectedSOPInstanceUID is set on the primitive's private field, and the reactor is paused around
the exchange exactly as ``Association.send_c_store`` does (pynetdicom 3.0 internals; test-only).
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass

from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE

from tests.peers.ports import LOOPBACK

__all__ = ["RawStoreResult", "raw_c_store"]


@dataclass(frozen=True)
class RawStoreResult:
    """What came back: a status (None if the association was aborted instead)."""

    status: int | None
    error_comment: str | None
    aborted: bool


def raw_c_store(
    port: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    dataset_bytes: bytes,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    aet: str = "RAWSCU",
    called_aet: str = "ANY-SCP",
    host: str = LOOPBACK,
    timeout: float = 30.0,
) -> RawStoreResult:
    """One association, one C-STORE of ``dataset_bytes`` (encoded in ``transfer_syntax``).

    Warnings are silenced for the whole exchange (pydicom warns, in pynetdicom's threads too,
    about the hostile UIDs this is for).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _exchange(
            port,
            sop_class_uid,
            sop_instance_uid,
            dataset_bytes,
            transfer_syntax,
            aet,
            called_aet,
            host,
            timeout,
        )


def _exchange(
    port: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    dataset_bytes: bytes,
    transfer_syntax: str,
    aet: str,
    called_aet: str,
    host: str,
    timeout: float,
) -> RawStoreResult:
    ae = AE(ae_title=aet)
    ae.dimse_timeout = timeout
    ae.acse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(sop_class_uid, transfer_syntax)
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        raise ConnectionError(f"association with 127.0.0.1:{port} not established")
    try:
        req = C_STORE()
        req.MessageID = 1
        req.AffectedSOPClassUID = sop_class_uid
        req._affected_sop_instance_uid = UID(sop_instance_uid)  # unvalidated on purpose
        req.Priority = 2
        req.DataSet = io.BytesIO(dataset_bytes)
        context_id = int(assoc.accepted_contexts[0].context_id or 1)
        assoc._reactor_checkpoint.clear()
        deadline = time.monotonic() + timeout
        while not assoc._is_paused and time.monotonic() < deadline:
            time.sleep(0.0001)
        rsp = None
        try:
            assoc.dimse.send_msg(req, context_id)
            # the reactor is paused: watch the state machine, not is_established (PS3.8 9.2)
            while time.monotonic() < deadline and assoc.dul.state_machine.current_state == "Sta6":
                _, rsp = assoc.dimse.get_msg(block=False)
                if rsp is not None:
                    break
                time.sleep(0.005)
        finally:
            assoc._reactor_checkpoint.set()
        status = getattr(rsp, "Status", None)
        if status is None:
            aborted = assoc.dul.state_machine.current_state != "Sta6"
            return RawStoreResult(None, None, aborted=aborted)
        comment = getattr(rsp, "ErrorComment", None)
        return RawStoreResult(int(status), str(comment) if comment else None, aborted=False)
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
