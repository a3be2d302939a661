"""Association establishment on the listener (PS3.8 7.1, 9.1.5 ARTIM, 9.2 Sta2): every accepted
connection waits in one selector thread until its A-ASSOCIATE-RQ is complete, or its deadline
passes, before it takes a thread or an association slot.

One deadline per connection, from TCP accept, covers the TLS handshake (PS3.15 B.1) and the
A-ASSOCIATE-RQ (the ARTIM timer, ``acse_timeout``); a peer that closes early is dropped at once.
The A-ASSOCIATE-RQ is bounded (:data:`MAX_ASSOCIATE_RQ_LENGTH`) and so is the number of waiting
connections (:data:`MAX_PENDING_CONNECTIONS`, the oldest goes first): a flood of connections
that never associate costs one thread, no CPU while idle and bounded memory, and cannot starve
a well-behaved peer, whose A-ASSOCIATE-RQ arrives within milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from adapter.dimse.pdu import A_ABORT, A_ASSOCIATE_RQ, encode_abort

__all__ = [
    "MAX_ASSOCIATE_RQ_LENGTH",
    "MAX_PENDING_CONNECTIONS",
    "AssociationGate",
    "AssociationLimit",
    "Slot",
]

log = logging.getLogger(__name__)

#: The largest A-ASSOCIATE-RQ read (PDU length field, PS3.8 9.3.2): 128 presentation contexts
#: with a dozen transfer syntaxes each, role selection and extended negotiation fit well below.
MAX_ASSOCIATE_RQ_LENGTH: Final = 256 * 1024
#: Connections waiting for their A-ASSOCIATE-RQ at once; past this the oldest is closed.
MAX_PENDING_CONNECTIONS: Final = 256
#: After an A-ASSOCIATE-RJ or A-ABORT, how long the peer may take to close (PS3.8 AA-1).
LINGER: Final = 1.0

#: Called with the socket, the peer's address and the whole A-ASSOCIATE-RQ PDU (header
#: included): returns None when it took the connection, else a PDU to send before closing.
RequestHandler = Callable[[socket.socket, tuple[str, int], bytes], bytes | None]


class Slot:
    """One association counted against the limit: held until released, or (after ``follow``)
    while the thread serving it lives."""

    def __init__(self) -> None:
        self.released = False
        self.thread: threading.Thread | None = None

    def holds(self) -> bool:
        return not self.released and (self.thread is None or self.thread.is_alive())

    def follow(self, thread: threading.Thread) -> None:
        self.thread = thread

    def release(self) -> None:
        self.released = True


class AssociationLimit:
    """The listener's association limit (both acceptor paths): checked and counted in one step."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._lock = threading.Lock()
        self._held: list[Slot] = []

    def reserve(self) -> Slot | None:
        """A slot, or None when ``maximum`` associations are open."""
        with self._lock:
            self._held = [slot for slot in self._held if slot.holds()]
            if len(self._held) >= self.maximum:
                return None
            slot = Slot()
            self._held.append(slot)
            return slot

    def count(self) -> int:
        with self._lock:
            return sum(1 for slot in self._held if slot.holds())


@dataclass(eq=False)
class _Waiting:
    sock: socket.socket
    address: tuple[str, int]
    deadline: float
    handshake: bool  # a TLS handshake is still to be done
    data: bytearray = field(default_factory=bytearray)
    want: int = 6  # bytes of the PDU known to be needed so far
    closing: bool = False  # an RJ/A-ABORT went out: wait for the peer's close, read nothing
    events: int = selectors.EVENT_READ


