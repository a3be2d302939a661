"""What the spool promises: an acknowledged instance reaches the store whatever happens to the
adapter or the store in between; what cannot be delivered is kept with its reason; hostile
input and a full spool get precise statuses."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from adapter.spool import adopt_into_spool
from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess, kill9_during_send
from tests.peers.datasets import make_ct_series
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port
from tests.peers.raw_scu import raw_c_store
from tests.peers.wait import spawn, stop_process, wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
_RESPONSE = re.compile(
    r"Received C-STORE Response.*?Affected SOP Instance UID\s*:\s*([0-9.]+).*?"
    r"DIMSE Status\s*:\s*0x0000",
    re.S,
)


def site(url: str, **importer: Any) -> dict[str, Any]:
    return {
        "dicomweb": {"url": url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 0.5},
        "importer": {"dimse": {"ae_title": AET}, **importer},
    }


@pytest.fixture
def start_adapter(tmp_path: Path) -> Iterator[Callable[..., AdapterProcess]]:
    started: list[AdapterProcess] = []

    def start(config: dict[str, Any]) -> AdapterProcess:
        proc = AdapterProcess(config, tmp_path, name=f"adapter{len(started)}")
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.terminate()


def uids_of(files: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def ready_files(adapter: AdapterProcess) -> list[Path]:
    """Instances held durably: in the spool, or routed into a destination's outbox."""
    spool = adapter.workdir / "spool"
    found: dict[tuple[int, int], Path] = {}
    for path in [*(spool / "ready").glob("*.dcm"), *(spool / "outbox").glob("*/ready/*.dcm")]:
        with contextlib.suppress(FileNotFoundError):  # a link removed as it was routed
            st = path.stat()
            found.setdefault((st.st_dev, st.st_ino), path)  # hard links: one instance
    return sorted(found.values())


def test_kill9_in_the_middle_of_a_send_loses_no_acknowledged_instance(
    orthanc: OrthancPeer, tmp_path: Path, start_adapter: Callable[..., AdapterProcess]
) -> None:
    files = make_ct_series(tmp_path / "ct", 300, rows=64, cols=64)
    # one worker, small batches: the store falls behind, so the spool holds a backlog
    adapter = start_adapter(
        site(orthanc.dicomweb_url, upload={"workers": 1, "batch_max_instances": 5})
    )
    acked = kill9_during_send(adapter, files, tmp_path / "dcmsend.log", AET, after=100)
    assert 100 <= len(acked) < 300, "the kill did not land in the middle of the send"
    assert ready_files(adapter), "nothing was waiting in the spool at the kill"

    adapter.start()  # same spool, same ports
    wait_until(
        lambda: acked <= orthanc.sop_instance_uids(),
        60,
        interval=0.3,
        what=f"{len(acked)} acknowledged instances in Orthanc after the restart",
    )
    adapter.wait_for_log(r"spool: resuming \d+ instance")
    wait_until(lambda: not ready_files(adapter), 30, what="spool drained")


