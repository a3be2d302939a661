"""The DIMSE listener (PS3.8 association acceptor) shared by the importer's SCPs.

A pynetdicom AE with our AE title, calling-AE allow-list, association limit, timeouts and
optional TLS (PS3.15 B.1); TCP_NODELAY on every accepted socket (without it each DIMSE response
waits ~40 ms for a delayed ACK, see shared/PERFORMANCE-NOTES.md). pynetdicom's process-global
``_config`` and the internals we replace are set in :mod:`adapter.dimse.pynetdicom_setup`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.events import Event, EventType
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

from adapter import metrics
from adapter.config import DimseServerConfig
from adapter.dimse.acse import NativeStorageRouter, check_request, preferred, syntax_ranks
from adapter.dimse.contexts import TIE_ORDER, verification_context
from adapter.dimse.establishment import (
    MAX_ASSOCIATE_RQ_LENGTH,
    AssociationGate,
    AssociationLimit,
    Slot,
)
from adapter.dimse.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from adapter.dimse.pdu import (
    AssociateRequest,
    PduError,
    encode_abort,
    encode_associate_rj,
    parse_associate_rq,
)
from adapter.dimse.pynetdicom_setup import RECEIVE_DIRS, discard_partial_data_set, hand_off
from adapter.dimse.storage_acceptor import AssociationStats, StorageAssociation, StorageHandler
from adapter.dimse.transport import ssl_context_for
from adapter.errors import ListenError
from adapter.part10_scan import read_file_meta
from adapter.status import Status

__all__ = ["DimseServer", "Handler", "ssl_context_for"]

log = logging.getLogger(__name__)

Handler = Callable[..., Any]

_SERVICE_OF_EVENT: dict[EventType, str] = {evt.EVT_C_ECHO: "C-ECHO", evt.EVT_C_STORE: "C-STORE"}


class _RoutingServer(ThreadedAssociationServer):
    """pynetdicom's threaded listener, whose accepted connections go to ``gate`` (from the
    accept thread, never blocking) instead of a thread each.

    Closing it does not wait for connection threads (a native association runs in one):
    DimseServer.stop drains and aborts them itself, within its timeout."""

    gate: AssociationGate | None = None
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # listen(2) backlog; socketserver's default of 5 drops bursts

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.gate is None:
            super().process_request(request, client_address)
        else:
            self.gate.add(request, client_address)


class _ReusePortServer(_RoutingServer):
    """A listener that shares its port with others (SO_REUSEPORT, same user only): the kernel
    spreads new connections over the processes listening on it."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _SharedLimitAE(AE):
    """pynetdicom's AE, whose C-MOVE sub-operations may use another calling AE title."""

    # A C-MOVE handler may name the calling AE title of its sub-operations' association
    # (``calling_ae_title`` beside ``ae_title`` in its destination kwargs): pynetdicom takes
    # the requestor's title from ``self.ae_title``, so it is overridden for this thread only.
    _calling = threading.local()

    @property
    def ae_title(self) -> str:
        own = AE.ae_title.fget(self)  # type: ignore[attr-defined]
        return getattr(self._calling, "title", None) or str(own)

    @ae_title.setter
    def ae_title(self, value: str) -> None:
        AE.ae_title.fset(self, value)  # type: ignore[attr-defined]

    def associate(self, *args: Any, calling_ae_title: str | None = None, **kwargs: Any) -> Any:
        if not calling_ae_title:
            return super().associate(*args, **kwargs)
        self._calling.title = calling_ae_title
        try:
            return super().associate(*args, **kwargs)
        finally:
            self._calling.title = None


def on_c_echo(event: Event) -> int:
    """C-ECHO (PS3.4 A.4): we are here."""
    return Status.SUCCESS


def _status_of(result: Any) -> int:
    if isinstance(result, Dataset):
        return int(result.get("Status", Status.CANNOT_UNDERSTAND))
    return int(result) if isinstance(result, int) else Status.CANNOT_UNDERSTAND


def _peer(event: Event) -> str:
    info = event.assoc.requestor
    return f"{info.address}:{info.port}"


