"""Long-running services and their supervisor: ordered start, reverse stop, drain on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, Protocol, runtime_checkable

from adapter.errors import ListenError

__all__ = ["Service", "Supervisor"]

log = logging.getLogger(__name__)


@runtime_checkable
class Service(Protocol):
    """A component with a lifecycle: DIMSE listener, upload workers, Pub/Sub subscriber, ..."""

    name: str

    def start(self) -> None:
        """Start serving; return once the service is up (or raise)."""
        ...

    def stop(self, timeout: float) -> None:
        """Stop taking work, finish or hand back what is in flight, release resources."""
        ...

    def readiness(self) -> dict[str, bool]:
        """Named readiness checks for /readyz, e.g. {'dimse_listener': True}."""
        ...

    # Optional, looked up with getattr (not part of the Protocol, so older services still fit):
    #   def status(self) -> dict[str, Any]
    # a JSON-ready snapshot for /status.json and the /status page: "kind" ("listener", "queue",
    # "subscriber", ...) groups it on the page, other keys are shown as they are. UIDs at most,
    # never patient data; cheap (it is polled every few seconds).


class Supervisor:
    """Runs services until a stop signal, then stops them in reverse order within a deadline."""

    def __init__(self, services: Sequence[Service], stop_timeout: float = 25.0) -> None:
        self.services = list(services)
        self.stop_timeout = stop_timeout
        self.stop_event = threading.Event()
        self._started: list[Service] = []

    def start(self) -> None:
        """Start every service in order; on failure stop those already started and re-raise."""
        for service in self.services:
            log.info("starting %s", service.name)
            try:
                service.start()
            except ListenError as exc:  # one line: the address and port say it all
                log.error("%s failed to start: %s", service.name, exc)
                self.stop()
                raise
            except BaseException:
                log.exception("%s failed to start", service.name)
                self.stop()
                raise
            self._started.append(service)

    def stop(self) -> None:
        """Stop started services, last first."""
        self.stop_event.set()
        while self._started:
            service = self._started.pop()
            log.info("stopping %s", service.name)
            try:
                service.stop(self.stop_timeout)
            except Exception:
                log.exception("%s failed to stop cleanly", service.name)

    def readiness(self) -> dict[str, bool]:
        """All services' checks, prefixed with the service name."""
        checks: dict[str, bool] = {}
        for service in self.services:
            try:
                for key, ok in service.readiness().items():
                    checks[f"{service.name}.{key}"] = ok
            except Exception:
                checks[f"{service.name}.readiness"] = False
        running = len(self._started) == len(self.services)
        checks["started"] = running and not self.stop_event.is_set()
        return checks

    def status(self) -> dict[str, dict[str, Any]]:
        """Each service's optional ``status()`` snapshot by name; a failing one says so."""
        out: dict[str, dict[str, Any]] = {}
        for service in self.services:
            method = getattr(service, "status", None)
            if not callable(method):
                continue
            try:
                out[service.name] = dict(method())
            except Exception as exc:
                out[service.name] = {"kind": "error", "error": f"{type(exc).__name__}: {exc}"}
        return out

    def run_forever(self, install_signals: bool = True) -> None:
        """Start, wait for SIGTERM/SIGINT (or stop_event), then stop."""
        if install_signals:

            def handler(signum: int, _frame: FrameType | None) -> None:
                log.info("signal %s received: draining", signal.Signals(signum).name)
                self.stop_event.set()

            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        self.start()
        try:
            while not self.stop_event.wait(1.0):
                pass
        finally:
            self.stop()
