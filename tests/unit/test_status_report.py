"""The status snapshot: services' optional status(), a bounded ring of failures with their DIMSE
or HTTP reason, dead-letter counts; served as /status.json and /status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from adapter import failures
from adapter.deadletter import DeadLetterQueue
from adapter.errors import TransientError
from adapter.health import HealthServer
from adapter.service import Supervisor
from adapter.status_report import StatusReport


class _Svc:
    def __init__(self, name: str, snapshot: dict[str, Any] | None, broken: bool = False) -> None:
        self.name = name
        self._snapshot = snapshot
        self._broken = broken
        if snapshot is None:
            self.status = None  # type: ignore[assignment]

    def start(self) -> None:
        pass

    def stop(self, timeout: float) -> None:
        pass

    def readiness(self) -> dict[str, bool]:
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        if self._broken:
            raise RuntimeError("boom")
        return dict(self._snapshot or {})


def test_supervisor_collects_status_only_from_services_that_have_it() -> None:
    sup = Supervisor(
        [_Svc("a", {"kind": "listener", "port": 1}), _Svc("b", None), _Svc("c", {}, broken=True)]
    )
    snapshot = sup.status()
    assert snapshot["a"] == {"kind": "listener", "port": 1}
    assert "b" not in snapshot
    assert snapshot["c"] == {"kind": "error", "error": "RuntimeError: boom"}


def test_failures_keep_the_protocol_reason_and_stay_bounded() -> None:
    ring = failures.FailureLog(size=3)
    failures.RECENT, saved = ring, failures.RECENT
    try:
        failures.record("importer", "C-STORE from PACS", "spool full", dimse_status=0xA700)
        failures.record("exporter", "export to dimse:PACS", "PACS answered 0xa801: unknown")
        failures.record("importer", "STOW-RS", TransientError("503 busy", http_status=503))
        failures.record("importer", "STOW-RS", "x")
        newest = ring.recent()
        assert len(newest) == 3 and ring.total == 4
        assert newest[2]["dimse_status"] == "0xA801"
        assert newest[1]["http_status"] == 503
        assert newest[0]["reason"] == "x"
    finally:
        failures.RECENT = saved


def test_status_json_and_page(tmp_path: Path) -> None:
    letters = DeadLetterQueue(tmp_path / "dl", "importer")
    letters.add({"reason": "HTTP 400: bad", "http_status": 400, "sop_instance_uid": "1.2.3"})
    sup = Supervisor([_Svc("dimse", {"kind": "listener", "ae_title": "IMPORTADAPTER"})])
    report = StatusReport("site-a", sup.status, sup.readiness, {"importer": letters})
    with HealthServer("127.0.0.1", 0, sup.readiness, report) as server:
        base = f"http://127.0.0.1:{server.port}"
        snapshot = requests.get(f"{base}/status.json", timeout=5).json()
        page = requests.get(f"{base}/status", timeout=5)
    assert snapshot["site"] == "site-a"
    assert snapshot["services"]["dimse"]["ae_title"] == "IMPORTADAPTER"
    assert snapshot["dead_letters"]["importer"]["count"] == 1
    assert snapshot["dead_letters"]["importer"]["recent"][0]["http_status"] == 400
    assert any(
        f["what"] == "dead-lettered" and f["http_status"] == 400 for f in snapshot["failures"]
    )
    assert page.status_code == 200 and "<script>" in page.text and "innerHTML" not in page.text


def test_status_is_absent_without_a_source() -> None:
    with HealthServer("127.0.0.1", 0, dict) as server:
        assert requests.get(f"http://127.0.0.1:{server.port}/status", timeout=5).status_code == 404
