"""Association establishment for the native storage acceptor (PS3.8 7.1, 9.3.2-9.3.4): look
at an A-ASSOCIATE-RQ without consuming it, decide whether the native acceptor can serve it, and
negotiate its presentation contexts.

Anything the native path does not serve -- other SOP classes, role selection, user identity, a
wrong application context, a calling AE outside the allow-list, a malformed PDU -- is left
untouched on the socket for pynetdicom, which then answers (and rejects) as it always has.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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
    PduError,
    encode_associate_rj,
    parse_associate_rq,
)
from adapter.dimse.storage_acceptor import AcceptorSettings, StorageAssociation, StorageHandler

__all__ = ["NativeStorageRouter", "negotiate", "peek_pdu"]

log = logging.getLogger(__name__)

_MAX_RQ = 1 << 20  # a larger A-ASSOCIATE-RQ goes to pynetdicom


def negotiate(
    request: AssociateRequest,
    supported: Mapping[str, tuple[str, ...]],
    tie_order: Mapping[str, int],
) -> dict[int, tuple[int, str]]:
    """Per proposed context id: (result, transfer syntax) (PS3.8 9.3.3.2).

    The requestor's preference wins (PS3.8 leaves the choice to us): for each abstract syntax our
    syntaxes are ranked by their best position in any of its contexts, ties going to compressed
    ones, and each context gets the first of that ranking it proposed -- the same choice as
    DimseServer's pynetdicom path.
    """
    ranks: dict[str, dict[str, int]] = {}
    for cx in request.contexts:
        rank = ranks.setdefault(cx.abstract_syntax, {})
        for i, ts in enumerate(cx.transfer_syntaxes):
            rank[ts] = min(i, rank.get(ts, i))
    results: dict[int, tuple[int, str]] = {}
    for cx in request.contexts:
        first = cx.transfer_syntaxes[0] if cx.transfer_syntaxes else ""
        ours = supported.get(cx.abstract_syntax)
        if ours is None:
            results[cx.id] = (ABSTRACT_SYNTAX_NOT_SUPPORTED, first)
            continue
        rank = ranks[cx.abstract_syntax]
        ordered = sorted(ours, key=lambda ts: (rank.get(ts, 99), tie_order.get(ts, 99)))
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


class NativeStorageRouter:
    """Serves storage-only associations on the listener's connection threads and keeps count
    of them (the association limit covers both paths)."""

    def __init__(
        self,
        config: DimseServerConfig,
        ae: AE,
        contexts: Sequence[PresentationContext],
        receive_dir: Path | None,
        handler: StorageHandler,
        *,
        tie_order: Mapping[str, int],
        others: Callable[[], int],
        label: Callable[[str], str],
    ) -> None:
        """``others``: associations pynetdicom serves now; ``label``: calling AE -> metric label."""
        self.config, self.ae, self.handler = config, ae, handler
        self._others, self._label = others, label
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

    def route(self, sock: socket.socket, address: tuple[str, int]) -> bool:
        """Serve the connection natively (True, when it ends), or leave it untouched (False)."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = peek_pdu(sock, self.config.acse_timeout, limit=_MAX_RQ)
        if data is None:
            return False
        try:
            request = parse_associate_rq(data)
        except PduError:
            return False
        if not self._serves(request):
            return False
        results = negotiate(request, self.settings.supported, self.settings.tie_order)
        if not any(result == ACCEPTANCE for result, _ in results.values()):
            return False
        sock.settimeout(self.config.acse_timeout)
        remaining = len(data)
        while remaining:  # consume what was peeked
            chunk = sock.recv(remaining)
            if not chunk:
                return True
            remaining -= len(chunk)
        peer = f"{address[0]}:{address[1]}"
        extra = {"calling_ae": request.calling_ae, "peer": peer}
        label = self._label(request.calling_ae)
        if len(self.open_associations()) + self._others() >= self.config.max_associations:
            log.warning(
                "association rejected: local limit exceeded (%d associations)",
                self.config.max_associations,
                extra=extra,
            )
            metrics.ASSOCIATIONS_TOTAL.labels(calling_ae=label, outcome="rejected").inc()
            with contextlib.suppress(OSError):
                sock.sendall(encode_associate_rj(2, 3, 2))  # transient, local limit exceeded
                sock.close()
            return True
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
