"""A tiny threaded HTTP/1.1 server on 127.0.0.1 whose answers a test scripts request by request.

For what a real store will not do on demand: 429 + Retry-After, 503 bursts, partial 202, slow
answers, dropped connections, a token endpoint. Every request is recorded (bodies can be
discarded and only counted, for the streaming-memory tests)::

    with HttpStub() as stub:
        stub.enqueue(StubResponse(503, {"Retry-After": "1"}), StubResponse(200, body=b"[]"))
        requests.get(stub.url + "/x")
        stub.requests[0].path
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"


@dataclass
class StubResponse:
    """One scripted answer. ``delay`` sleeps before answering; ``drop`` closes the connection
    without answering; ``chunks`` sends the body in pieces with ``chunk_delay`` between them;
    ``close`` closes the connection after the body (with a larger Content-Length header given
    explicitly, that is a transfer cut short)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    drop: bool = False
    chunk_delay: float = 0.0
    chunks: int = 1
    close: bool = False

    @classmethod
    def json(
        cls,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/dicom+json",
    ) -> StubResponse:
        """A JSON answer with the given Content-Type."""
        return cls(
            status, {"Content-Type": content_type, **(headers or {})}, json.dumps(payload).encode()
        )


@dataclass
class RecordedRequest:
    """What the stub saw: method, path (with query), headers, and the body (or its size and
    SHA-256 when bodies are discarded)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    body_size: int
    body_sha256: str

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


Handler = Callable[[RecordedRequest], StubResponse]


class _QuietServer(ThreadingHTTPServer):
    """Client disconnects (broken pipe, reset) are expected in these tests: don't print them."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class HttpStub:
    """The server; ``enqueue`` answers in order, then ``default`` (or ``handler`` if set)."""

    def __init__(self, *, keep_bodies: bool = True, max_requests: int = 10_000) -> None:
        self.keep_bodies = keep_bodies
        self.max_requests = max_requests
        self.requests: list[RecordedRequest] = []
        self.default = StubResponse(500, {"Content-Type": "text/plain"}, b"no scripted answer")
        self.handler: Handler | None = None
        self._queue: collections.deque[StubResponse] = collections.deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> HttpStub:
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                stub._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve  # noqa: N815

        self._server = _QuietServer((LOOPBACK, 0), _Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HttpStub:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "stub not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # ------------------------------------------------------------------ scripting
    def enqueue(self, *responses: StubResponse) -> None:
        with self._lock:
            self._queue.extend(responses)

    def _next(self, request: RecordedRequest) -> StubResponse:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.handler is not None:
            return self.handler(request)
        return self.default

    # ------------------------------------------------------------------ serving
    def _read_body(self, h: BaseHTTPRequestHandler) -> tuple[bytes, int, str]:
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0

        def take(data: bytes) -> None:
            nonlocal size
            size += len(data)
            digest.update(data)
            if self.keep_bodies:
                kept.extend(data)

        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = h.rfile.readline(1024)
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    h.rfile.readline(1024)
                    break
                remaining = length
                while remaining:
                    data = h.rfile.read(min(remaining, 1 << 16))
                    if not data:
                        break
                    take(data)
                    remaining -= len(data)
                h.rfile.readline(1024)
        else:
            remaining = int(h.headers.get("Content-Length") or 0)
            while remaining > 0:
                data = h.rfile.read(min(remaining, 1 << 16))
                if not data:
                    break
                take(data)
                remaining -= len(data)
        return bytes(kept), size, digest.hexdigest()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body, size, sha = self._read_body(h)
        request = RecordedRequest(h.command, h.path, dict(h.headers.items()), body, size, sha)
        with self._lock:
            if len(self.requests) >= self.max_requests:
                h.close_connection = True
                return
            self.requests.append(request)
        answer = self._next(request)
        if answer.delay:
            time.sleep(answer.delay)
        if answer.drop:
            h.close_connection = True
            return
        h.send_response(answer.status)
        headers = {k.lower(): (k, v) for k, v in answer.headers.items()}
        for key, value in headers.values():
            h.send_header(key, value)
        if "content-length" not in headers:
            h.send_header("Content-Length", str(len(answer.body)))
        h.end_headers()
        if h.command == "HEAD":
            return
        pieces = max(1, answer.chunks)
        step = max(1, -(-len(answer.body) // pieces))
        view = memoryview(answer.body)
        for start in range(0, len(view), step):
            h.wfile.write(view[start : start + step])
            h.wfile.flush()
            if answer.chunk_delay:
                time.sleep(answer.chunk_delay)
        if answer.close:
            h.close_connection = True
