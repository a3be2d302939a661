"""C-STORE SCU (PS3.4 Annex B) to one PACS over a small pool of reusable associations.

Each instance is offered in its own transfer syntax and, in a second presentation context, in the
uncompressed ones (PS3.5 A.2, A.1). When the PACS takes only the latter, the SCU says so
(:class:`ConversionNeeded`, with the syntaxes accepted) and its converter -- the transcoding
stage's transcoder, in its worker processes -- makes the copy it sends: one place decides and
does conversions.
Sockets set TCP_NODELAY (about 40 ms per DIMSE message without it, see PERFORMANCE-NOTES).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode
from pynetdicom.status import code_to_category

from adapter.dimse.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from adapter.dimse.store_requestor import (
    AssociationAbortedError,
    AssociationRejectedError,
    ConnectFailedError,
    StoreAssociation,
)
from adapter.errors import PermanentError, TransientError
from adapter.part10_scan import FileMeta, read_file_meta
from adapter.status import Status

__all__ = [
    "FALLBACK_TRANSFER_SYNTAXES",
    "MAX_CONTEXTS",
    "ConversionNeeded",
    "Converter",
    "StoreScu",
    "classify_store_status",
]

log = logging.getLogger(__name__)

FALLBACK_TRANSFER_SYNTAXES: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1-255
MAX_PDU_LENGTH = 262144  # what we receive (PS3.8 D.1): responses are a few hundred bytes
# Processing failure, resource limitation, cancel: worth another try (bounded by the caller).
_TRANSIENT_FAILURES = frozenset(
    {Status.PROCESSING_FAILURE, Status.RESOURCE_LIMITATION, Status.CANCEL}
)

ContextKey = tuple[str, tuple[str, ...]]
Outcome = Literal["success", "warning", "transient", "permanent"]


def classify_store_status(status: int) -> Outcome:
    """Success/Warning deliver; 0xA7xx, 0x0110, 0x0213, 0xFE00 are worth a retry; other failures
    (0x0122, 0x0117, 0x0124, 0xA9xx, 0xCxxx) are not (PS3.4 B.2.3, PS3.7 C)."""
    category = code_to_category(status)
    if category == "Success":
        return "success"
    if category == "Warning":
        return "warning"
    if 0xA700 <= status <= 0xA7FF or status in _TRANSIENT_FAILURES:
        return "transient"
    return "permanent"


class _NoResponseError(TransientError):
    """The association broke or timed out while a C-STORE awaited its response."""


class ConversionNeeded(Exception):  # noqa: N818 - a decision, not a failure
    """The PACS took the SOP class only in ``accepted`` (preferred first), not in ``source``."""

    def __init__(self, sop_class: UID, source: UID, accepted: Sequence[UID]) -> None:
        super().__init__(f"{sop_class.name}: {source.name} not accepted")
        self.sop_class, self.source, self.accepted = sop_class, source, tuple(accepted)


class Converter(Protocol):
    """Makes a temporary copy of an instance in one of ``syntaxes`` (tried in order); raises
    PermanentError naming why it cannot (no decoder, an unsupported image)."""

    def copy_in(self, path: Path, syntaxes: Sequence[str]) -> AbstractContextManager[Path]: ...

    def close(self) -> None: ...


GROW_ACSE_TIMEOUT = 5.0  # seconds to wait for a PACS to answer an extra association
CEILING_RETRY = 300.0  # seconds before a capped pool tries its full size again


@dataclass
class _Link:
    """One pooled association and the presentation contexts it proposed."""

    assoc: StoreAssociation | None = None
    proposed: frozenset[ContextKey] = frozenset()
    last_used: float = 0.0
    msg_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def established(self) -> bool:
        return self.assoc is not None and bool(self.assoc.is_established)

    def next_msg_id(self) -> int:
        return (next(self.msg_ids) - 1) % 0xFFFF + 1

    def drop(self, abort: bool = False) -> None:
        """Release (or abort) the association; the link can be associated again later."""
        assoc, self.assoc, self.proposed = self.assoc, None, frozenset()
        if assoc is not None and assoc.is_established:
            try:
                assoc.abort() if abort else assoc.release()
            except Exception:  # a peer that vanished mid-release: nothing more to do
                log.debug("closing association failed", exc_info=True)
        elif assoc is not None:
            assoc.close()


_DISCARDED = _Link()  # marks a link dropped from the pool (not handed back)


class StoreScu:
    """Sends Part-10 files by C-STORE to one PACS, over at most ``pool_size`` associations.

    Associations are kept open between instances and re-negotiated when an instance needs a
    SOP class / transfer syntax they did not propose, when idle too long, or after an abort.
    """

    def __init__(
        self,
        ae_title: str,
        host: str,
        port: int,
        *,
        calling_ae_title: str = "EXPORTADAPTER",
        pool_size: int = 4,
        acse_timeout: float = 30.0,
        dimse_timeout: float = 120.0,
        network_timeout: float = 120.0,
        connection_timeout: float = 10.0,
        idle_timeout: float = 20.0,
        checkout_timeout: float | None = None,
        converter: Converter | None = None,
    ) -> None:
        """``converter``: makes the copies a PACS needs in another syntax (default: the
        process's transcoder, started on the first conversion)."""
        self.ae_title, self.host, self.port = ae_title, host, port
        self._converter = converter
        self.pool_size = pool_size
        self.idle_timeout = idle_timeout
        self.checkout_timeout = checkout_timeout if checkout_timeout is not None else dimse_timeout
        self.calling_ae_title = calling_ae_title
        self.acse_timeout = acse_timeout
        # Growing the pool past one association uses a short ACSE timeout: a PACS that serves
        # one association at a time never answers the extra ones (dcmtk storescp without
        # --fork), and must not cost a full acse_timeout per try.
        self.grow_acse_timeout = min(acse_timeout, GROW_ACSE_TIMEOUT)
        self.dimse_timeout = dimse_timeout
        self.network_timeout = network_timeout
        self.connection_timeout = connection_timeout
        self._ceiling = pool_size  # lowered when the PACS will not serve more associations
        self._capped_at = 0.0  # the full pool is tried again CEILING_RETRY seconds later
        self._cond = threading.Condition()
        self._idle: list[_Link] = []
        self._links = 0
        self._live: list[_Link] = []  # every link counted in _links (identity, not equality)
        self._known: OrderedDict[ContextKey, None] = OrderedDict()
        self._closed = False

    @property
    def peer(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    # ------------------------------------------------------------------------------ public
    def send_file(self, path: Path | str) -> int:
        """C-STORE one Part-10 file; returns the Success or Warning status.

        Raises TransientError (PACS down/busy, 0xA7xx, abort, timeout) or PermanentError
        (SOP class refused, 0xA9xx/0xCxxx, no decoder for a needed conversion).
        """
        path = Path(path)
        try:
            return self._send(path)
        except ConversionNeeded as exc:
            need = exc
        what = (
            f"C-STORE to {self.peer}: the PACS accepted {need.sop_class.name} only in "
            f"{need.accepted[0].name}, not {need.source.name}"
        )
        fallback = (str(need.sop_class), tuple(str(t) for t in FALLBACK_TRANSFER_SYNTAXES))
        with contextlib.ExitStack() as stack:
            try:
                converted = stack.enter_context(
                    self.converter.copy_in(path, [str(ts) for ts in need.accepted])
                )
            except PermanentError as exc:
                raise PermanentError(f"{what}; {exc}") from None
            log.info("converted %s from %s for %s", path.name, need.source.name, self.peer)
            return self._send(converted, frozenset({fallback}))
        raise AssertionError("unreachable")  # pragma: no cover - mypy: ExitStack may swallow

    @property
    def converter(self) -> Converter:
        """The converter, the process's transcoder by default (acquired on first use)."""
        with self._cond:
            if self._converter is None:
                from adapter.stages.transcoder import SyntaxConverter

                self._converter = SyntaxConverter()
            return self._converter

    def _send(self, path: Path, needed: frozenset[ContextKey] | None = None) -> int:
        """C-STORE ``path``; ``needed``: the contexts to propose (default: its own syntax and
        the uncompressed fallbacks). Raises ConversionNeeded, with the association kept."""
        meta = read_file_meta(path)
        offset = meta.data_set_offset
        sop_class = UID(meta.media_storage_sop_class_uid)
        transfer_syntax = UID(meta.transfer_syntax_uid)
        # A data set has an even length (PS3.5 A.5 pads a deflated stream; dcmtk refuses odd
        # PDV fragments): an unpadded file is re-encoded by pynetdicom, which pads.
        odd = (path.stat().st_size - offset) % 2 == 1
        needed = needed or self._contexts_for(sop_class, transfer_syntax)
        retried = False
        while True:  # ends: each retry either caps the pool (bounded) or is the one retry
            link = self._checkout(needed)
            reused = False
            try:
                reused = self._ensure(link, needed)
                status = self._store(link, path, meta, offset, odd)
            except _NoResponseError:
                link.drop(abort=True)
                if reused and not retried:  # a kept-open association the PACS had dropped
                    retried = True
                    log.info("kept-open association to %s failed; retrying on a new one", self.peer)
                    continue
                raise
            except TransientError:
                if link.established or not self._cap_pool(link):
                    raise
                link = _DISCARDED
                continue  # the PACS serves fewer associations: wait for an open one
            finally:
                if link is not _DISCARDED:
                    self._checkin(link)
            return status

    def close(self) -> None:
        """Release every idle association; busy ones are released when handed back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._links -= len(idle)
            self._live = [link for link in self._live if all(link is not i for i in idle)]
            self._cond.notify_all()
        for link in idle:
            link.drop()
        converter, self._converter = self._converter, None
        if converter is not None:
            converter.close()

    # ------------------------------------------------------------------------------ pool
    @staticmethod
    def _contexts_for(sop_class: UID, transfer_syntax: UID) -> frozenset[ContextKey]:
        """The instance's own syntax alone, plus the uncompressed fallbacks in one context."""
        return frozenset(
            {
                (str(sop_class), (str(transfer_syntax),)),
                (str(sop_class), tuple(str(ts) for ts in FALLBACK_TRANSFER_SYNTAXES)),
            }
        )

    def _checkout(self, needed: frozenset[ContextKey]) -> _Link:
        deadline = time.monotonic() + self.checkout_timeout
        with self._cond:
            for key in sorted(needed):
                self._known[key] = None
                self._known.move_to_end(key)
            while len(self._known) > MAX_CONTEXTS:
                self._known.popitem(last=False)
            while True:
                if self._closed:
                    raise TransientError(f"C-STORE to {self.peer}: the SCU is shutting down")
                for link in self._idle:
                    if needed <= link.proposed:
                        self._idle.remove(link)
                        return link
                if self._idle:
                    return self._idle.pop(0)
                if self._ceiling < self.pool_size and (
                    time.monotonic() - self._capped_at > CEILING_RETRY
                ):
                    self._ceiling = self.pool_size
                # Grow only once an association is up: the first attempt is alone, and an
                # extra one that the PACS does not serve is then recognised as such.
                up = self._links == 0 or any(link.established for link in self._live)
                if self._links < self._ceiling and up:
                    self._links += 1
                    link = _Link()
                    self._live.append(link)
                    return link
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransientError(
                        f"C-STORE to {self.peer}: no free association within "
                        f"{self.checkout_timeout:.0f}s (pool of {self.pool_size})"
                    )
                self._cond.wait(remaining)

    def _cap_pool(self, link: _Link) -> bool:
        """``link`` was not served while another association is open: drop it and cap the pool
        at the associations still open (PS3.8 leaves how many a PACS serves to the PACS).
        False when no other association is open (the PACS is down or slow, not full)."""
        with self._cond:
            if not any(other is not link and other.established for other in self._live):
                return False
            self._live = [other for other in self._live if other is not link]
            self._links -= 1
            self._ceiling = max(1, self._links)
            self._capped_at = time.monotonic()
            self._cond.notify_all()
        log.warning(
            "%s did not serve an extra association; using at most %d", self.peer, self._ceiling
        )
        return True

    def _checkin(self, link: _Link) -> None:
        link.last_used = time.monotonic()
        with self._cond:
            if self._closed:
                self._links -= 1
                self._live = [other for other in self._live if other is not link]
            else:
                self._idle.append(link)
            self._cond.notify()
        if self._closed:
            link.drop()

    def _ensure(self, link: _Link, needed: frozenset[ContextKey]) -> bool:
        """Make ``link`` an association that proposed ``needed``; True if it was kept open."""
        fresh_enough = time.monotonic() - link.last_used < self.idle_timeout
        if link.established and needed <= link.proposed and fresh_enough:
            return True
        link.drop()
        with self._cond:
            keys = list(self._known)[-MAX_CONTEXTS:]
            acse = self.grow_acse_timeout if self._links > 1 else self.acse_timeout
        where = f"association with {self.peer}"
        try:
            assoc = StoreAssociation.request(
                self.host,
                self.port,
                called_ae=self.ae_title,
                calling_ae=self.calling_ae_title,
                contexts=keys,
                connection_timeout=self.connection_timeout,
                acse_timeout=acse,
                network_timeout=self.network_timeout,
                dimse_timeout=self.dimse_timeout,
                max_pdu_length=MAX_PDU_LENGTH,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            )
        except ConnectFailedError:
            raise TransientError(
                f"{where} failed: cannot connect (PACS down or unreachable?)"
            ) from None
        except AssociationRejectedError as exc:
            if exc.result == 0x01:  # rejected-permanent (PS3.8 7.1.1.9)
                raise PermanentError(
                    f"{where} rejected ({exc}): check destination.ae_title and that the PACS "
                    "knows our calling AE title"
                ) from None
            raise TransientError(f"{where} rejected ({exc})") from None
        except AssociationAbortedError as exc:
            raise TransientError(f"{where} failed: {exc}") from None
        if not assoc.accepted:
            assoc.abort()  # PS3.8 9.3.3.2: every context refused
            refused = sorted(UID(a).name for a in assoc.rejected)
            raise PermanentError(
                f"{where}: the PACS accepted no presentation context for "
                f"{', '.join(refused)} (SOP class or transfer syntaxes not supported)",
                failure_reason=Status.SOP_CLASS_NOT_SUPPORTED,
            )
        link.assoc, link.proposed = assoc, frozenset(keys)
        with self._cond:
            self._cond.notify_all()  # the pool may grow now
        return False

    # ------------------------------------------------------------------------------ C-STORE
    def _store(self, link: _Link, path: Path, meta: FileMeta, offset: int, odd: bool) -> int:
        assoc = link.assoc
        assert assoc is not None
        sop_class = UID(meta.media_storage_sop_class_uid)
        transfer_syntax = UID(meta.transfer_syntax_uid)
        abstract = str(sop_class)
        exact = assoc.accepted.get((abstract, str(transfer_syntax)))
        others = [(ts, cx) for (a, ts), cx in assoc.accepted.items() if a == abstract]
        if exact is not None:
            context_id = exact
            data: Path | bytes = _encoded(dcmread(path), transfer_syntax) if odd else path
        elif others:
            order = {str(ts): i for i, ts in enumerate(FALLBACK_TRANSFER_SYNTAXES)}
            accepted = sorted((ts for ts, _ in others), key=lambda ts: order.get(ts, len(order)))
            raise ConversionNeeded(sop_class, transfer_syntax, [UID(ts) for ts in accepted])
        else:
            raise PermanentError(
                f"C-STORE to {self.peer}: the PACS accepted no presentation context for "
                f"{sop_class.name} ({sop_class}) in {transfer_syntax.name} or uncompressed",
                failure_reason=Status.SOP_CLASS_NOT_SUPPORTED,
            )
        try:
            rsp = assoc.send_c_store(
                link.next_msg_id(),
                context_id,
                abstract,
                meta.media_storage_sop_instance_uid,
                data,
                offset,
            )
        except AssociationAbortedError as exc:
            raise _NoResponseError(
                f"C-STORE to {self.peer}: no response (timeout, abort or invalid reply: {exc})",
                in_flight=True,  # counts towards the poison bound (the PACS died on it?)
            ) from None
        status = rsp.status
        outcome = classify_store_status(status)
        if outcome in ("success", "warning"):
            return status
        comment = f" ({rsp.error_comment})" if rsp.error_comment else ""
        message = f"C-STORE to {self.peer} failed with status 0x{status:04X}{comment}"
        if outcome == "transient":
            raise TransientError(message)
        raise PermanentError(message, failure_reason=status)


def _encoded(ds: Dataset, syntax: UID) -> bytes:
    """The data set encoded in ``syntax`` (values padded to even length)."""
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if data is None:
        raise PermanentError(f"cannot encode the data set in {syntax.name}")
    return data
