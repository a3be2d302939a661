"""A C-STORE association we request (PS3.8 7.1, PS3.7 9.1.1): connect, negotiate, send data
sets straight from their files, read each C-STORE-RSP, release.

Why not pynetdicom's Association: its two 1 ms polling threads per association and its
per-PDU copies cost more CPU than the rest of the export path (benchmarks/README.md). A Storage
SCU needs a small part of the protocol; data sets go from file to socket with sendfile(2).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from adapter.dimse.command_set import (
    C_STORE_RSP,
    CommandError,
    decode_response,
    encode_c_store_rq,
)
from adapter.dimse.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    ACCEPTANCE,
    P_DATA_TF,
    PduError,
    encode_associate_rq,
    encode_release_rp,
    encode_release_rq,
    parse_associate_ac,
)
from adapter.dimse.transport import kernel_timeouts
from adapter.dimse.upper_layer import Connection

__all__ = [
    "AssociationAbortedError",
    "AssociationRejectedError",
    "ConnectFailedError",
    "StoreAssociation",
    "StoreResponse",
]

_FRAGMENT = 1 << 20  # data set bytes per P-DATA-TF when the peer takes any length
ABSTRACT_SYNTAX_REJECTED = 3
_MAX_RESPONSE = 1 << 20


class ConnectFailedError(OSError):
    """No TCP connection (PACS down or unreachable)."""


#: PS3.8 Table 9-21: (source, reason) of an A-ASSOCIATE-RJ.
_REJECT_REASONS = {
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
_REJECT_SOURCES = {1: "service user", 2: "service provider (ACSE)", 3: "service provider"}


class AssociationRejectedError(Exception):
    """A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent / 2 transient, source, reason."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        kind = "rejected permanent" if result == 1 else "rejected transient"
        source_text = _REJECT_SOURCES.get(source, f"source {source}")
        reason_text = _REJECT_REASONS.get((source, reason), "no reason given")
        super().__init__(f"{kind}, {source_text}: {reason_text}")
        self.result, self.source, self.reason = result, source, reason


class AssociationAbortedError(Exception):
    """The association ended without a response (A-ABORT, closed connection, timeout, or a
    PDU that does not belong)."""


@dataclass(frozen=True)
class StoreResponse:
    """A C-STORE-RSP: its Status and ErrorComment (PS3.7 9.3.1.2)."""

    status: int
    error_comment: str | None = None


