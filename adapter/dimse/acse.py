"""Association establishment (PS3.8 7.1, 9.3.2-9.3.4): the checks every A-ASSOCIATE-RQ passes,
whether the native acceptor can serve it, and the negotiation of its presentation contexts.

Anything the native path does not serve -- other SOP classes, role selection, user identity, a
wrong application context, a calling AE outside the allow-list -- goes to pynetdicom, which then
answers (and rejects) as it always has; ``peek_pdu`` looks at a PDU without consuming it.
"""

from __future__ import annotations

import logging
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import AE
from pynetdicom.presentation import PresentationContext

from adapter import metrics
from adapter.config import DimseServerConfig
from adapter.dimse.contexts import STORAGE_SOP_CLASSES, VERIFICATION_SOP_CLASS
from adapter.dimse.pdu import (
    A_ASSOCIATE_RQ,
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    APPLICATION_CONTEXT_NAME,
    PLAIN_USER_ITEMS,
    TRANSFER_SYNTAXES_NOT_SUPPORTED,
    AssociateRequest,
    encode_abort,
    encode_associate_rj,
)
from adapter.dimse.storage_acceptor import AcceptorSettings, StorageAssociation, StorageHandler

__all__ = [
    "NativeStorageRouter",
    "Refusal",
    "check_request",
    "negotiate",
    "peek_pdu",
    "preferred",
    "syntax_ranks",
]

log = logging.getLogger(__name__)


def syntax_ranks(proposed: Iterable[tuple[str, Sequence[str]]]) -> dict[str, dict[str, int]]:
    """Per abstract syntax, each transfer syntax's best position in any context proposing it."""
    ranks: dict[str, dict[str, int]] = {}
    for abstract, syntaxes in proposed:
        rank = ranks.setdefault(abstract, {})
        for i, ts in enumerate(syntaxes):
            rank[ts] = min(i, rank.get(ts, i))
    return ranks


def preferred(
    ours: Iterable[str], rank: Mapping[str, int], tie_order: Mapping[str, int]
) -> list[str]:
    """Our syntaxes for one abstract syntax, the requestor's preference first (PS3.8 9.3.3.2
    leaves the choice to us), ties going by ``tie_order``: both acceptor paths choose by it."""
    return sorted(ours, key=lambda ts: (rank.get(ts, 99), tie_order.get(ts, 99)))


def negotiate(
    request: AssociateRequest,
    supported: Mapping[str, tuple[str, ...]],
    tie_order: Mapping[str, int],
) -> dict[int, tuple[int, str]]:
    """Per proposed context id: (result, transfer syntax) (PS3.8 9.3.3.2).

    For each abstract syntax our syntaxes are ordered by :func:`preferred`, and each context
    gets the first of that order it proposed -- the same choice as DimseServer's pynetdicom path.
    """
    ranks = syntax_ranks((cx.abstract_syntax, cx.transfer_syntaxes) for cx in request.contexts)
    results: dict[int, tuple[int, str]] = {}
    for cx in request.contexts:
        first = cx.transfer_syntaxes[0] if cx.transfer_syntaxes else ""
        ours = supported.get(cx.abstract_syntax)
        if ours is None:
            results[cx.id] = (ABSTRACT_SYNTAX_NOT_SUPPORTED, first)
            continue
        ordered = preferred(ours, ranks[cx.abstract_syntax], tie_order)
        proposed = set(cx.transfer_syntaxes)
        chosen = next((ts for ts in ordered if ts in proposed), None)
        results[cx.id] = (
            (ACCEPTANCE, chosen) if chosen else (TRANSFER_SYNTAXES_NOT_SUPPORTED, first)
        )
    return results


def peek_pdu(sock: socket.socket, timeout: float, limit: int) -> bytes | None:
    """The first PDU on ``sock`` without consuming it (MSG_PEEK), if it is an A-ASSOCIATE-RQ
    of at most ``limit`` bytes that arrives within ``timeout``; else None (nothing consumed)."""
    deadline = time.monotonic() + timeout
    want = 6
    known = False  # the header was read: ``want`` is the whole PDU
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(min(left, 0.5))
        try:
            data = sock.recv(want, socket.MSG_PEEK | socket.MSG_WAITALL)
        except TimeoutError:
            continue
        except OSError:
            return None
        if not data:
            return None  # closed before anything came: let the full stack see and log it
        if len(data) >= 6 and not known:
            kind, _, length = struct.unpack(">BBL", data[:6])
            if kind != A_ASSOCIATE_RQ or length + 6 > limit:
                return None
            want, known = 6 + length, True
            continue
        if len(data) >= want:
            return data[:want]
        time.sleep(0.002)  # a partial peek: more is on its way


#: Bytes an AE title may hold (PS3.5 6.2, AE: the default repertoire without backslash and
#: control characters; space only as padding).
_AE_BYTES = frozenset(range(0x20, 0x7F)) - {0x5C}


