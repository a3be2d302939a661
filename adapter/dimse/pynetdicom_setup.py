"""pynetdicom's process-global settings and the few internals the adapter replaces, in one
place (imported by :mod:`adapter.dimse.server`, which is the only user of pynetdicom's acceptor).

Each replaced internal is checked by tests/unit/test_pynetdicom_internals.py, which fails with a
clear message when a pynetdicom release moves it; pyproject.toml pins the minor version.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pynetdicom.dimse
import pynetdicom.dimse_messages
import pynetdicom.dsutils
import pynetdicom.events
import pynetdicom.fsm
import pynetdicom.pdu
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, RequestHandler

from adapter.dimse.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

_LOG = logging.getLogger(__name__)

__all__ = ["RECEIVE_DIRS", "discard_partial_data_set", "hand_off"]

# Receive C-STORE data sets straight into a file (no decode, flat memory): event.dataset_path.
_config.STORE_RECV_CHUNKED_DATASET = True
# Send a Part-10 file given by path as its raw data set, in PDU-sized chunks, never decoded
# (C-MOVE/C-GET sub-operations, the exporter's C-STORE SCU); needs an exact-syntax context.
_config.STORE_SEND_CHUNKED_DATASET = True

# Our Implementation Class UID and Version Name in the File Meta of the chunked C-STORE files.
_create_file_meta = pynetdicom.dsutils.create_file_meta


def _our_file_meta(**kwargs: Any) -> Any:
    kwargs["implementation_uid"] = UID(IMPLEMENTATION_CLASS_UID)
    kwargs["implementation_version"] = IMPLEMENTATION_VERSION_NAME
    return _create_file_meta(**kwargs)


setattr(pynetdicom.dimse_messages, "create_file_meta", _our_file_meta)  # noqa: B010
setattr(pynetdicom.events, "create_file_meta", _our_file_meta)  # noqa: B010 (Event.file_meta)

#: AE -> directory for its chunked C-STORE files, so they land on the spool's filesystem and
#: can be renamed into the spool instead of copied.
RECEIVE_DIRS: weakref.WeakKeyDictionary[AE, Path] = weakref.WeakKeyDictionary()


def _named_temporary_file(*args: Any, **kwargs: Any) -> IO[bytes]:
    """pynetdicom opens the chunked file from the association's DUL thread: put it in that
    AE's receive directory (else the system temp dir, as before)."""
    assoc = getattr(threading.current_thread(), "assoc", None)
    ae = getattr(assoc, "ae", None)
    directory = RECEIVE_DIRS.get(ae) if ae is not None else None
    if directory is not None and "dir" not in kwargs:
        kwargs["dir"] = directory
    return tempfile.NamedTemporaryFile(*args, **kwargs)


setattr(pynetdicom.dimse_messages, "NamedTemporaryFile", _named_temporary_file)  # noqa: B010

#: A response whose command and data set together stay below this goes in one P-DATA-TF PDU.
_PACKED_RESPONSE_LIMIT = 64 * 1024
_encode_msg = pynetdicom.dimse_messages.DIMSEMessage.encode_msg


def _packed_encode_msg(self: Any, context_id: int, max_pdu_length: int) -> Iterator[Any]:
    """pynetdicom sends each PDV in a P-DATA-TF of its own; for a small response, put the
    command and its identifier in one PDU (several PDVs per PDU, PS3.8 9.3.5). Why: dcmtk's
    DcmSCU (getscu) never reads the identifier of a C-GET-RSP -- the Failed SOP Instance UID
    List of a final response (PS3.4 C.4.3.1.4) -- and fails its release with "P-Data PDU
    arrived" when that identifier comes in a PDU of its own; in the same PDU it is skipped."""
    pdus = _encode_msg(self, context_id, max_pdu_length)
    if not type(self).__name__.endswith("_RSP"):
        yield from pdus
        return
    pending: list[Any] = []
    size = 0
    for pdata in pdus:
        size += sum(len(v) + 6 for _, v in pdata.presentation_data_value_list)
        pending.append(pdata)
        if size > _PACKED_RESPONSE_LIMIT or (max_pdu_length and size + 6 > max_pdu_length):
            yield from pending  # too large for one PDU: as pynetdicom sends it
            yield from pdus
            return
    if pending:
        packed = pending[0]
        for pdata in pending[1:]:
            packed.presentation_data_value_list.extend(pdata.presentation_data_value_list)
        yield packed


pynetdicom.dimse_messages.DIMSEMessage.encode_msg = _packed_encode_msg  # type: ignore[method-assign]


def _delete_received(received: IO[bytes] | None) -> None:
    """Close and delete one chunked data-set file (None: there is none)."""
    if received is not None:
        with contextlib.suppress(OSError, ValueError):
            received.close()
            Path(received.name).unlink(missing_ok=True)