class StoreAssociation:
    """One established association on which we are the Storage SCU."""

    def __init__(
        self,
        sock: socket.socket,
        contexts: dict[int, tuple[str, tuple[str, ...]]],
        accepted: dict[int, tuple[int, str]],
        peer_max_pdu: int,
    ) -> None:
        self.sock = sock
        self.connection = Connection(sock)
        self.peer_max_pdu = peer_max_pdu
        #: (abstract syntax, accepted transfer syntax) -> context id, for accepted contexts
        self.accepted: dict[tuple[str, str], int] = {}
        #: abstract syntaxes for which no context was accepted
        self.rejected: set[str] = set()
        for cx_id, (abstract, _) in contexts.items():
            result, syntax = accepted.get(cx_id, (ABSTRACT_SYNTAX_REJECTED, ""))
            if result == ACCEPTANCE and syntax:
                self.accepted.setdefault((abstract, syntax), cx_id)
        accepted_abstracts = {abstract for abstract, _ in self.accepted}
        self.rejected = {a for a, _ in contexts.values()} - accepted_abstracts
        self.is_established = True

    # ------------------------------------------------------------------ establishment
    @classmethod
    def request(
        cls,
        host: str,
        port: int,
        *,
        called_ae: str,
        calling_ae: str,
        contexts: list[tuple[str, tuple[str, ...]]],
        connection_timeout: float,
        acse_timeout: float,
        network_timeout: float,
        dimse_timeout: float | None = None,
        max_pdu_length: int = 0,
        implementation_class_uid: str,
        implementation_version_name: str,
    ) -> StoreAssociation:
        """Connect and negotiate ``contexts`` (abstract syntax, proposed syntaxes), at most
        128 (odd ids 1..255, PS3.8 9.3.2.2). Raises ConnectFailedError,
        AssociationRejectedError or AssociationAbortedError."""
        try:
            sock = socket.create_connection((host, port), timeout=connection_timeout)
        except OSError as exc:
            raise ConnectFailedError(exc.errno, f"cannot connect: {exc.strerror or exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            numbered = {2 * i + 1: cx for i, cx in enumerate(contexts[:128])}
            sock.settimeout(acse_timeout)
            sock.sendall(
                encode_associate_rq(
                    called_ae,
                    calling_ae,
                    [(cx_id, a, ts) for cx_id, (a, ts) in numbered.items()],
                    max_pdu_length=max_pdu_length,
                    implementation_class_uid=implementation_class_uid,
                    implementation_version_name=implementation_version_name,
                )
            )
            kind, body = Connection(sock).read_pdu(_MAX_RESPONSE)
            if kind == A_ASSOCIATE_RJ and len(body) >= 4:
                raise AssociationRejectedError(body[1], body[2], body[3])
            if kind != A_ASSOCIATE_AC:
                raise AssociationAbortedError(f"answered with PDU type 0x{kind:02X}")
            try:
                accept = parse_associate_ac(struct.pack(">BBL", kind, 0, len(body)) + body)
            except PduError as exc:
                raise AssociationAbortedError(f"malformed A-ASSOCIATE-AC: {exc}") from None
            # Blocking, with kernel-side timeouts: sendfile(2) then sends a whole fragment and a
            # read takes a whole PDU in one call (each call re-takes the GIL).
            kernel_timeouts(sock, dimse_timeout or network_timeout, network_timeout)
            return cls(sock, numbered, accept.results, accept.max_pdu_length)
        except TimeoutError:
            sock.close()
            raise AssociationAbortedError(f"no answer within {acse_timeout:g}s") from None
        except (OSError, EOFError) as exc:
            sock.close()
            raise AssociationAbortedError(f"connection lost during negotiation: {exc}") from None
        except BaseException:
            sock.close()
            raise

    # ------------------------------------------------------------------ C-STORE
    def send_c_store(
        self,
        message_id: int,
        context_id: int,
        sop_class_uid: str,
        sop_instance_uid: str,
        data_set: Path | bytes,
        offset: int = 0,
    ) -> StoreResponse:
        """Send one C-STORE-RQ and its data set (a file from ``offset``, or bytes); wait for
        the response. Raises AssociationAbortedError (the association is then closed)."""
        try:
            command = encode_c_store_rq(message_id, sop_class_uid, sop_instance_uid)
            self.connection.send_command(context_id, command, self.peer_max_pdu)
            if isinstance(data_set, bytes):
                self._send_bytes(context_id, data_set)
            else:
                self._send_file(context_id, data_set, offset)
            return self._read_response(message_id)  # within the DIMSE timeout (SO_RCVTIMEO)
        except (OSError, EOFError, CommandError, PduError) as exc:
            self.close(abort=True)
            raise AssociationAbortedError(f"{type(exc).__name__}: {exc}") from None

    def _fragment_size(self) -> int:
        peer = self.peer_max_pdu
        return _FRAGMENT if peer <= 0 else max(1, min(_FRAGMENT, peer - 6))

    def _pdv_header(self, context_id: int, length: int, last: bool) -> bytes:
        pdv = struct.pack(">LBB", length + 2, context_id, 0x02 if last else 0x00)
        return struct.pack(">BBL", P_DATA_TF, 0, length + 6) + pdv

    def _send_bytes(self, context_id: int, data: bytes) -> None:
        size = self._fragment_size()
        view = memoryview(data)
        pos = 0
        while True:
            chunk = view[pos : pos + size]
            pos += len(chunk)
            self.sock.sendall(self._pdv_header(context_id, len(chunk), pos >= len(data)))
            self.sock.sendall(chunk)
            if pos >= len(data):
                return

    def _send_file(self, context_id: int, path: Path, offset: int) -> None:
        size = self._fragment_size()
        with open(path, "rb") as fp:
            total = os.fstat(fp.fileno()).st_size - offset
            pos = 0
            while True:
                count = min(size, total - pos)
                self.sock.sendall(self._pdv_header(context_id, count, pos + count >= total))
                done, out, src = 0, self.sock.fileno(), fp.fileno()
                while done < count:
                    sent = os.sendfile(out, src, offset + pos + done, count - done)
                    if sent == 0:
                        raise EOFError(f"{path.name} shrank while being sent")
                    done += sent
                pos += count
                if pos >= total:
                    return

    def _read_response(self, message_id: int) -> StoreResponse:
        command = bytearray()
        connection = self.connection
        while True:
            kind, length = connection.read_pdu_header()
            if kind != P_DATA_TF:
                if length > _MAX_RESPONSE:
                    raise EOFError(f"PDU of {length} bytes where a response was expected")
                connection.skip(length)
            if kind == A_ABORT:
                raise EOFError("the PACS aborted the association")
            if kind == A_RELEASE_RQ:
                with contextlib.suppress(OSError):
                    connection.send(encode_release_rp())
                raise EOFError("the PACS released the association instead of answering")
            if kind != P_DATA_TF:
                raise EOFError(f"unexpected PDU type 0x{kind:02X}")
            if length > _MAX_RESPONSE:
                raise EOFError(f"PDU of {length} bytes where a response was expected")
            for pdv in connection.pdvs(length):
                if not pdv.is_command:
                    connection.skip(pdv.length)  # a data fragment: no C-STORE-RSP has one
                    continue
                command += connection.read_exact(pdv.length)
                if pdv.is_last:
                    response = decode_response(bytes(command))
                    command = bytearray()
                    if (
                        response.command_field == C_STORE_RSP
                        and response.message_id_being_responded_to == message_id
                    ):
                        return StoreResponse(response.status, response.error_comment)

    # ------------------------------------------------------------------ ending
    def release(self, timeout: float = 10.0) -> None:
        """A-RELEASE (PS3.8 7.2): ask, wait briefly for the answer, close."""
        if not self.is_established:
            return
        try:
            kernel_timeouts(self.sock, timeout)
            self.connection.send(encode_release_rq())
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                kind, _ = self.connection.read_pdu(_MAX_RESPONSE)
                if kind in (A_RELEASE_RP, A_ABORT):
                    break
        except (OSError, EOFError):
            pass
        finally:
            self.close()

    def abort(self) -> None:
        """A-ABORT (PS3.8 7.3) and close."""
        self.close(abort=True)

    def close(self, abort: bool = False) -> None:
        if self.is_established and abort:
            self.connection.abort(source=0, reason=0)
        self.is_established = False
        self.connection.close()
