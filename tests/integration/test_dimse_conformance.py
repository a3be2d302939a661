"""DIMSE conformance as real dcmtk senders see it: called AE title checking (PS3.8 9.3.4), the
adapter's own Implementation Class UID and Version Name (PS3.7 D.3.3.2-3) on the wire and in the
File Meta of spooled files, upper-layer behaviour (PS3.8 9.3.8, 9.1.1) and the operator's log.

The adapter runs as a subprocess (as deployed) in front of the session Orthanc.
"""

from __future__ import annotations

import re
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


# ------------------------------------------------------------------ item 6: implementation
IMPL_UID = "2.25.70996986412795658175058173043772019407"
IMPL_VERSION = "DICOMADAPTER_0_1"


def announced(output: str) -> tuple[str, str]:
    """The peer's Implementation Class UID and Version Name in dcmtk's -d output."""
    uid = re.findall(r"Their Implementation Class UID:[ \t]*(\S+)", output)
    version = re.findall(r"Their Implementation Version Name:[ \t]*(\S+)", output)
    assert uid and version, output
    return uid[-1], version[-1]


def test_dcmtk_sees_our_implementation_class_uid_on_both_acceptor_paths(
    adapter: AdapterProcess, tmp_path: Path
) -> None:
    [file] = make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)
    native = dcmtk.storescu(adapter.port, [file], called_aet=AET, extra_args=["-d"])
    assert native.ok and announced(native.output) == (IMPL_UID, IMPL_VERSION)
    full_stack = dcmtk.findscu(  # query/retrieve: pynetdicom's acceptor
        adapter.port, {"PatientID": "NOBODY"}, called_aet=AET, extra_args=["-d"]
    )
    assert full_stack.ok and announced(full_stack.output) == (IMPL_UID, IMPL_VERSION)
    assert "PYNETDICOM" not in native.output + full_stack.output


def test_the_store_requestor_announces_our_implementation_class_uid(tmp_path: Path) -> None:
    from adapter.dimse.client import StoreScu

    peer = dcmtk.StoreScpPeer(tmp_path / "in", aet="PACS", extra_args=["-d"]).start()
    try:
        [file] = make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)
        scu = StoreScu("PACS", "127.0.0.1", peer.port or 0, pool_size=1)
        try:
            assert scu.send_file(file) == 0
        finally:
            scu.close()
        peer.wait_for_files(1)
        assert announced(peer.log_tail(200_000)) == (IMPL_UID, IMPL_VERSION)
    finally:
        peer.cleanup()


@pytest.mark.parametrize("native_storage", [True, False])
def test_received_files_carry_our_implementation_class_uid_in_their_file_meta(
    start_adapter: Callable[..., AdapterProcess], tmp_path: Path, native_storage: bool
) -> None:
    from tests.peers.ports import free_port

    # the store is down: the instance stays in the spool, as received
    config = site(f"http://127.0.0.1:{free_port()}/dicom-web", native_storage=native_storage)
    config["retry"] = {"max_attempts": 0, "initial_delay": 30, "max_delay": 60}
    proc = start_adapter(config)
    [file] = make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)
    assert dcmtk.storescu(proc.port, [file], called_aet=AET).ok
    [spooled_file] = wait_until(lambda: spooled(proc) or None, timeout=10, what="a spool file")
    meta = pydicom.dcmread(spooled_file, stop_before_pixels=True).file_meta
    assert (meta.ImplementationClassUID, meta.ImplementationVersionName) == (
        IMPL_UID,
        IMPL_VERSION,
    )