_receive_primitive = pynetdicom.dimse.DIMSEServiceProvider.receive_primitive


def _guarded_receive_primitive(self: Any, primitive: Any) -> None:
    """pynetdicom decodes a command set in its DUL thread and does not catch what a garbled one
    raises there (an unknown Command Field: KeyError, an unaccepted context ID: KeyError, a
    missing element: AttributeError, an undecodable value: ValueError): the thread dies without
    an A-ABORT or EVT_CONN_CLOSE, leaving the association's chunked data-set file open in the
    spool's incoming/. Treat it as the invalid PDU it is (Evt19: A-ABORT, PS3.8 9.2.3).
    Likewise a command fragment before the last fragment of a data set (PS3.8 E.2): pynetdicom
    would start the next message and drop the half-written file, still open, in incoming/."""
    message = self.message
    pending = message is not None and getattr(message, "_data_set_file", None) is not None
    pdvs = getattr(primitive, "presentation_data_value_list", None) or []
    if pending and any(value[:1] and value[0] & 0x01 for _, value in pdvs):
        _abort_message(self, "a command fragment inside an unfinished data set")
        return
    try:
        _receive_primitive(self, primitive)
    except Exception as exc:
        _abort_message(self, f"malformed DIMSE message ({type(exc).__name__})")


def _abort_message(provider: Any, reason: str) -> None:
    message, provider.message = provider.message, None
    _delete_received(getattr(message, "_data_set_file", None))
    _LOG.warning("%s: aborting", reason)
    provider.dul.event_queue.put("Evt19")


pynetdicom.dimse.DIMSEServiceProvider.receive_primitive = _guarded_receive_primitive  # type: ignore[method-assign]


