"""One DICOM Upper Layer connection (PS3.8 9.3) as the native acceptor and requestor use it:
read a PDU (or its header), iterate its PDV items, send PDVs, abort.

A blocking socket with kernel-side timeouts (transport.kernel_timeouts): each read takes a whole
header or value in one call. Lengths are never trusted: PDVs that do not add up to their PDU
raise :class:`FramingError`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from adapter.dimse.pdu import encode_abort, encode_p_data

__all__ = ["Connection", "FramingError", "Pdv"]


class FramingError(EOFError):
    """The PDV items of a P-DATA-TF do not add up to its length (PS3.8 9.3.5)."""


@dataclass(frozen=True)
class Pdv:
    """One PDV item's header (PS3.8 9.3.5.1, E.2); its value is still on the socket."""

    context_id: int
    is_command: bool
    is_last: bool
    length: int
    remaining: int  # bytes of the PDU after this item's value


class Connection:
    """One association's socket, with a receive buffer of ``buffer_size`` bytes."""

    def __init__(self, sock: socket.socket, buffer_size: int = 1 << 16) -> None:
        self.sock = sock
        self._buffer = bytearray(buffer_size)
        self.view = memoryview(self._buffer)
        self._send_lock = threading.Lock()

    # ------------------------------------------------------------------ reading
    def recv_into(self, limit: int) -> int:
        """Up to ``limit`` bytes (at most the buffer) into :attr:`view`; EOFError on close."""
        count = self.sock.recv_into(self.view, min(limit, len(self.view)), socket.MSG_WAITALL)
        if count == 0:
            raise EOFError("peer closed the connection")
        return count

    def read_exact(self, n: int) -> bytes:
        if n > len(self.view):
            out = bytearray()
            while len(out) < n:
                out += self.view[: self.recv_into(n - len(out))]
            return bytes(out)
        got = 0
        while got < n:
            count = self.sock.recv_into(self.view[got:n], n - got, socket.MSG_WAITALL)
            if count == 0:
                raise EOFError("peer closed the connection")
            got += count
        return bytes(self.view[:n])

    def skip(self, n: int) -> None:
        while n > 0:
            n -= self.recv_into(n)

    def read_pdu_header(self) -> tuple[int, int]:
        """(PDU type, PDU length) (PS3.8 9.3.1)."""
        kind, _, length = struct.unpack(">BBL", self.read_exact(6))
        return int(kind), int(length)

    def read_pdu(self, limit: int) -> tuple[int, bytes]:
        """A whole PDU: (type, body); EOFError when it announces more than ``limit`` bytes."""
        kind, length = self.read_pdu_header()
        if length > limit:
            raise EOFError(f"PDU of {length} bytes where at most {limit} were expected")
        return kind, self.read_exact(length)

    def pdvs(self, length: int) -> Iterator[Pdv]:
        """The PDV items of a P-DATA-TF of ``length`` bytes whose header was read; the caller
        reads (or skips) each value before asking for the next."""
        left = length
        while left > 0:
            if left < 6:
                raise FramingError("P-DATA-TF ends inside a PDV item header")
            item_length, context_id, header = struct.unpack(">LBB", self.read_exact(6))
            if item_length < 2 or item_length - 2 > left - 6:
                raise FramingError("PDV item longer than its P-DATA-TF PDU")
            left -= 4 + item_length
            yield Pdv(context_id, bool(header & 0x01), bool(header & 0x02), item_length - 2, left)

    # ------------------------------------------------------------------ sending
    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def send_command(self, context_id: int, command: bytes, peer_max_pdu: int) -> None:
        """A command set as P-DATA-TF PDU(s), fragmented to the peer's maximum length."""
        self.send(encode_p_data(context_id, command, peer_max_pdu))

    def abort(self, source: int, reason: int) -> None:
        """A-ABORT (PS3.8 9.3.8), if the connection still takes it."""
        with contextlib.suppress(OSError):
            self.send(encode_abort(source=source, reason=reason))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
