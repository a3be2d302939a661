"""HealthServer endpoints (/healthz, /readyz, /metrics) and the metrics registry, over 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator

import pytest

from adapter import metrics
from adapter.health import HealthServer


class _Readiness:
    """Mutable readiness checks the test flips between ready and not ready."""

    def __init__(self) -> None:
        self.checks = {"config": True, "spool": True, "dimse_listener": True}

    def __call__(self) -> dict[str, bool]:
        return dict(self.checks)


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def readiness() -> _Readiness:
    return _Readiness()


@pytest.fixture
def server(readiness: _Readiness) -> Iterator[HealthServer]:
    srv = HealthServer("127.0.0.1", 0, readiness)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_port_zero_binds_a_real_port(server: HealthServer) -> None:
    assert server.port > 0
    assert server.running


def test_healthz_ok(server: HealthServer) -> None:
    status, headers, body = _get(server.port, "/healthz")
    assert status == 200
    assert body.strip() == b"ok"
    assert headers["content-type"].startswith("text/plain")


def test_readyz_ready_lists_checks(server: HealthServer) -> None:
    status, headers, body = _get(server.port, "/readyz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert payload["ready"] is True
    assert payload["checks"] == {"config": True, "spool": True, "dimse_listener": True}
    assert "failed" not in payload


def test_readyz_not_ready_names_failed_check(server: HealthServer, readiness: _Readiness) -> None:
    readiness.checks["spool"] = False
    status, _, body = _get(server.port, "/readyz")
    assert status == 503
    payload = json.loads(body)
    assert payload["ready"] is False
    assert payload["failed"] == ["spool"]
    assert payload["checks"]["spool"] is False
    assert payload["checks"]["config"] is True
    # and back to ready without restarting the server
    readiness.checks["spool"] = True
    assert _get(server.port, "/readyz")[0] == 200


def test_readyz_raising_callable_is_503_not_500() -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("boom")

    with HealthServer("127.0.0.1", 0, broken) as srv:
        status, _, body = _get(srv.port, "/readyz")
    assert status == 503
    assert json.loads(body)["ready"] is False


def test_readyz_empty_checks_is_ready() -> None:
    with HealthServer("127.0.0.1", 0, dict) as srv:
        assert _get(srv.port, "/readyz")[0] == 200


def test_head_and_unknown_path(server: HealthServer) -> None:
    status, headers, body = _get(server.port, "/healthz", method="HEAD")
    assert status == 200
    assert body == b""
    assert int(headers["content-length"]) > 0
    assert _get(server.port, "/nope")[0] == 404
    assert _get(server.port, "/healthz?verbose=1")[0] == 200


def _sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name + (("{" + labels + "}") if labels else "")) + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, flags=re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in /metrics output"
    return float(match.group(1))


def test_metrics_endpoint_exposes_adapter_metrics_and_counters_move(server: HealthServer) -> None:
    status, headers, body = _get(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    for name in (
        "dicom_adapter_associations_total",
        "dicom_adapter_associations_active",
        "dicom_adapter_dimse_requests_total",
        "dicom_adapter_dimse_request_duration_seconds",
        "dicom_adapter_bytes_received_total",
        "dicom_adapter_instances_received_total",
        "dicom_adapter_instances_spooled_total",
        "dicom_adapter_instances_uploaded_total",
        "dicom_adapter_instances_failed_total",
        "dicom_adapter_upload_batches_total",
        "dicom_adapter_upload_results_total",
        "dicom_adapter_retries_total",
        "dicom_adapter_dead_letters_total",
        "dicom_adapter_spool_depth",
        "dicom_adapter_spool_oldest_age_seconds",
        "dicom_adapter_export_messages_received_total",
        "dicom_adapter_export_messages_acked_total",
        "dicom_adapter_export_messages_nacked_total",
        "dicom_adapter_export_messages_dead_lettered_total",
        "dicom_adapter_export_deliveries_total",
        "dicom_adapter_export_latency_seconds",
    ):
        assert f"# TYPE {name} " in text, name

    labels = 'service="C-STORE",status="0x0000"'
    before = 0.0
    if f"dicom_adapter_dimse_requests_total{{{labels}}}" in text:
        before = _sample(text, "dicom_adapter_dimse_requests_total", labels)
    metrics.DIMSE_REQUESTS_TOTAL.labels(
        service="C-STORE", status=metrics.dimse_status_label(0)
    ).inc()
    metrics.DIMSE_REQUESTS_TOTAL.labels(
        service="C-STORE", status=metrics.dimse_status_label(0)
    ).inc()
    after = _sample(
        _get(server.port, "/metrics")[2].decode(), "dicom_adapter_dimse_requests_total", labels
    )
    assert after == before + 2


def test_unlabelled_counter_moves() -> None:
    text = metrics.render_latest()[0].decode()
    before = _sample(text, "dicom_adapter_instances_spooled_total")
    metrics.INSTANCES_SPOOLED_TOTAL.inc(3)
    after = _sample(metrics.render_latest()[0].decode(), "dicom_adapter_instances_spooled_total")
    assert after == before + 3


def test_spool_oldest_age_callback_is_read_at_scrape() -> None:
    age = {"value": 12.5}
    metrics.set_spool_oldest_age_callback(lambda: age["value"])
    try:
        assert (
            _sample(metrics.render_latest()[0].decode(), "dicom_adapter_spool_oldest_age_seconds")
            == 12.5
        )
        age["value"] = 99.0
        assert (
            _sample(metrics.render_latest()[0].decode(), "dicom_adapter_spool_oldest_age_seconds")
            == 99.0
        )
    finally:
        metrics.set_spool_oldest_age_callback(lambda: 0.0)


def test_render_latest_content_type_and_only_adapter_metrics() -> None:
    body, content_type = metrics.render_latest()
    assert content_type.startswith("text/plain")
    names = {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE ")}
    assert names
    assert all(n.startswith(metrics.PREFIX) for n in names), names


def test_dimse_status_label_format() -> None:
    assert metrics.dimse_status_label(0xA700) == "0xA700"
    assert metrics.dimse_status_label(0) == "0x0000"
    assert metrics.dimse_status_label(0xC000) == "0xC000"


def test_labels_never_include_uid_like_names() -> None:
    # guard the low-cardinality contract: no metric declares a UID/instance/patient label
    forbidden = re.compile(r"uid|instance|patient|study|series|accession|file", re.IGNORECASE)
    for collector in list(metrics.REGISTRY._collector_to_names):
        for label in getattr(collector, "_labelnames", ()):
            assert not forbidden.search(label), (collector, label)


def test_requests_do_not_spam_stderr(
    server: HealthServer, capfd: pytest.CaptureFixture[str]
) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/missing"):
        _get(server.port, path)
    # a malformed request line exercises log_error too
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"BOGUS\r\n\r\n")
        sock.recv(1024)
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_stop_is_idempotent_and_frees_the_port() -> None:
    srv = HealthServer("127.0.0.1", 0, dict).start()
    port = srv.port
    srv.stop()
    srv.stop()
    assert not srv.running
    with pytest.raises(OSError):
        _get(port, "/healthz")


def test_build_info_carries_the_version_and_process_metrics_are_exported() -> None:
    from importlib.metadata import version

    text = metrics.render_latest()[0].decode()
    assert 'dicom_adapter_build_info{python="' in text
    assert f'version="{version("dicom-adapter")}"' in text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
        assert f"\ndicom_adapter_{name} " in text