def discard_partial_data_set(assoc: Any) -> None:
    """Close and delete the chunked data-set file of a message the association never finished
    (an abort, a dead connection): nothing half-received stays in the spool's incoming/."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    _delete_received(getattr(message, "_data_set_file", None))


_do_action = pynetdicom.fsm.StateMachine.do_action
#: Events the local service user raises (PS3.8 Table 9-10): requests, responses, aborts.
_LOCAL_EVENTS = {"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"}
#: States in which an invalid event from the peer is answered with AA-8 (PS3.8 Table 9-10).
_AA8_STATES = {"Sta3", "Sta5", "Sta6", "Sta7", "Sta8", "Sta9", "Sta10", "Sta11", "Sta12"}


def _guarded_do_action(self: Any, event: str) -> None:
    """pynetdicom's state table leaves out pairs PS3.8 9.2 defines, and its DUL thread dies on
    them uncaught (InvalidEventError): no A-ABORT, no EVT_CONN_CLOSE, the slot and the chunked
    file kept. A local primitive after the association went to Sta13 (a C-STORE response
    racing a peer's abort) is moot and dropped; an ARTIM expiry outside Sta2/Sta13 is stale;
    anything else from the peer is the invalid PDU AA-8 answers (A-ABORT, then Sta13)."""
    state = self.current_state
    if (event, state) in pynetdicom.fsm.TRANSITION_TABLE:
        _do_action(self, event)
        return
    if event in _LOCAL_EVENTS or event in ("Evt17", "Evt18"):
        if event == "Evt18":
            self.dul.artim_timer.stop()
        _LOG.debug("DUL event %s in state %s: ignored", event, state)
        return
    _LOG.warning("DUL event %s is invalid in state %s: aborting", event, state)
    _do_action_named(self, "AA-8" if state in _AA8_STATES else "AA-2")


def _do_action_named(machine: Any, action_name: str) -> None:
    """Run one PS3.8 action of pynetdicom's table and move to the state it returns."""
    _, action, _ = pynetdicom.fsm.ACTIONS[action_name]
    machine.transition(action(machine.dul))


pynetdicom.fsm.StateMachine.do_action = _guarded_do_action  # type: ignore[method-assign]

_abort_to_primitive = pynetdicom.pdu.A_ABORT_RQ.to_primitive


def _lenient_abort_to_primitive(self: Any) -> Any:
    """An A-ABORT whose Abort Source is reserved (1, or above 2; PS3.8 9.3.8) is still an abort:
    pynetdicom raises ValueError building its primitive and the DUL thread gives up without
    closing the association properly. Take it as from the service user."""
    if self.source not in (0x00, 0x02):
        self.source = 0x00
    return _abort_to_primitive(self)


pynetdicom.pdu.A_ABORT_RQ.to_primitive = _lenient_abort_to_primitive  # type: ignore[method-assign]

_assoc_run_reactor = Association.run_reactor


def _closing_run_reactor(self: Any) -> None:
    """Whatever ends an acceptor's association thread (a DUL that died, an exception), the
    chunked file is removed and EVT_CONN_CLOSE fires once, so the handlers release what they
    hold (the association count, statistics)."""
    try:
        _assoc_run_reactor(self)
    finally:
        if self.is_acceptor:
            discard_partial_data_set(self)
            if not getattr(self, "_adapter_conn_closed", False):
                self._adapter_conn_closed = True
                with contextlib.suppress(Exception):
                    evt.trigger(self, evt.EVT_CONN_CLOSE, {"address": ("", 0)})


Association.run_reactor = _closing_run_reactor  # type: ignore[method-assign]

_serve_request = Association._serve_request


def _cleaning_serve_request(self: Any, msg: Any, context_id: int) -> None:
    """Only the Storage service class deletes a received data set's chunked file: a message
    pynetdicom turns away (unexpected type, a SOP Class it has no service for, a rejected
    context, a release under way) or serves with another class leaves it in incoming/."""
    try:
        _serve_request(self, msg, context_id)
    finally:
        _delete_received(getattr(msg, "_dataset_file", None))


Association._serve_request = _cleaning_serve_request  # type: ignore[method-assign]


class _UntrustedValueFilter(logging.Filter):
    """pynetdicom and pydicom quote peer-supplied values (a 10,000-character UID, NULs) in
    their log lines and tracebacks: keep such lines short and printable."""

    LIMIT = 2000

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" ({type(exc).__name__}: {exc})"
            record.exc_info, record.exc_text = None, None
        if len(text) > self.LIMIT or not text.isprintable():
            text = text[: self.LIMIT].encode("unicode_escape").decode("ascii")
            text = text[: self.LIMIT] + ("..." if len(record.getMessage()) > self.LIMIT else "")
        record.msg, record.args = text, None
        return True


_FILTER = _UntrustedValueFilter()
for _name in ["pydicom", "pynetdicom", *logging.Logger.manager.loggerDict]:
    if _name == "pydicom" or _name.startswith("pynetdicom"):
        logging.getLogger(_name).addFilter(_FILTER)
# pydicom also *warns* (besides logging) about every invalid UI value it decodes: with UIDs
# chosen by peers that is unbounded noise on stderr; we validate and log them ourselves.
warnings.filterwarnings(
    "ignore",
    message=r"(Invalid value for VR UI|The value length \(\d+\) exceeds the "
    r"maximum length of 64 allowed for VR UI)",
    category=UserWarning,
)


# ---------------------------------------------------------------------- the listener's hand-off
class _HandedOffSocket(AssociationSocket):
    """An acceptor's socket whose A-ASSOCIATE-RQ the listener already read (establishment.py):
    those bytes come first; then each PDU must arrive whole within ``pdu_timeout`` of its first
    read and be at most ``pdu_limit`` bytes long (0: unbounded), else the connection closes."""

    replay: bytearray
    pdu_timeout: float | None
    pdu_limit: int

    @property
    def ready(self) -> bool:
        return bool(self.replay) or bool(AssociationSocket.ready.fget(self))  # type: ignore[attr-defined]

    def recv(self, nr_bytes: int) -> bytearray:
        if self.pdu_limit and nr_bytes > self.pdu_limit:
            raise OSError(f"a PDU of {nr_bytes} bytes, over the maximum length")
        out = self.replay[:nr_bytes]
        del self.replay[:nr_bytes]
        deadline = time.monotonic() + self.pdu_timeout if self.pdu_timeout else None
        sock = self.socket
        assert sock is not None
        while len(out) < nr_bytes:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"a PDU not received within {self.pdu_timeout:g}s")
            chunk = sock.recv(min(1 << 16, nr_bytes - len(out)))
            if not chunk:
                break
            out += chunk
        return out


_HANDOFF = threading.local()


class _HandOffRequestHandler(RequestHandler):
    """pynetdicom's connection handler, with our socket class (RequestHandler.handle)."""

    assoc: Association

    def handle(self) -> None:
        assoc = self._create_association()
        sock = assoc.dul.socket
        sock.__class__ = _HandedOffSocket
        assert isinstance(sock, _HandedOffSocket)
        sock.replay, sock.pdu_timeout, sock.pdu_limit = _HANDOFF.value
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        self.assoc = assoc


def hand_off(
    server: Any,
    sock: socket.socket,
    address: tuple[str, int],
    associate_rq: bytes,
    *,
    pdu_timeout: float | None,
    pdu_limit: int,
) -> Association:
    """Give pynetdicom's acceptor a connection whose A-ASSOCIATE-RQ was read already; returns
    the association (its thread started)."""
    sock.settimeout(pdu_timeout)
    _HANDOFF.value = (bytearray(associate_rq), pdu_timeout, pdu_limit)
    try:
        return _HandOffRequestHandler(sock, address, server).assoc
    finally:
        _HANDOFF.value = None
