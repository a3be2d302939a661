"""``dicom-adapter probe``: C-ECHO a DIMSE listener and GET health URLs, as ``helm test`` does.

It runs in the adapter's own image (which has no dcmtk), so a release can be checked from
inside the cluster with the same code that serves it.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

__all__ = ["ProbeError", "c_echo", "http_ok", "parse_echo_target"]


class ProbeError(Exception):
    """A probe failed; the message says what was tried and what happened."""


def parse_echo_target(text: str) -> tuple[str, str, int]:
    """``AE@HOST:PORT`` -> (AE, HOST, PORT)."""
    match = re.fullmatch(r"([^@]{1,16})@(.+):(\d{1,5})", text)
    if not match:
        raise ValueError(f"expected AE@HOST:PORT, got {text!r}")
    return match[1], match[2], int(match[3])


def c_echo(target: str, calling_ae: str = "HELMTEST", timeout: float = 10.0) -> str:
    """C-ECHO ``AE@HOST:PORT``; returns a one-line success or raises ProbeError."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    called, host, port = parse_echo_target(target)
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "not established (unreachable or aborted)"
        raise ProbeError(f"C-ECHO {target} as {calling_ae}: association {why}")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(status.Status) if status and "Status" in status else None
    if code != 0:
        shown = "no response" if code is None else f"status 0x{code:04X}"
        raise ProbeError(f"C-ECHO {target} as {calling_ae}: {shown}")
    return f"C-ECHO {target} as {calling_ae}: success"


def http_ok(url: str, timeout: float = 10.0) -> str:
    """GET ``url``; returns a one-line success for a 2xx or raises ProbeError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return f"GET {url}: {response.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode("utf-8", "replace").strip()
        raise ProbeError(f"GET {url}: {exc.code} {body}") from exc
    except OSError as exc:
        raise ProbeError(f"GET {url}: {exc}") from exc
