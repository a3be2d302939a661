"""The native storage acceptor: one thread per association, blocking reads, data sets streamed
from the socket straight into a Part-10 file.

Why: pynetdicom runs two 1 ms polling threads per association and copies every PDU several
times; on a 2-core machine that caps a Storage SCP near 120-150 instances/s whatever else it
does (benchmarks/README.md). An association that only proposes Storage and Verification
(what a PACS pushing studies, storescu and dcmsend propose) needs a small part of PS3.7/PS3.8:
A-ASSOCIATE-AC, P-DATA with C-STORE/C-ECHO, A-RELEASE, A-ABORT. This module implements that
part; :class:`adapter.dimse.server.DimseServer` peeks at each A-ASSOCIATE-RQ and hands anything
else (query/retrieve, commitment, role selection, user identity, TLS, rejections) to pynetdicom.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from adapter import metrics
from adapter.dicomweb.json_model import is_valid_uid
from adapter.dimse.command_set import (
    C_ECHO_RQ,
    C_STORE_RQ,
    Command,
    CommandError,
    decode_command,
    encode_c_echo_rsp,
    encode_c_store_rsp,
)
from adapter.dimse.contexts import VERIFICATION_SOP_CLASS
from adapter.dimse.pdu import (
    A_ABORT,
    A_ASSOCIATE_RQ,
    A_RELEASE_RQ,
    ACCEPTANCE,
    P_DATA_TF,
    AssociateRequest,
    encode_associate_ac,
    encode_release_rp,
)
from adapter.dimse.transport import kernel_timeouts
from adapter.dimse.upper_layer import Connection, FramingError
from adapter.status import Status

__all__ = [
    "AcceptorSettings",
    "AssociationStats",
    "StorageAssociation",
    "StorageHandler",
    "StoreRequest",
    "StoreResult",
    "file_meta",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # socket -> file copy buffer, per association
_MAX_COMMAND = 64 * 1024  # a command set is a few hundred bytes (PS3.7 E.1)


@dataclass(frozen=True)
class StoreRequest:
    """One C-STORE-RQ as received (UIDs untrusted) on an accepted presentation context."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    peer: str
    called_ae: str = ""


@dataclass(frozen=True)
class StoreResult:
    """The C-STORE-RSP to send: status (PS3.4 B.2.3) and an optional ErrorComment."""

    status: int
    comment: str | None = None


class StorageHandler(Protocol):
    """What a plugin gives the acceptor to take C-STOREs as files."""

    def precheck(self, request: StoreRequest) -> StoreResult | None:
        """A refusal before the data set arrives (it is then read and dropped), or None."""
        ...

    def store(self, request: StoreRequest, dataset_path: Path) -> StoreResult:
        """Take responsibility for the complete Part-10 file at ``dataset_path`` (or not)."""
        ...


@dataclass(frozen=True)
class AcceptorSettings:
    """What the acceptor answers with; ``supported``: abstract syntax -> our syntaxes, in the
    order pynetdicom's acceptor would use for ties."""

    ae_title: str
    max_pdu_length: int  # what we receive; 0 = unlimited
    network_timeout: float | None
    implementation_class_uid: str
    implementation_version_name: str
    receive_dir: Path
    supported: Mapping[str, tuple[str, ...]]
    tie_order: Mapping[str, int]


def _meta_element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


def file_meta(request: StoreRequest, implementation_uid: str, implementation_version: str) -> bytes:
    """Preamble, 'DICM' and the File Meta Information (PS3.10 7.1) of a received instance, as
    pynetdicom writes it: Explicit VR LE, from the request's UIDs and the context's syntax."""
    body = b"".join(
        [
            struct.pack("<HH", 0x0002, 0x0001) + b"OB\0\0" + struct.pack("<L", 2) + b"\0\1",
            _meta_element(0x0002, b"UI", request.sop_class_uid.encode("ascii"), b"\0"),
            _meta_element(0x0003, b"UI", request.sop_instance_uid.encode("ascii"), b"\0"),
            _meta_element(0x0010, b"UI", request.transfer_syntax_uid.encode("ascii"), b"\0"),
            _meta_element(0x0012, b"UI", implementation_uid.encode("ascii"), b"\0"),
            _meta_element(0x0013, b"SH", implementation_version.encode("ascii")[:16], b" ")
            if implementation_version
            else b"",
        ]
    )
    length = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<HL", 4, len(body))
    return bytes(128) + b"DICM" + length + body


