"""A delaying HTTP reverse proxy on 127.0.0.1: a stand-in for a cloud store's round trip.

Every request is forwarded to ``upstream`` as it streams in (Content-Length or chunked bodies,
in 1 MiB pieces, never whole in memory); the upstream's answer is held ``rtt`` seconds and
then streamed back. So each HTTP round trip costs what the store takes plus ``rtt``, like a
store far away (the Healthcare API: about 50-100 ms from a hospital). Client connections are
kept alive (HTTP/1.1), one thread per client connection, each with its own kept-alive upstream
connection: as many requests in flight as the client opens connections.

    with DelayProxy("http://127.0.0.1:8042/dicom-web", rtt=0.05) as proxy:
        proxy.url            # http://127.0.0.1:<port>/dicom-web
        proxy.requests, proxy.max_in_flight

    python -m benchmarks.delay_proxy UPSTREAM_URL [--port P] [--rtt-ms 50]
"""

from __future__ import annotations

import argparse
import http.client
import io
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import IO
from urllib.parse import urlsplit

__all__ = ["DelayProxy"]

_CHUNK = 1 << 20
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
}


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def enter(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _UpstreamBody:
    """The client's request body as a file-like object http.client streams upstream."""

    def __init__(self, rfile: io.BufferedIOBase | IO[bytes], length: int | None) -> None:
        self.rfile = rfile
        self.left = length  # None: chunked
        self._chunk_left = 0
        self._done = length == 0
        self.consumed = 0  # body bytes read so far (a failed forward may retry only before)

    def read(self, size: int = _CHUNK) -> bytes:
        if self._done:
            return b""
        if self.left is not None:
            data = self.rfile.read(min(size, self.left, _CHUNK))
            if not data:
                raise ConnectionError("client closed the request body early")
            self.left -= len(data)
            self._done = self.left <= 0
            self.consumed += len(data)
            return data
        if self._chunk_left == 0:  # chunked: next chunk header
            line = self.rfile.readline(1024)
            size_hex = line.split(b";", 1)[0].strip()
            if not size_hex:
                raise ConnectionError("bad chunk header")
            self._chunk_left = int(size_hex, 16)
            if self._chunk_left == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._done = True
                return b""
        data = self.rfile.read(min(size, self._chunk_left, _CHUNK))
        if not data:
            raise ConnectionError("client closed the request body early")
        self._chunk_left -= len(data)
        self.consumed += len(data)
        if self._chunk_left == 0:
            self.rfile.readline(16)  # CRLF after the chunk
        return data


class DelayProxy:
    """Forwards ``<prefix>/<path>`` to ``upstream`` with ``rtt`` seconds added per request."""

    def __init__(self, upstream: str, rtt: float = 0.05, port: int = 0) -> None:
        parts = urlsplit(upstream.rstrip("/"))
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port/...: {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.rtt = float(rtt)
        self._host, self._port = parts.hostname, parts.port or 80
        self._prefix = parts.path
        self._stopping = threading.Event()
        self._counters = _Counters()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body in separate writes
            upstream_conn: http.client.HTTPConnection | None = None

            def _any(self) -> None:
                proxy._forward(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any  # noqa: N815

            def finish(self) -> None:
                if self.upstream_conn is not None:
                    self.upstream_conn.close()
                super().finish()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 64
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._prefix}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def requests(self) -> int:
        return self._counters.requests

    @property
    def max_in_flight(self) -> int:
        return self._counters.max_in_flight

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        self._counters.enter()
        try:
            self._forward_one(h)
        finally:
            self._counters.leave()

    def _forward_one(self, h: BaseHTTPRequestHandler) -> None:
        length_text = h.headers.get("Content-Length")
        chunked = "chunked" in (h.headers.get("Transfer-Encoding") or "").lower()
        length = int(length_text) if length_text is not None else (None if chunked else 0)
        body = _UpstreamBody(h.rfile, length)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = f"{self._host}:{self._port}"
        if length is not None:
            headers["Content-Length"] = str(length)
        conn = getattr(h, "upstream_conn", None)
        for attempt in (0, 1):  # a kept-alive upstream connection may have been closed
            if conn is None:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=600)
                h.upstream_conn = conn  # type: ignore[attr-defined]
            try:
                conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
                for key, value in headers.items():
                    conn.putheader(key, value)
                if length is None:
                    conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                while data := body.read(_CHUNK):
                    conn.send(b"%x\r\n%s\r\n" % (len(data), data) if length is None else data)
                if length is None:
                    conn.send(b"0\r\n\r\n")
                answer = conn.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                conn = None
                h.upstream_conn = None  # type: ignore[attr-defined]
                if attempt or body.consumed:
                    raise
        self._stopping.wait(self.rtt)  # the added round trip (an Event: stop() ends it)
        h.send_response(answer.status, answer.reason)
        out_length = answer.getheader("Content-Length")
        for key, value in answer.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                h.send_header(key, value)
        if h.command == "HEAD" or answer.status in (204, 304):
            h.send_header("Content-Length", out_length or "0")
            h.end_headers()
            answer.read()
            return
        if out_length is not None:
            h.send_header("Content-Length", out_length)
        else:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        while data := answer.read(_CHUNK):
            h.wfile.write(data if out_length is not None else b"%x\r\n%s\r\n" % (len(data), data))
        if out_length is None:
            h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
        if answer.will_close and conn is not None:
            conn.close()
            h.upstream_conn = None  # type: ignore[attr-defined]

    def start(self) -> DelayProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="delay-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="a delaying HTTP proxy on 127.0.0.1")
    p.add_argument("upstream")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rtt-ms", type=float, default=50.0)
    args = p.parse_args(argv)
    proxy = DelayProxy(args.upstream, rtt=args.rtt_ms / 1000, port=args.port).start()
    print(proxy.url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
