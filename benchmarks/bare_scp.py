"""A bare pynetdicom Storage SCP for the "p" rows: the library's own receive ceiling.

Same pynetdicom settings as the adapter's DimseServer (STORE_RECV_CHUNKED_DATASET: the data set
is streamed into a temporary file, TCP_NODELAY on accepted sockets), but the handler answers
Success at once: no spool, no fsync, no upload. Run as a subprocess:

    python -m benchmarks.bare_scp PORT
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

_config.STORE_RECV_CHUNKED_DATASET = True


def _nodelay(event: Any) -> None:
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _store(event: Any) -> int:
    return 0x0000


def main(argv: list[str]) -> int:
    port = int(argv[1])
    ae = AE(ae_title="BARESCP")
    ae.maximum_pdu_size = 0
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_associations = 32
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, _store), (evt.EVT_CONN_OPEN, _nodelay)],
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    if server is not None:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
