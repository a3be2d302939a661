"""Socket settings shared by the native acceptor and requestor (PS3.8 9.1, TCP transport), and
the listener's TLS context (PS3.15 B.1)."""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

from adapter.config import TlsConfig

__all__ = ["kernel_timeouts", "ssl_context_for"]


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


class _LazyHandshakeContext(ssl.SSLContext):
    """pynetdicom wraps accepted sockets in its single accept thread, where a client that
    connects and never handshakes would block every other one: the handshake is left to the
    listener's gate (establishment.py), non-blocking, within the ARTIM deadline."""

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


def ssl_context_for(tls: TlsConfig) -> ssl.SSLContext:
    """Server-side TLS context (PS3.15 B.1): our certificate; the CA (and a client certificate)
    if set; TLS 1.2 or later."""
    ctx = _LazyHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert tls.cert_file is not None and tls.key_file is not None
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.ca_file is not None:
        ctx.load_verify_locations(str(tls.ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
