"""DIMSE conformance as real dcmtk senders see it: called AE title checking (PS3.8 9.3.4), the
adapter's own Implementation Class UID and Version Name (PS3.7 D.3.3.2-3) on the wire and in the
File Meta of spooled files, upper-layer behaviour (PS3.8 9.3.8, 9.1.1) and the operator's log.

The adapter runs as a subprocess (as deployed) in front of the session Orthanc.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.orthanc import OrthancPeer
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"


def site(url: str, **dimse: Any) -> dict[str, Any]:
    return {
        "dicomweb": {"url": url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 0.5},
        "importer": {"dimse": {"ae_title": AET, **dimse}},
    }


@pytest.fixture(scope="module")
def adapter(
    orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    """One adapter with the default config, shared by this module."""
    proc = AdapterProcess(
        site(orthanc.dicomweb_url), tmp_path_factory.mktemp("conformance"), name="conf"
    ).start()
    try:
        yield proc
    finally:
        proc.terminate()


@pytest.fixture
def start_adapter(tmp_path: Path) -> Iterator[Callable[..., AdapterProcess]]:
    started: list[AdapterProcess] = []

    def start(config: dict[str, Any] | None = None, **kwargs: Any) -> AdapterProcess:
        proc = AdapterProcess(config, tmp_path, name=f"adapter{len(started)}", **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.terminate()


def spooled(adapter: AdapterProcess) -> list[Path]:
    """Instance files in the spool (its lock file aside)."""
    return [
        p
        for p in (adapter.workdir / "spool").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    ]


# ------------------------------------------------------------------ item 1: called AE title
def test_a_c_store_to_a_wrong_called_ae_title_is_rejected(
    adapter: AdapterProcess, orthanc: OrthancPeer, tmp_path: Path
) -> None:
    [file] = make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)
    for sender in (dcmtk.storescu, dcmtk.dcmsend):  # dcmsend names the reason with -d
        result = sender(adapter.port, [file], called_aet="WRONGAE", extra_args=["-d"])
        assert not result.ok, result.output
        out = result.output.lower()
        assert "rejected permanent" in out and "called ae title not recognized" in out, out
        assert dcmtk.count_store_successes(result) == 0
    assert "called AE title not recognized" in adapter.wait_for_log(
        r"association rejected: called AE title not recognized[^\"]*"
    ).group(0)
    records = [r for r in adapter.log_records() if r.get("called_ae") == "WRONGAE"]
    assert records and all(r["severity"] == "WARNING" for r in records)
    assert spooled(adapter) == []
    # the right called AE title on the same listener is served
    assert dcmtk.storescu(adapter.port, [file], called_aet=AET).ok


def test_called_ae_title_check_can_be_switched_off(
    start_adapter: Callable[..., AdapterProcess], orthanc: OrthancPeer, tmp_path: Path
) -> None:
    proc = start_adapter(site(orthanc.dicomweb_url, check_called_aet=False))
    [file] = make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)
    result = dcmtk.storescu(proc.port, [file], called_aet="ANYTHING")
    assert result.ok and dcmtk.count_store_successes(result) == 1, result.output
    sop = str(pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID)
    wait_until(lambda: sop in orthanc.sop_instance_uids(), timeout=30, what="the upload")