@dataclass
class AssociationStats:
    """What one association did, for its one INFO line at the end (both acceptor paths)."""

    started: float = field(default_factory=time.monotonic)
    instances: int = 0
    bytes: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def count(self, service: str, status: int) -> None:
        if service == "C-STORE":
            self.instances += 1
        self.statuses[f"{service} 0x{status & 0xFFFF:04X}"] += 1

    def log_end(self, calling_ae: str, peer: str, aborted: bool) -> None:
        statuses = ", ".join(f"{k} x{n}" for k, n in sorted(self.statuses.items())) or "none"
        log.info(
            "association from %s %s: %d instance(s), %d bytes in %.2fs; statuses: %s",
            calling_ae,
            "aborted" if aborted else "ended",
            self.instances,
            self.bytes,
            time.monotonic() - self.started,
            statuses,
            extra={"calling_ae": calling_ae, "peer": peer},
        )


class StorageAssociation:
    """One accepted association: answers C-STORE and C-ECHO until release or abort."""

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        request: AssociateRequest,
        results: dict[int, tuple[int, str]],
        settings: AcceptorSettings,
        handler: StorageHandler,
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.request = request
        self.calling_ae = request.calling_ae
        self.called_ae = request.called_ae
        self.settings = settings
        self.handler = handler
        self.accepted = {
            cx.id: (cx.abstract_syntax, results[cx.id][1])
            for cx in request.contexts
            if results[cx.id][0] == ACCEPTANCE
        }
        self._results = results
        self.connection = Connection(sock, _CHUNK)
        self._command = bytearray()
        self._message: Command | None = None
        self._message_context = 0
        self._sink: IO[bytes] | None = None
        self._sink_path: Path | None = None
        self._refusal: StoreResult | None = None
        self._store_request: StoreRequest | None = None
        self._started = 0.0
        self.closed = threading.Event()
        self.aborted_by_peer = False
        self.stats = AssociationStats()

    # ------------------------------------------------------------------ lifecycle
    def serve(self) -> None:
        """Send the A-ASSOCIATE-AC, then serve PDUs; always closes the socket."""
        try:
            kernel_timeouts(self.sock, self.settings.network_timeout)
            self._send(
                encode_associate_ac(
                    self.request,
                    self._results,
                    max_pdu_length=self.settings.max_pdu_length,
                    implementation_class_uid=self.settings.implementation_class_uid,
                    implementation_version_name=self.settings.implementation_version_name,
                )
            )
            self._serve_pdus()
        except FramingError as exc:  # PDVs that do not add up to their PDU (PS3.8 9.3.5)
            log.warning(
                "%s: aborting", exc, extra={"calling_ae": self.calling_ae, "peer": self.peer}
            )
            self._abort_quietly(reason=6)  # invalid PDU parameter value
        except (TimeoutError, BlockingIOError):  # SO_RCVTIMEO expired: EAGAIN
            log.warning(
                "association idle for %gs: aborting",
                self.settings.network_timeout,
                extra={"calling_ae": self.calling_ae, "peer": self.peer},
            )
            self._abort_quietly()
        except (ConnectionError, EOFError, OSError) as exc:
            if not self.closed.is_set():
                log.info(
                    "association connection lost: %s",
                    type(exc).__name__,
                    extra={"calling_ae": self.calling_ae, "peer": self.peer},
                )
        except Exception as exc:  # never a bare close nor a traceback on stderr
            log.error(
                "association failed (%s): aborting",
                type(exc).__name__,
                extra={"calling_ae": self.calling_ae, "peer": self.peer},
            )
            self._abort_quietly(reason=0)
        finally:
            self._drop_sink()
            self.closed.set()
            self.connection.close()
            self.stats.log_end(self.calling_ae, self.peer, self.aborted_by_peer)

    def abort(self) -> None:
        """From another thread (shutdown): A-ABORT and close; the serving thread then ends."""
        self._abort_quietly()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _abort_quietly(self, reason: int | None = None) -> None:
        """A-ABORT (PS3.8 9.3.8): an abort we decide on (timeout, shutdown, a DIMSE message we
        do not serve) comes from the service user, source 0; a protocol error from the service
        provider, source 2, with its reason (1 unrecognized PDU, 2 unexpected PDU)."""
        source, why = (0, 0) if reason is None else (2, reason)
        self.connection.abort(source, why)

    def _send(self, data: bytes) -> None:
        self.connection.send(data)

    # ------------------------------------------------------------------ reading
    def _read_exact(self, n: int) -> bytes:
        return self.connection.read_exact(n)

    def _serve_pdus(self) -> None:
        while True:
            kind, length = self.connection.read_pdu_header()
            if kind == P_DATA_TF:
                self._read_p_data(length)
            elif kind == A_RELEASE_RQ:
                if length <= _CHUNK:
                    self._read_exact(length)
                self._send(encode_release_rp())
                self.closed.set()
                return
            elif kind == A_ABORT:
                if length <= 64:
                    self._read_exact(length)  # then close: the peer sees an orderly close
                self.aborted_by_peer = True
                self.closed.set()
                return
            else:
                log.warning(
                    "unexpected PDU type 0x%02X on an established association: aborting",
                    kind,
                    extra={"calling_ae": self.calling_ae, "peer": self.peer},
                )
                known = A_ASSOCIATE_RQ <= kind <= A_ABORT  # PS3.8 9.3.1
                self._abort_quietly(reason=2 if known else 1)
                self.closed.set()
                return

    def _read_p_data(self, length: int) -> None:
        """Each PDV item (PS3.8 9.3.5.1): command fragments gathered, data streamed to file. One
        data set per command and nothing after its last fragment (PS3.7 6.3.1): a data PDV
        after it in the same PDU refuses the C-STORE; bytes that are not a PDV abort."""
        finished = False  # the data set's last fragment came in this PDU: answer at its end
        for pdv in self.connection.pdvs(length):
            if pdv.is_command:
                if finished:
                    finished = False
                    self._finish_store()
                if len(self._command) + pdv.length > _MAX_COMMAND:
                    raise EOFError("command set larger than 64 KiB")
                self._command += self._read_exact(pdv.length)
                if pdv.is_last:
                    self._on_command(pdv.context_id)
            elif finished:
                self.connection.skip(pdv.length)
                self._refusal = StoreResult(
                    Status.CANNOT_UNDERSTAND, "data after the last fragment of the data set"
                )
            else:
                self._on_data(pdv.context_id, pdv.length)
                finished = pdv.is_last
        if finished:
            self._finish_store()

    # ------------------------------------------------------------------ DIMSE
    def _on_command(self, context_id: int) -> None:
        raw, self._command = bytes(self._command), bytearray()
        if self._message is not None:
            raise EOFError("a new command before the previous data set ended")
        try:
            command = decode_command(raw)
        except CommandError as exc:
            log.warning(
                "undecodable DIMSE command (%s): aborting",
                exc,
                extra={"calling_ae": self.calling_ae, "peer": self.peer},
            )
            self._abort_quietly()
            raise EOFError(str(exc)) from None
        accepted = self.accepted.get(context_id)
        if accepted is None:
            self._abort_quietly()
            raise EOFError(f"DIMSE message on presentation context {context_id}, not accepted")
        if command.command_field == C_ECHO_RQ and not command.has_data_set:
            self._respond(context_id, encode_c_echo_rsp(command), "C-ECHO", 0, time.perf_counter())
            return
        if command.command_field != C_STORE_RQ or not command.has_data_set:
            log.warning(
                "DIMSE command 0x%04X is not served on a storage association: aborting",
                command.command_field,
                extra={"calling_ae": self.calling_ae, "peer": self.peer},
            )
            self._abort_quietly()
            raise EOFError("unsupported DIMSE command")
        self._start_store(command, context_id, accepted)

    def _start_store(self, command: Command, context_id: int, accepted: tuple[str, str]) -> None:
        self._message, self._message_context = command, context_id
        self._started = time.perf_counter()
        abstract, syntax = accepted
        request = StoreRequest(
            command.affected_sop_class_uid,
            command.affected_sop_instance_uid,
            syntax,
            self.calling_ae,
            self.peer,
            self.called_ae,
        )
        self._store_request = request
        self._refusal = None
        if abstract not in self.settings.supported or abstract == VERIFICATION_SOP_CLASS:
            self._refusal = StoreResult(Status.SOP_CLASS_NOT_SUPPORTED, "not a storage context")
            return
        try:
            self._refusal = self.handler.precheck(request)
        except Exception:
            log.exception("C-STORE precheck error")
            self._refusal = StoreResult(Status.UNABLE_TO_PROCESS, "internal error")
        if self._refusal is not None:
            return
        try:
            self._open_sink(request)
        except OSError as exc:
            log.error("cannot open a receive file: %s", exc.strerror)
            self._refusal = StoreResult(
                Status.REFUSED_OUT_OF_RESOURCES, "cannot write to the spool"
            )

    def _open_sink(self, request: StoreRequest) -> None:
        path = self.settings.receive_dir / f"native-{uuid.uuid4().hex}.part"
        opener = getattr(self.handler, "open_receive_file", None)  # e.g. a recycled file
        sink = (  # closed in _finish/_drop_sink
            opener(path) if opener is not None else open(path, "wb", buffering=0)  # noqa: SIM115
        )
        self._sink, self._sink_path = sink, path
        self._write_all(
            memoryview(
                file_meta(
                    request,
                    self.settings.implementation_class_uid,
                    self.settings.implementation_version_name,
                )
            )
        )

    def _on_data(self, context_id: int, length: int) -> None:
        if self._message is None or context_id != self._message_context:
            self._abort_quietly()
            raise EOFError("data set fragment without its command")
        view = self.connection.view
        left = length
        while left > 0:
            count = self.connection.recv_into(left)
            left -= count
            self.stats.bytes += count
            if self._sink is not None:
                try:
                    self._write_all(view[:count])
                except OSError as exc:
                    log.error("cannot write a received data set: %s", exc.strerror)
                    self._drop_sink()
                    self._refusal = StoreResult(
                        Status.REFUSED_OUT_OF_RESOURCES, "spool write failed"
                    )

    def _write_all(self, data: memoryview) -> None:
        assert self._sink is not None
        while data:
            written = self._sink.write(data)
            if written is None:
                raise OSError(0, "write would block")
            data = data[written:]

    def _finish_store(self) -> None:
        command, request = self._message, self._store_request
        assert command is not None and request is not None
        context_id = self._message_context
        self._message, self._store_request = None, None
        result = self._refusal
        if result is None and self._sink is not None and self._sink_path is not None:
            sink, path = self._sink, self._sink_path
            self._sink, self._sink_path = None, None
            sink.close()
            try:
                result = self.handler.store(request, path)
            except Exception:
                log.exception("C-STORE handler error")
                result = StoreResult(Status.UNABLE_TO_PROCESS, "internal error")
            if result.status & 0xF000 not in (0x0000, 0xB000):  # refused: nothing keeps it
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        result = result or StoreResult(Status.UNABLE_TO_PROCESS, "internal error")
        self._drop_sink()
        valid = is_valid_uid(command.affected_sop_class_uid) and is_valid_uid(
            command.affected_sop_instance_uid
        )
        response = encode_c_store_rsp(command, result.status, result.comment, echo_uids=valid)
        self._respond(context_id, response, "C-STORE", result.status, self._started)

    def _respond(
        self, context_id: int, command: bytes, service: str, status: int, started: float
    ) -> None:
        self.connection.send_command(context_id, command, self.request.max_pdu_length)
        self.stats.count(service, status)
        metrics.DIMSE_REQUEST_DURATION_SECONDS.labels(service=service).observe(
            time.perf_counter() - started
        )
        metrics.DIMSE_REQUESTS_TOTAL.labels(
            service=service, status=metrics.dimse_status_label(status)
        ).inc()

    def _drop_sink(self) -> None:
        sink, path = self._sink, self._sink_path
        self._sink, self._sink_path = None, None
        if sink is not None:
            with contextlib.suppress(OSError):
                sink.close()
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