def _valid_ae(raw: bytes) -> bool:
    return bool(raw.strip(b" ")) and set(raw.rstrip(b" ")) <= _AE_BYTES


@dataclass(frozen=True)
class Refusal:
    """Why an A-ASSOCIATE-RQ is not answered with an A-ASSOCIATE-AC, and the PDU that says so."""

    reason: str
    pdu: bytes


def check_request(request: AssociateRequest) -> Refusal | None:
    """What every A-ASSOCIATE-RQ must satisfy on both acceptor paths (PS3.8 9.3.2, PS3.5 6.2):
    protocol version 1, a User Information Item, AE titles of the AE repertoire."""
    if not request.protocol_version & 0x0001:
        return Refusal(
            f"protocol version 0x{request.protocol_version:04X} not supported",
            encode_associate_rj(1, 2, 2),  # permanent, ACSE, protocol version not supported
        )
    if not request.has_user_information:
        return Refusal("no User Information Item", encode_abort(source=2, reason=6))
    if not _valid_ae(request.raw_calling_ae):
        return Refusal("calling AE title not recognized (not an AE title)", _RJ_CALLING)
    if not _valid_ae(request.raw_called_ae):
        return Refusal("called AE title not recognized (not an AE title)", _RJ_CALLED)
    return None


_RJ_CALLING = encode_associate_rj(1, 1, 3)  # permanent, service user, calling AE title
_RJ_CALLED = encode_associate_rj(1, 1, 7)  # permanent, service user, called AE title


class NativeStorageRouter:
    """Serves storage-only associations on the listener's connection threads; the association
    limit and the checks every request passes are the listener's (DimseServer)."""

    def __init__(
        self,
        config: DimseServerConfig,
        ae: AE,
        contexts: Sequence[PresentationContext],
        receive_dir: Path | None,
        handler: StorageHandler,
        *,
        tie_order: Mapping[str, int],
        label: Callable[[str], str],
    ) -> None:
        """``label``: calling AE -> metric label."""
        self.config, self.ae, self.handler = config, ae, handler
        self._label = label
        natives = {*STORAGE_SOP_CLASSES, VERIFICATION_SOP_CLASS}
        supported = {
            str(cx.abstract_syntax): tuple(str(ts) for ts in cx.transfer_syntax)
            for cx in contexts
            if str(cx.abstract_syntax) in natives
        }
        #: Abstract syntaxes we serve only through pynetdicom (query/retrieve, commitment).
        self.full_stack_only = {str(cx.abstract_syntax) for cx in contexts} - set(supported)
        self.settings = AcceptorSettings(
            ae_title=config.ae_title,
            max_pdu_length=config.maximum_pdu_size,
            network_timeout=config.network_timeout,
            implementation_class_uid=str(ae.implementation_class_uid),
            implementation_version_name=str(ae.implementation_version_name or ""),
            receive_dir=Path(receive_dir or tempfile.gettempdir()),
            supported=supported,
            tie_order=tie_order,
        )
        self._lock = threading.Lock()
        self._open: set[StorageAssociation] = set()

    def open_associations(self) -> list[StorageAssociation]:
        with self._lock:
            return [a for a in self._open if not a.closed.is_set()]

    def _serves(self, request: AssociateRequest) -> bool:
        allowed = self.config.allowed_calling_aets
        return not (
            request.application_context != APPLICATION_CONTEXT_NAME
            or not request.user_item_types <= PLAIN_USER_ITEMS
            or (allowed and request.calling_ae not in allowed)
            or (self.ae.require_called_aet and request.called_ae != self.config.ae_title)
            or any(cx.abstract_syntax in self.full_stack_only for cx in request.contexts)
        )

    def serve(
        self, sock: socket.socket, address: tuple[str, int], request: AssociateRequest
    ) -> bool:
        """Serve the association natively (True, when it ends), or decline (False: the socket
        is untouched, its A-ASSOCIATE-RQ already read by the listener)."""
        if not self._serves(request):
            return False
        results = negotiate(request, self.settings.supported, self.settings.tie_order)
        if not any(result == ACCEPTANCE for result, _ in results.values()):
            return False
        peer = f"{address[0]}:{address[1]}"
        extra = {"calling_ae": request.calling_ae, "peer": peer}
        label = self._label(request.calling_ae)
        assoc = StorageAssociation(sock, peer, request, results, self.settings, self.handler)
        with self._lock:
            self._open.add(assoc)
        metrics.ASSOCIATIONS_ACTIVE.inc()
        metrics.ASSOCIATIONS_TOTAL.labels(calling_ae=label, outcome="accepted").inc()
        log.debug("association accepted (native storage)", extra=extra)
        try:
            assoc.serve()
        finally:
            with self._lock:
                self._open.discard(assoc)
            metrics.ASSOCIATIONS_ACTIVE.dec()
            if assoc.aborted_by_peer:
                metrics.ASSOCIATIONS_TOTAL.labels(calling_ae=label, outcome="aborted").inc()
        return True
