"""Socket settings shared by the native acceptor and requestor (PS3.8 9.1, TCP transport)."""

from __future__ import annotations

import socket
import struct

__all__ = ["kernel_timeouts"]


def kernel_timeouts(sock: socket.socket, receive: float | None, send: float | None = None) -> None:
    """Make ``sock`` blocking with kernel-side timeouts (SO_RCVTIMEO/SO_SNDTIMEO; a call that
    waits longer fails with EAGAIN): unlike Python's socket timeouts, a blocking socket lets
    MSG_WAITALL and sendfile(2) move a whole PDV in one system call, and every call releases and
    re-takes the GIL. ``send`` defaults to ``receive``; None or 0 leaves that direction untimed."""
    sock.settimeout(None)
    for option, seconds in ((socket.SO_RCVTIMEO, receive), (socket.SO_SNDTIMEO, send or receive)):
        if seconds:
            whole = int(seconds)
            timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, option, timeval)
