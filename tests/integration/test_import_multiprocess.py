"""Multi-process receive (``importer.dimse.processes: 2``): 8 parallel dcmtk senders -> the
adapter's receiving children (one port, SO_REUSEPORT) -> the parent's spool -> Orthanc; a
kill -9 of the parent leaves no child behind, and a restart delivers what was acknowledged."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"


def site(dicomweb_url: str, port: int, spool: Path, state: Path) -> dict[str, Any]:
    return {
        "dicomweb": {"url": dicomweb_url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 0.5},
        "state_dir": str(state),
        "importer": {
            "dimse": {"ae_title": AET, "port": port, "processes": 2},
            "ack": "after-spool",
            "spool": {"path": str(spool)},
        },
    }


def children_of(pid: int) -> set[int]:
    kids: set[int] = set()
    with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/task") as tasks:
        for task in tasks:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task.name}/children") as f:
                kids |= {int(k) for k in f.read().split()}
    return kids


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def send_parallel(port: int, files: list[Path], senders: int) -> int:
    groups = [files[i::senders] for i in range(senders)]
    with ThreadPoolExecutor(senders) as pool:
        results = list(
            pool.map(lambda g: dcmtk.storescu(port, g, called_aet=AET, timeout=60), groups)
        )
    return sum(dcmtk.count_store_successes(r) for r in results)


def uids_of(files: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def test_two_processes_receive_survive_parent_kill(orthanc: OrthancPeer, tmp_path: Path) -> None:
    port, spool, state = free_port(), tmp_path / "spool", tmp_path / "state"
    files = make_ct_series(tmp_path / "a", 80, rows=32, cols=32)
    adapter = AdapterProcess(site(orthanc.dicomweb_url, port, spool, state), tmp_path, name="a")
    try:
        adapter.start()
        assert adapter.pid is not None
        wait_until(lambda: len(children_of(adapter.pid or 0)) >= 2, 30, what="2 receivers")
        assert send_parallel(port, files, 8) == 80
        uids = uids_of(files)
        wait_until(lambda: uids <= orthanc.sop_instance_uids(), 30, interval=0.2, what="80 in")
    finally:
        adapter.terminate()

    # The store is down: acknowledged instances wait in the spool; then kill -9 the parent.
    dead_store = f"http://127.0.0.1:{free_port()}/dicom-web"
    more = make_ct_series(tmp_path / "b", 16, rows=32, cols=32)
    down = AdapterProcess(site(dead_store, port, spool, state), tmp_path, name="b").start()
    try:
        assert down.pid is not None
        wait_until(lambda: len(children_of(down.pid or 0)) >= 2, 30, what="2 receivers")
        kids = children_of(down.pid)
        assert send_parallel(port, more, 4) == 16
        down.kill9()
        wait_until(lambda: not any(alive(k) for k in kids), 10, interval=0.1, what="no orphans")
    finally:
        down.terminate()

    again = AdapterProcess(site(orthanc.dicomweb_url, port, spool, state), tmp_path, name="c")
    try:
        again.start()
        uids = uids_of(more)
        wait_until(lambda: uids <= orthanc.sop_instance_uids(), 30, interval=0.2, what="16 in")
    finally:
        again.terminate()