def test_after_spool_acknowledges_while_the_store_is_down_and_delivers_later(
    orthanc_factory: Callable[..., OrthancPeer],
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    store = orthanc_factory()
    store.kill()  # down before the sender starts; same address when it comes back
    adapter = start_adapter(site(store.dicomweb_url, ack="after-spool"))
    files = make_ct_series(tmp_path / "ct", 20, rows=32, cols=32)
    result = dcmtk.dcmsend(adapter.port, files, called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == 20
    assert len(ready_files(adapter)) == 20  # answered once durable, not once uploaded

    store.start()
    wait_until(
        lambda: uids_of(files) <= store.sop_instance_uids(),
        30,
        interval=0.2,
        what="20 instances delivered after the store came back",
    )


def test_a_store_outage_in_the_middle_of_a_send_loses_nothing(
    orthanc_factory: Callable[..., OrthancPeer],
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    store = orthanc_factory()
    adapter = start_adapter(site(store.dicomweb_url))
    files = make_ct_series(tmp_path / "ct", 120, rows=32, cols=32)
    out = tmp_path / "dcmsend.log"
    sender = spawn(
        [
            dcmtk.dcmtk_tool("dcmsend"),
            "-v",
            "-aec",
            AET,
            "127.0.0.1",
            str(adapter.port),
            *map(str, files),
        ],
        out,
        env=dcmtk.dcmtk_env(),
    )
    try:
        wait_until(
            lambda: store.instance_count() >= 20, 30, interval=0.02, what="the first uploads"
        )
        store.kill()
        assert sender.wait(60) == 0
    finally:
        stop_process(sender, timeout=5)
    assert "with status SUCCESS  : 120" in out.read_text()
    assert ready_files(adapter)  # waiting out the outage on disk
    store.start()
    wait_until(
        lambda: uids_of(files) <= store.sop_instance_uids(),
        60,
        interval=0.3,
        what="all 120 instances delivered after the outage",
    )


def test_an_instance_the_store_rejects_is_dead_lettered_and_the_others_stored(
    orthanc: OrthancPeer, tmp_path: Path, start_adapter: Callable[..., AdapterProcess]
) -> None:
    """The C-STORE check refuses a data set without its series now; one still reaches the
    spool the way an operator's ``deadletters retry`` (or an older version's spool) puts it
    there, without a check, and the store's rejection must then end in a dead letter."""
    files = make_ct_series(tmp_path / "ct", 4, rows=32, cols=32)
    bad = pydicom.dcmread(files[2])
    del bad.SeriesInstanceUID  # Orthanc refuses an instance without its series
    bad.save_as(files[2])
    adapter = start_adapter(site(orthanc.dicomweb_url, upload={"batch_linger": 0.5}))
    refused = dcmtk.storescu(adapter.port, files, called_aet=AET)
    assert dcmtk.store_response_statuses(refused).count("Success") == 3
    requeued = tmp_path / "requeued.dcm"
    requeued.write_bytes(files[2].read_bytes())
    adopt_into_spool(adapter.workdir / "spool", requeued)  # found at the next rescan
    good = uids_of(files) - {str(bad.SOPInstanceUID)}
    wait_until(lambda: good <= orthanc.sop_instance_uids(), 30, what="the good instances")

    def one_dead_letter() -> str | None:
        out = _deadletters(adapter)
        return out if "1 dead letter(s)" in out else None

    listing = wait_until(one_dead_letter, 30, interval=0.2, what="the dead letter")
    assert str(bad.SOPInstanceUID) in listing
    assert "store rejected it: FailureReason 0xC000" in listing
    assert str(bad.SOPInstanceUID) not in orthanc.sop_instance_uids()


def _deadletters(adapter: AdapterProcess) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "adapter.cli",
            "deadletters",
            "list",
            "--config",
            str(adapter.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout


def test_a_full_spool_answers_out_of_resources(
    tmp_path: Path, start_adapter: Callable[..., AdapterProcess]
) -> None:
    files = make_ct_series(tmp_path / "ct", 5, rows=32, cols=32)
    budget = sum(f.stat().st_size for f in files[:3]) + 100
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing drains the spool
    adapter = start_adapter(site(closed, spool={"max_bytes": budget}))
    result = dcmtk.storescu(adapter.port, files, called_aet=AET)
    assert (
        dcmtk.store_response_statuses(result) == ["Success"] * 3 + ["Refused: OutOfResources"] * 2
    )
    adapter.wait_for_log("C-STORE refused: spool full")
    assert len(ready_files(adapter)) == 3


def test_hostile_sop_instance_uids_get_a_failure_and_write_nothing_outside_the_spool(
    orthanc: OrthancPeer, tmp_path: Path, start_adapter: Callable[..., AdapterProcess]
) -> None:
    adapter = start_adapter(site(orthanc.dicomweb_url))
    [good] = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)
    ds = pydicom.dcmread(good)
    body = good.read_bytes()[132 + _meta_length(good) :]  # the data set as it is on the wire
    before = {p for p in tmp_path.rglob("*") if p.is_file()}

    for uid in ("../../etc/x", "1.2\x00.3", "/etc/passwd"):
        result = raw_c_store(adapter.port, ds.SOPClassUID, uid, body, called_aet=AET)
        assert (result.status, result.error_comment) == (
            0xC000,
            "invalid AffectedSOPInstanceUID (PS3.5 9.1)",
        ), uid
    # 10,001 characters: the native acceptor answers it like any other bad UID (pynetdicom,
    # which still serves TLS associations, aborts the association on it instead)
    huge = raw_c_store(
        adapter.port, ds.SOPClassUID, "1." * 5000 + "1", body, called_aet=AET, timeout=10
    )
    assert (huge.status, huge.error_comment, huge.aborted) == (
        0xC000,
        "invalid AffectedSOPInstanceUID (PS3.5 9.1)",
        False,
    )

    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    unexpected = {
        p for p in written if p.name not in ("adapter.log",) and "provenance.sqlite" not in p.name
    }
    assert unexpected == set()
    assert not (adapter.workdir / "etc").exists() and not ready_files(adapter)
    assert list((adapter.workdir / "spool" / "incoming").iterdir()) == []

    dcmtk.dcmsend(adapter.port, [good], called_aet=AET).check()  # still serving
    wait_until(
        lambda: str(ds.SOPInstanceUID) in orthanc.sop_instance_uids(), 30, what="the good instance"
    )
    log = adapter.log_text()
    assert (
        "1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1" * 3 not in log
    ), "a 10,000-character UID was logged in full"


def _meta_length(path: Path) -> int:
    """Length of the File Meta Information group after the 132-byte preamble + 'DICM'."""
    data = path.read_bytes()
    return 12 + int.from_bytes(data[140:144], "little")
