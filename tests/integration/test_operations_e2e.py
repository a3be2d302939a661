"""What operators rely on, against a running adapter: probes, Prometheus counters that move
after a real dcmsend, JSON log lines without patient data."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import count_store_successes, dcmsend
from tests.peers.orthanc import OrthancPeer
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

PATIENT_NAME, PATIENT_ID = "OPS^PATIENT^SECRET", "OPS-SECRET-42"


def sample_value(metrics: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        have = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
        if have == want:
            return float(match.group(3))
    return 0.0


@pytest.fixture
def adapter(orthanc: OrthancPeer, tmp_path: Path) -> Iterator[AdapterProcess]:
    config = {
        "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
        "log": {"format": "json", "level": "INFO"},
        "importer": {"dimse": {"ae_title": "IMPORTADAPTER"}},
    }
    with AdapterProcess(config, tmp_path).start() as proc:
        yield proc


def test_probes_answer_for_kubernetes(adapter: AdapterProcess) -> None:
    assert requests.get(f"{adapter.health_url}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{adapter.health_url}/readyz", timeout=5)
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["checks"]["dimse.dimse_listener"] is True


def test_counters_move_after_a_dcmsend(
    adapter: AdapterProcess, orthanc: OrthancPeer, tmp_path: Path
) -> None:
    files = make_ct_series(
        tmp_path / "ct", 3, rows=32, cols=32, patient_name=PATIENT_NAME, patient_id=PATIENT_ID
    )
    before = adapter.metrics_text()
    result = dcmsend(adapter.port, files, aet="OPSPACS", called_aet="IMPORTADAPTER")
    assert count_store_successes(result) == 3, result.output

    def uploaded() -> bool:
        text = adapter.metrics_text()
        return sample_value(text, "dicom_adapter_instances_uploaded_total") >= 3

    wait_until(uploaded, timeout=30, what="3 uploads counted on /metrics")
    after = adapter.metrics_text()
    stores = {"service": "C-STORE", "status": "0x0000"}
    assert (
        sample_value(after, "dicom_adapter_dimse_requests_total", **stores)
        - sample_value(before, "dicom_adapter_dimse_requests_total", **stores)
        == 3
    )
    # Calling AEs outside the allow-list are labelled "other" (bounded label cardinality).
    accepted = {"calling_ae": "other", "outcome": "accepted"}
    assert sample_value(after, "dicom_adapter_associations_total", **accepted) >= 1
    assert sample_value(after, "dicom_adapter_instances_received_total") >= 3
    # The STOW-RS batch series move too (they stayed at zero once delivery moved to the
    # pipeline): batch sizes sum to the instances sent, results counted per instance.
    assert (
        sample_value(after, "dicom_adapter_upload_batch_size_sum")
        - sample_value(before, "dicom_adapter_upload_batch_size_sum")
        == 3
    )
    assert sample_value(after, "dicom_adapter_upload_batches_total", outcome="success") >= 1
    assert sample_value(after, "dicom_adapter_upload_results_total", outcome="stored") >= 3
    assert sample_value(after, "dicom_adapter_upload_batch_duration_seconds_count") >= 1
    wait_until(
        lambda: sample_value(adapter.metrics_text(), "dicom_adapter_spool_depth") == 0,
        timeout=30,
        what="the spool to drain",
    )


def test_logs_are_json_lines_without_patient_data(adapter: AdapterProcess, tmp_path: Path) -> None:
    files = make_ct_series(
        tmp_path / "ct", 2, rows=32, cols=32, patient_name=PATIENT_NAME, patient_id=PATIENT_ID
    )
    dcmsend(adapter.port, files, aet="OPSPACS", called_aet="IMPORTADAPTER")
    wait_until(
        lambda: sample_value(adapter.metrics_text(), "dicom_adapter_instances_uploaded_total") >= 2,
        timeout=30,
        what="uploads",
    )
    text = adapter.log_text()
    # The test harness marks each start of the process with a "===== starting:" line.
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("===== ")]
    assert lines
    for line in lines:
        assert line.startswith("{"), f"not a JSON log line: {line[:200]}"
        record = json.loads(line)  # every line is one JSON object (Cloud Logging)
        assert {"severity", "message", "time"} <= set(record)
    assert PATIENT_NAME not in text and "OPS^PATIENT" not in text
    assert PATIENT_ID not in text