def _counted(
    service: str, handler: Handler, stats: Callable[[Any], AssociationStats | None]
) -> Handler:
    """Wrap a non-generator handler to count its statuses (also per association) and time it."""

    def wrapper(event: Event, *args: Any) -> Any:
        start = time.perf_counter()
        assoc_stats = stats(event.assoc)
        if assoc_stats is not None and service == "C-STORE":
            with contextlib.suppress(Exception):  # data set bytes, as the native acceptor
                path = Path(event.dataset_path)
                assoc_stats.bytes += path.stat().st_size - read_file_meta(path).data_set_offset
        result = handler(event, *args)
        if assoc_stats is not None:
            assoc_stats.count(service, _status_of(result))
        metrics.DIMSE_REQUEST_DURATION_SECONDS.labels(service=service).observe(
            time.perf_counter() - start
        )
        metrics.DIMSE_REQUESTS_TOTAL.labels(
            service=service, status=metrics.dimse_status_label(_status_of(result))
        ).inc()
        return result

    return wrapper


class DimseServer:
    """A Service: the association acceptor with our handlers bound."""

    def __init__(
        self,
        config: DimseServerConfig,
        handlers: Sequence[tuple[EventType, Handler]],
        contexts: Sequence[PresentationContext],
        *,
        receive_dir: Path | None = None,
        require_called_aet: bool = False,
        name: str = "dimse",
        reuse_port: bool = False,
        storage_handler: StorageHandler | None = None,
    ) -> None:
        """``reuse_port``: share the port with other processes (multi-process receive);
        ``storage_handler``: serve storage-only associations natively (storage_acceptor.py)."""
        self.name = name
        self.reuse_port = reuse_port
        self.config = config
        self.ae = _SharedLimitAE(ae_title=config.ae_title)
        ae = self.ae
        ae.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.maximum_associations = config.max_associations
        ae.maximum_pdu_size = config.maximum_pdu_size
        ae.acse_timeout = config.acse_timeout
        ae.dimse_timeout = config.dimse_timeout
        ae.network_timeout = config.network_timeout
        ae.require_called_aet = require_called_aet
        ae.require_calling_aet = list(config.allowed_calling_aets)
        all_contexts = list(contexts)
        if not any(
            cx.abstract_syntax == verification_context().abstract_syntax for cx in all_contexts
        ):
            all_contexts.append(verification_context())
        for cx in all_contexts:
            # Accept SCP/SCU role selection (PS3.7 D.3.3.4): a C-GET requestor is the
            # Storage SCP on its own association, and a commitment requestor may propose roles.
            ae.add_supported_context(
                str(cx.abstract_syntax), cx.transfer_syntax, scu_role=True, scp_role=True
            )
        if receive_dir is not None:
            Path(receive_dir).mkdir(parents=True, exist_ok=True)
            RECEIVE_DIRS[ae] = Path(receive_dir)
        user = list(handlers)
        if evt.EVT_C_ECHO not in {event for event, _ in user}:
            user.append((evt.EVT_C_ECHO, on_c_echo))
        self._stats: dict[Any, AssociationStats] = {}  # per established association
        self._handlers: list[tuple[EventType, Handler]] = [
            (
                event,
                _counted(_SERVICE_OF_EVENT[event], h, self._stats.get)
                if event in _SERVICE_OF_EVENT
                else h,
            )
            for event, h in user
        ]
        self._handlers += [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
        ]
        self._ssl = ssl_context_for(config.tls) if config.tls.enabled else None
        self._server: Any = None
        self._established: set[int] = set()
        self._lock = threading.Lock()
        self._port: int | None = None
        self._native: NativeStorageRouter | None = None
        if storage_handler is not None and config.native_storage and self._ssl is None:
            self._native = NativeStorageRouter(
                config,
                ae,
                all_contexts,
                receive_dir,
                storage_handler,
                tie_order=TIE_ORDER,
                label=self._label,
            )
        #: Both paths' associations, counted by the listener when the A-ASSOCIATE-RQ is whole.
        self._limit = AssociationLimit(config.max_associations)
        self._gate: AssociationGate | None = None

    # ------------------------------------------------------------------ Service
    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS picked for port 0)."""
        if self._port is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._port

    def start(self) -> None:
        """Bind and serve in a background thread; returns once listening."""
        address = (self.config.bind, self.config.port)
        # What start_server does, with our server class.
        try:
            self._server = self.ae.make_server(
                address,
                evt_handlers=self._handlers,  # type: ignore[arg-type]
                ssl_context=self._ssl,
                server_class=_ReusePortServer if self.reuse_port else _RoutingServer,
            )
        except OSError as exc:
            raise ListenError("DIMSE listener", *address, exc) from None
        self._gate = AssociationGate(
            self._on_associate_rq, artim_timeout=self.config.acse_timeout, name=self.name
        )
        self._server.gate = self._gate
        self._gate.start()
        self.ae._servers.append(self._server)  # as start_server does (shutdown removes it)
        threading.Thread(
            target=self._server.serve_forever, name=f"{self.name}-acceptor", daemon=True
        ).start()
        self._port = int(self._server.server_address[1])
        log.info(
            "DIMSE listener %s on %s:%d%s%s (%d SOP classes, allow-list: %s)",
            self.config.ae_title,
            self.config.bind,
            self._port,
            " TLS" if self._ssl else "",
            " native storage" if self._native else "",
            len(self.ae.supported_contexts),
            ", ".join(self.config.allowed_calling_aets) or "any calling AE",
        )

    def stop(self, timeout: float) -> None:
        """Stop accepting, let established associations finish within ``timeout``, abort the
        rest (including connections still waiting for an A-ASSOCIATE-RQ, e.g. TCP probes)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        if self._gate is not None:
            self._gate.close()  # connections still waiting for their A-ASSOCIATE-RQ
        deadline = time.monotonic() + max(0.0, timeout)
        while (
            any(a.is_established for a in self._acceptors()) or self._native_open()
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        for native in self._native_open():
            log.warning(
                "%s: aborting an association still open at shutdown",
                self.name,
                extra={"calling_ae": native.calling_ae},
            )
            native.abort()
        for assoc in self._acceptors():
            if assoc.is_established:
                log.warning(
                    "%s: aborting an association still open at shutdown",
                    self.name,
                    extra={"calling_ae": assoc.requestor.ae_title},
                )
                assoc.abort()
            else:  # connected, never associated (e.g. a TCP probe): just drop the connection
                with contextlib.suppress(Exception):
                    assoc.dul.socket.close()
                    assoc.dul.kill_dul()

    def status(self) -> dict[str, Any]:
        """For /status: where we listen, as whom, for whom, and how busy."""
        cfg = self.config
        return {
            "kind": "listener",
            "ae_title": cfg.ae_title,
            "address": f"{cfg.bind}:{self.port}",
            "listening": self.readiness()["dimse_listener"],
            "associations_active": len(self._acceptors()) + len(self._native_open()),
            "max_associations": cfg.max_associations,
            "allowed_calling_aets": list(cfg.allowed_calling_aets) or "any",
            "tls": cfg.tls.enabled,
        }

    def readiness(self) -> dict[str, bool]:
        server = self._server
        listening = server is not None and server.socket is not None
        return {"dimse_listener": bool(listening and server.socket.fileno() >= 0)}

    def _acceptors(self) -> list[Any]:
        return [a for a in self.ae.active_associations if a.is_acceptor and a.is_alive()]

    def _native_open(self) -> list[StorageAssociation]:
        return self._native.open_associations() if self._native is not None else []

    # ------------------------------------------------------------------ establishment
    def _on_associate_rq(
        self, sock: socket.socket, address: tuple[str, int], data: bytes
    ) -> bytes | None:
        """A whole A-ASSOCIATE-RQ (in the gate's thread): a PDU refusing it, or None once an
        association slot is taken and a thread serves it, natively or through pynetdicom."""
        peer = f"{address[0]}:{address[1]}"
        try:
            request = parse_associate_rq(data)
        except PduError as exc:
            log.warning("malformed A-ASSOCIATE-RQ (%s): aborting", exc, extra={"peer": peer})
            return encode_abort(source=2, reason=6)  # invalid PDU parameter value
        extra = {"calling_ae": request.calling_ae, "called_ae": request.called_ae, "peer": peer}
        label = self._label(request.calling_ae)
        refusal = check_request(request)
        if refusal is None and (slot := self._limit.reserve()) is not None:
            threading.Thread(
                target=self._serve_connection,
                args=(sock, address, data, request, slot),
                name=f"{self.name}-association",
                daemon=True,
            ).start()
            return None
        reason = (
            refusal.reason
            if refusal
            else f"local limit exceeded ({self._limit.maximum} associations)"
        )
        log.warning("association rejected: %s", reason, extra=extra)
        metrics.ASSOCIATIONS_TOTAL.labels(calling_ae=label, outcome="rejected").inc()
        return refusal.pdu if refusal else encode_associate_rj(2, 3, 2)  # transient, local limit

    def _serve_connection(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        data: bytes,
        request: AssociateRequest,
        slot: Slot,
    ) -> None:
        """One association's thread: the native acceptor serves it, or pynetdicom's (whose
        threads then hold the slot)."""
        try:
            if self._native is not None and self._native.serve(sock, address, request):
                return
            limit = self.config.maximum_pdu_size
            assoc = hand_off(
                self._server,
                sock,
                address,
                data,
                pdu_timeout=self.config.network_timeout,
                pdu_limit=max(limit, MAX_ASSOCIATE_RQ_LENGTH) if limit else 0,
            )
            slot.follow(assoc)
        except Exception as exc:  # never a bare close nor a traceback on stderr
            log.error(
                "association failed (%s): aborting",
                type(exc).__name__,
                extra={"calling_ae": request.calling_ae, "peer": f"{address[0]}:{address[1]}"},
            )
            with contextlib.suppress(OSError):
                sock.sendall(encode_abort(source=2, reason=0))
            with contextlib.suppress(OSError):
                sock.close()
        finally:
            if slot.thread is None:
                slot.release()

    # ------------------------------------------------------------------ events
    def _label(self, ae_title: str) -> str:
        return ae_title if ae_title in self.config.allowed_calling_aets else "other"

    def _on_conn_open(self, event: Event) -> None:
        assoc_socket = event.assoc.dul.socket
        sock = assoc_socket.socket if assoc_socket is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_requested(self, event: Event) -> None:
        """Take each file as the requestor has it (PS3.8 9.3.2.2 leaves the choice to us).

        pynetdicom accepts, per context, the first of *our* syntaxes that was proposed, with one
        order per SOP class; so order ours by the best position each syntax has in any of the
        requestor's contexts for that class, ties going to compressed ones: a context proposing
        (JPEG-LS, Explicit VR LE) gets JPEG-LS, one proposing (Explicit, Implicit) gets Explicit.
        """
        request = event.assoc.requestor.primitive
        if request is None:
            return
        ranks = syntax_ranks(
            (str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax])
            for cx in request.presentation_context_definition_list
        )
        for cx in event.assoc.acceptor.supported_contexts:
            rank = ranks.get(str(cx.abstract_syntax or ""))
            if rank and len(cx.transfer_syntax) > 1:
                ours = [str(ts) for ts in cx.transfer_syntax]
                cx.transfer_syntax = list(preferred(ours, rank, TIE_ORDER))

    def _on_established(self, event: Event) -> None:
        with self._lock:
            self._established.add(id(event.assoc))
            self._stats[event.assoc] = AssociationStats()
        metrics.ASSOCIATIONS_ACTIVE.inc()
        calling = event.assoc.requestor.ae_title
        metrics.ASSOCIATIONS_TOTAL.labels(calling_ae=self._label(calling), outcome="accepted").inc()
        log.debug("association accepted", extra={"calling_ae": calling, "peer": _peer(event)})

    def _on_rejected(self, event: Event) -> None:
        rq = event.assoc.requestor
        calling, called = rq.ae_title, getattr(rq.primitive, "called_ae_title", None)
        allowed = self.config.allowed_calling_aets
        # pynetdicom checks the called AE title last, so its reason wins (PS3.8 Table 9-21)
        if self.ae.require_called_aet and str(called or "").strip() != self.config.ae_title:
            reason = f"called AE title not recognized (we are {self.config.ae_title})"
        elif allowed and calling not in allowed:
            reason = "calling AE title not recognized"
        else:
            reason = f"local limit exceeded ({self.config.max_associations} associations)"
        metrics.ASSOCIATIONS_TOTAL.labels(calling_ae=self._label(calling), outcome="rejected").inc()
        log.warning(
            "association rejected: %s",
            reason,
            extra={"calling_ae": calling, "called_ae": called, "peer": _peer(event)},
        )

    def _on_aborted(self, event: Event) -> None:
        if id(event.assoc) in self._established:
            calling = event.assoc.requestor.ae_title
            metrics.ASSOCIATIONS_TOTAL.labels(
                calling_ae=self._label(calling), outcome="aborted"
            ).inc()

    def _on_conn_close(self, event: Event) -> None:
        with self._lock:
            was_open = id(event.assoc) in self._established
            self._established.discard(id(event.assoc))
            stats = self._stats.pop(event.assoc, None)
        if was_open:
            metrics.ASSOCIATIONS_ACTIVE.dec()
        if stats is not None:
            aborted = bool(getattr(event.assoc, "is_aborted", False))
            stats.log_end(event.assoc.requestor.ae_title, _peer(event), aborted)
        event.assoc._adapter_conn_closed = True  # type: ignore[attr-defined]
        # A data set cut off by an abort stays behind in pynetdicom's chunked file: remove it.
        discard_partial_data_set(event.assoc)
