"""Tiny HTTP server for Kubernetes probes, Prometheus and operators: /healthz, /readyz, /metrics,
and, when given a status callable, /status.json and the /status page.

Runs in daemon threads next to the DIMSE and Pub/Sub machinery; it never blocks shutdown.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from adapter import metrics
from adapter.errors import ListenError

__all__ = ["HealthServer", "ReadinessCheck", "StatusSource"]

ReadinessCheck = Callable[[], dict[str, bool]]
"""Returns named readiness checks; the pod is ready only when every value is True."""

StatusSource = Callable[[], dict[str, Any]]
"""Returns the JSON-ready snapshot of /status.json (see adapter.status_report)."""

_log = logging.getLogger(__name__)
_TEXT = "text/plain; charset=utf-8"


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the readiness callable for its handlers."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], readiness: ReadinessCheck, status: StatusSource | None
    ) -> None:
        super().__init__(address, _Handler)
        self.readiness = readiness
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    """Answers GET/HEAD on the three fixed paths; everything else is 404."""

    server: _Server
    server_version = "dicom-adapter-health"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        """Route a GET request."""
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        """Route a HEAD request (same status and headers, no body)."""
        self._dispatch(send_body=False)

    def _dispatch(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._reply(HTTPStatus.OK, b"ok\n", _TEXT, send_body)
        elif path == "/readyz":
            self._readyz(send_body)
        elif path == "/metrics":
            body, content_type = metrics.render_latest()
            self._reply(HTTPStatus.OK, body, content_type, send_body)
        elif path in ("/status", "/status/") and self.server.status is not None:
            from adapter.status_page import PAGE

            self._reply(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8", send_body)
        elif path in ("/status.json", "/status/status.json") and self.server.status is not None:
            self._status_json(send_body)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", _TEXT, send_body)

    def _readyz(self, send_body: bool) -> None:
        try:
            checks = {str(name): bool(ok) for name, ok in self.server.readiness().items()}
        except Exception as exc:  # a broken check means "not ready", never a 500 loop
            _log.warning("readiness check raised: %s", exc)
            checks = {"readiness_callable": False}
        failed = sorted(name for name, ok in checks.items() if not ok)
        ready = not failed
        payload: dict[str, Any] = {"ready": ready, "checks": checks}
        if failed:
            payload["failed"] = failed
        destinations = self._destination_states()
        if destinations:  # informative: a destination that is down leaves the pod ready
            payload["destinations"] = destinations
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        body = json.dumps(payload, sort_keys=True).encode() + b"\n"
        self._reply(status, body, "application/json", send_body)

    def _destination_states(self) -> dict[str, str]:
        """``plugin/destination`` -> ``up`` or ``failing`` from the services' status()."""
        source = self.server.status
        if source is None:
            return {}
        try:
            services = source().get("services", {})
        except Exception:  # the probe must answer whatever the snapshot does
            return {}
        return {
            f"{info.get('plugin')}/{info.get('destination')}": str(info["state"])
            for info in services.values()
            if isinstance(info, dict) and info.get("kind") == "queue" and "state" in info
        }

    def _status_json(self, send_body: bool) -> None:
        source = self.server.status
        assert source is not None
        try:
            body = json.dumps(source(), sort_keys=True, default=str).encode() + b"\n"
        except Exception as exc:  # the page shows the error and keeps polling
            _log.warning("status snapshot failed: %s", exc)
            error = {"error": f"{type(exc).__name__}: {exc}"}
            self._reply(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                json.dumps(error).encode(),
                "application/json",
                send_body,
            )
            return
        self._reply(HTTPStatus.OK, body, "application/json", send_body)

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request access logs (probes hit this every few seconds)."""

    def log_error(self, format: str, *args: Any) -> None:
        """Route protocol errors to debug logging instead of stderr."""
        _log.debug("health server: " + format, *args)


class HealthServer:
    """Serves /healthz (liveness), /readyz (readiness JSON) and /metrics in a background thread.

    ``HealthServer("0.0.0.0", 8080, readiness).start()``; ``port=0`` binds a free port
    (read it back from ``.port``).
    """

    def __init__(
        self, bind: str, port: int, readiness: ReadinessCheck, status: StatusSource | None = None
    ) -> None:
        self._bind = bind
        self._requested_port = port
        self._readiness = readiness
        self._status = status
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The bound TCP port once started (the requested port before that)."""
        server = self._server
        if server is None:
            return self._requested_port
        return int(server.server_address[1])

    @property
    def bind(self) -> str:
        """The address the server listens on."""
        return self._bind

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    def start(self) -> HealthServer:
        """Bind the socket and serve in a daemon thread; returns self. Raises OSError if busy."""
        with self._lock:
            if self._server is not None:
                return self
            try:
                server = _Server((self._bind, self._requested_port), self._readiness, self._status)
            except OSError as exc:
                raise ListenError("health server", self._bind, self._requested_port, exc) from None
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"health-http-{server.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
            _log.info("health server listening on %s:%d", self._bind, self.port)
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the socket; idempotent."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