class AssociationGate:
    """The selector thread that holds connections until their A-ASSOCIATE-RQ is complete."""

    def __init__(
        self,
        on_request: RequestHandler,
        *,
        artim_timeout: float,
        name: str = "dimse",
        max_pending: int = MAX_PENDING_CONNECTIONS,
        max_length: int = MAX_ASSOCIATE_RQ_LENGTH,
    ) -> None:
        self._on_request = on_request
        self.artim_timeout = artim_timeout
        self.max_pending, self.max_length = max_pending, max_length
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._inbox: deque[_Waiting] = deque()
        self._waiting: dict[int, _Waiting] = {}  # by file descriptor, oldest first
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-artim", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """A connection just accepted (from the accept thread; never blocks)."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handshake = isinstance(sock, ssl.SSLSocket)
        self._inbox.append(
            _Waiting(sock, address, time.monotonic() + self.artim_timeout, handshake)
        )
        self._wake()

    def waiting(self) -> int:
        """Connections without an association yet."""
        return len(self._waiting) + len(self._inbox)

    def close(self) -> None:
        """Stop and close every waiting connection."""
        self._stopped = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5.0)
        for waiting in list(self._waiting.values()) + list(self._inbox):
            with contextlib.suppress(OSError):
                waiting.sock.close()
        self._waiting.clear()
        self._inbox.clear()
        with contextlib.suppress(OSError):
            self._wake_r.close()
            self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        while not self._stopped:
            try:
                self._turn()
            except Exception:  # never seen; the gate must outlive it
                log.exception("DIMSE connection gate error")
                time.sleep(0.1)

    def _turn(self) -> None:
        now = time.monotonic()
        deadlines = [w.deadline for w in self._waiting.values()]
        timeout = max(0.0, min([*deadlines, now + 1.0]) - now)
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
                continue
            if self._stopped:
                return
            waiting = key.data
            try:
                self._progress(waiting)
            except Exception as exc:  # one connection's trouble never stops the gate
                log.warning(
                    "connection before association failed (%s): closing",
                    type(exc).__name__,
                    extra={"peer": _peer(waiting)},
                )
                self._drop(waiting)
        self._take_inbox()
        self._expire(time.monotonic())

    def _take_inbox(self) -> None:
        while self._inbox:
            waiting = self._inbox.popleft()
            try:
                waiting.sock.setblocking(False)
                self._selector.register(waiting.sock, selectors.EVENT_READ, waiting)
            except (OSError, ValueError):
                with contextlib.suppress(OSError):
                    waiting.sock.close()
                continue
            self._waiting[waiting.sock.fileno()] = waiting
        while len(self._waiting) > self.max_pending:
            oldest = next(iter(self._waiting.values()))
            log.info(
                "more than %d connections without an association: closing the oldest",
                self.max_pending,
                extra={"peer": _peer(oldest)},
            )
            self._drop(oldest)

    def _expire(self, now: float) -> None:
        for waiting in [w for w in self._waiting.values() if w.deadline <= now]:
            if not waiting.closing:
                what = "TLS handshake" if waiting.handshake else "A-ASSOCIATE-RQ"
                log.info(
                    "no complete %s within %gs of connecting (ARTIM): closing",
                    what,
                    self.artim_timeout,
                    extra={"peer": _peer(waiting)},
                )
            self._drop(waiting)

    def _drop(self, waiting: _Waiting) -> None:
        if self._waiting.pop(waiting.sock.fileno(), None) is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(waiting.sock)
        with contextlib.suppress(OSError):
            waiting.sock.close()

    def _release(self, waiting: _Waiting) -> None:
        """Hand a connection over: it leaves the selector, blocking again, untouched."""
        self._waiting.pop(waiting.sock.fileno(), None)
        self._selector.unregister(waiting.sock)
        waiting.sock.setblocking(True)

    def _wait_for(self, waiting: _Waiting, events: int) -> None:
        if waiting.events != events:
            waiting.events = events
            self._selector.modify(waiting.sock, events, waiting)

    # ------------------------------------------------------------------ one connection
    def _progress(self, waiting: _Waiting) -> None:
        sock = waiting.sock
        if waiting.closing:
            self._drain(waiting)
            return
        if waiting.handshake:
            assert isinstance(sock, ssl.SSLSocket)
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                return self._wait_for(waiting, selectors.EVENT_READ)
            except ssl.SSLWantWriteError:
                return self._wait_for(waiting, selectors.EVENT_WRITE)
            except (ssl.SSLError, OSError) as exc:
                log.info(
                    "TLS handshake failed: %s", _tls_reason(exc), extra={"peer": _peer(waiting)}
                )
                return self._drop(waiting)
            waiting.handshake = False
            self._wait_for(waiting, selectors.EVENT_READ)
        while True:
            try:
                chunk = sock.recv(waiting.want - len(waiting.data))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError:
                return self._drop(waiting)
            if not chunk:
                log.debug(
                    "connection closed after %d bytes, before a complete A-ASSOCIATE-RQ",
                    len(waiting.data),
                    extra={"peer": _peer(waiting)},
                )
                return self._drop(waiting)
            waiting.data += chunk
            if len(waiting.data) == 6 and waiting.want == 6:
                kind, _, length = struct.unpack(">BBL", bytes(waiting.data))
                answer = self._check_header(waiting, kind, length)
                if answer is not None:
                    return self._refuse(waiting, answer)
                waiting.want = 6 + length
            if len(waiting.data) >= waiting.want:
                return self._complete(waiting)

    def _check_header(self, waiting: _Waiting, kind: int, length: int) -> bytes | None:
        """A PDU other than A-ASSOCIATE-RQ in Sta2 is aborted (PS3.8 9.2, AA-1): reason 1 for
        an unknown type, 2 for an unexpected one; an A-ABORT just closes (AA-2)."""
        extra = {"peer": _peer(waiting)}
        if kind == A_ABORT:
            return b""
        if kind != A_ASSOCIATE_RQ:
            known = 0x02 <= kind <= 0x07
            log.warning("PDU type 0x%02X before association: aborting", kind, extra=extra)
            return encode_abort(source=2, reason=2 if known else 1)
        if length > self.max_length:
            log.warning(
                "A-ASSOCIATE-RQ of %d bytes, over the %d-byte bound: aborting",
                length,
                self.max_length,
                extra=extra,
            )
            return encode_abort(source=2, reason=6)  # invalid PDU parameter value
        return None

    def _complete(self, waiting: _Waiting) -> None:
        data = bytes(waiting.data)
        self._release(waiting)
        try:
            answer = self._on_request(waiting.sock, waiting.address, data)
        except Exception as exc:
            log.error(
                "A-ASSOCIATE-RQ handling failed (%s): aborting",
                type(exc).__name__,
                extra={"peer": _peer(waiting)},
            )
            answer = encode_abort(source=2, reason=0)
        if answer is not None:
            waiting.sock.setblocking(False)
            self._selector.register(waiting.sock, selectors.EVENT_READ, waiting)
            waiting.events = selectors.EVENT_READ
            self._waiting[waiting.sock.fileno()] = waiting
            self._refuse(waiting, answer)

    def _refuse(self, waiting: _Waiting, pdu: bytes) -> None:
        """Send ``pdu`` (an A-ASSOCIATE-RJ or A-ABORT, or nothing), then give the peer
        :data:`LINGER` seconds to close (so it reads the PDU rather than a reset)."""
        with contextlib.suppress(OSError, ssl.SSLError):
            if pdu:
                waiting.sock.send(pdu)
            waiting.sock.shutdown(socket.SHUT_WR)
        waiting.closing = True
        waiting.deadline = min(waiting.deadline, time.monotonic() + LINGER)
        if not pdu:
            self._drop(waiting)

    def _drain(self, waiting: _Waiting) -> None:
        try:
            if waiting.sock.recv(65536):
                return
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            pass
        self._drop(waiting)


def _peer(waiting: _Waiting) -> str:
    return f"{waiting.address[0]}:{waiting.address[1]}"


def _tls_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or type(exc).__name__)
