"""The Java adapter's shape, for the "j" rows: a Storage SCP that answers each C-STORE only
after a synchronous STOW-RS of that one instance (no spool, no batching, one request per
instance, one association = one request in flight).

pynetdicom with the same settings as bare_scp.py (the data set streamed into a temporary file,
TCP_NODELAY); each association's thread POSTs the file on its own kept-alive session. Run as a
subprocess:

    python -m benchmarks.sync_stow_scp PORT STOW_BASE_URL
"""

from __future__ import annotations

import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import requests
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from benchmarks.bare_scp import _nodelay

_config.STORE_RECV_CHUNKED_DATASET = True
_local = threading.local()


def _body(path: str, boundary: str) -> Iterator[bytes]:
    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode("ascii")


def _store(event: Any, url: str) -> int:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    boundary = uuid.uuid4().hex
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    try:
        r = session.post(
            f"{url}/studies",
            data=_body(event.dataset_path, boundary),
            headers=headers,
            timeout=(10, 120),
        )
    except requests.RequestException:
        return 0xA700
    return 0x0000 if r.status_code == 200 else 0xA700


def main(argv: list[str]) -> int:
    port, url = int(argv[1]), argv[2].rstrip("/")
    ae = AE(ae_title="SYNCSTOW")
    ae.maximum_pdu_size = 0
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_associations = 32
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, _store, [url]), (evt.EVT_CONN_OPEN, _nodelay)],
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    if server is not None:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
