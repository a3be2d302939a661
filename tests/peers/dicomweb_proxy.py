"""A DICOMweb reverse proxy on 127.0.0.1 in front of a real store (Orthanc), forwarding every
request byte for byte except those a test makes fail: e.g. WADO-RS of one instance answers 404
while QIDO-RS still lists it (an instance deleted between search and fetch)::

    with DicomwebProxy(orthanc.dicomweb_url) as proxy:
        proxy.fail_paths[sop_instance_uid] = 404   # any path containing the UID
        proxy.url                                   # point the adapter here
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

import requests

from tests.peers.ports import LOOPBACK

__all__ = ["DicomwebProxy"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class DicomwebProxy:
    """Forwards ``/<path>?<query>`` (the query string untouched) to ``upstream``; GET only."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._prefix = urlsplit(self.upstream).path
        #: substring of the request path -> HTTP status answered instead of forwarding
        self.fail_paths: dict[str, int] = {}
        #: every request line seen (path and raw query), for tests of the query's encoding
        self.seen: list[str] = []
        self._session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._forward(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}{self._prefix}"

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        self.seen.append(h.path)
        path = h.path.split("?", 1)[0]
        for needle, status in list(self.fail_paths.items()):
            if needle in path:
                body = b'{"error": "injected by the test proxy"}'
                h.send_response(status)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body)
                return
        target = self.upstream[: len(self.upstream) - len(self._prefix)] + h.path
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
        # a prepared request keeps the query string exactly as the client sent it
        request = requests.Request("GET", "http://placeholder", headers=headers).prepare()
        request.url = target
        answer = self._session.send(request, timeout=60)
        body = answer.content
        h.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-encoding":
                h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def start(self) -> DicomwebProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._session.close()

    def __enter__(self) -> DicomwebProxy:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
