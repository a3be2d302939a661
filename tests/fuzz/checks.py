"""The after-run checks both fuzz suites share (issue #14 item 6): the adapter answers C-ECHO,
its threads and fds are back near their baseline and its RSS has not run away, nothing is left
in the spool or the dead letters, every log line is one JSON object without a traceback or
patient data, and what the store gained since a snapshot is well formed.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import UID

from tests.fuzz.mutations import LEAKS
from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.orthanc import OrthancPeer
from tests.peers.wait import wait_until

__all__ = [
    "Baseline",
    "check_logs",
    "check_new_instances",
    "check_resources",
    "dead_letters",
    "orthanc_instance_ids",
    "resources",
    "spool_empty",
]

Baseline = tuple[int, int, int]


def resources(pid: int) -> Baseline:
    """(threads, open fds, RSS in KiB) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return int(fields["Threads"]), fds, int(fields["VmRSS"].split()[0])


def _fds(pid: int) -> list[str]:
    return sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))


def check_resources(adapter: AdapterProcess, baseline: Baseline) -> None:
    """Threads and fds settle back near ``baseline``; RSS grew by 64 MiB at most (checked
    once: it does not shrink on demand)."""
    pid = adapter.pid
    assert pid is not None

    def settled() -> bool:
        threads, fds, _ = resources(pid)
        return threads <= baseline[0] + 2 and fds <= baseline[1] + 4

    try:
        wait_until(settled, 30, interval=0.2, what=f"threads/fds back to {baseline[:2]}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: now {resources(pid)}, fds {_fds(pid)}") from None
    assert resources(pid)[2] <= baseline[2] + 64 * 1024, "RSS grew by more than 64 MiB"


def dead_letters(adapter: AdapterProcess) -> list[Path]:
    return [p for p in (adapter.workdir / "deadletter").rglob("*") if p.is_file()]


def spool_empty(adapter: AdapterProcess) -> bool:
    """Nothing waiting for delivery and nothing half-received left in incoming/."""
    spool = adapter.workdir / "spool"
    return not [
        *(spool / "ready").glob("*.dcm"),
        *(spool / "outbox").glob("*/ready/*.dcm"),
        *(spool / "incoming").glob("*.dcm"),
    ]


def check_logs(adapter: AdapterProcess) -> None:
    """Every line one JSON object, no traceback, no patient data of tests/fuzz/mutations.py."""
    for line in adapter.log_text().splitlines():
        if not line or line.startswith("===== starting: "):  # the test harness's own header
            continue
        record: Any = json.loads(line)  # one JSON object per line, nothing spliced in
        assert isinstance(record, dict), line
        text = json.dumps(record)
        assert "Traceback" not in text and "exception" not in record, line
        assert record.get("logger") != "uncaught", line  # a thread died on the input
        assert not [leak for leak in LEAKS if leak in line], line


def check_echo(adapter: AdapterProcess, called_aet: str, echo_args: Sequence[str] = ()) -> None:
    dcmtk.echoscu(adapter.port, called_aet=called_aet, extra_args=echo_args).check()


def orthanc_instance_ids(orthanc: OrthancPeer) -> set[str]:
    """Orthanc's own ids of every instance it holds (REST, not QIDO: no result limit)."""
    return set(orthanc.get_json("/instances"))


def check_new_instances(
    orthanc: OrthancPeer,
    before: set[str],
    acked: set[str],
    cases: dict[str, str] | None = None,
    cut_off: set[str] = frozenset(),  # type: ignore[assignment]
) -> int:
    """Every instance the store gained since ``before`` reads with pydicom, has valid UIDs, and
    was acknowledged -- or is in ``cut_off``: its data set arrived whole, then the association
    ended (an A-ABORT, or a close the TLS client cannot tell from one) before any answer went
    out. pynetdicom reads the next PDU while a C-STORE is being handled, so a garbled PDU
    behind a whole data set can end the association between spooling and answering; PS3.7
    leaves an aborted operation's outcome open, and the SCU's second send stores it again
    under the same UID. Returns how many it gained."""
    new = orthanc_instance_ids(orthanc) - before
    for oid in sorted(new):
        data = orthanc.request("GET", f"/instances/{oid}/file").content
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
            ds.decode()  # every element parses, not just the header
        uids = [ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID]
        assert all(UID(str(u)).is_valid for u in uids), (oid, uids)
        case = (cases or {}).get(str(ds.SOPInstanceUID), "")
        assert str(ds.SOPInstanceUID) in acked | cut_off, (
            f"{ds.SOPInstanceUID} stored, never acknowledged {case}".strip()
        )
    return len(new)


def check_after(
    adapter: AdapterProcess,
    orthanc: OrthancPeer,
    acked: set[str],
    *,
    called_aet: str,
    echo_args: Sequence[str] = (),
) -> None:
    """Whatever was acknowledged reached the store, nothing is spooled or dead-lettered, the
    store and the adapter are alive, the logs are clean."""
    wait_until(
        lambda: acked <= orthanc.sop_instance_uids() and spool_empty(adapter),
        60,
        interval=0.3,
        what=f"{len(acked)} acknowledged instances in Orthanc",
    )
    letters = [json.loads(p.read_text()) for p in dead_letters(adapter) if p.suffix == ".json"]
    assert letters == [], "acknowledged, then rejected by the store"
    assert orthanc.is_running, "the store died"
    check_echo(adapter, called_aet, echo_args)
    check_logs(adapter)
