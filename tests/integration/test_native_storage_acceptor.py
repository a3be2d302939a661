"""The importer's native storage acceptor (adapter/dimse/storage_acceptor.py) as a sender sees
it: storage-only associations are served natively, everything else still by pynetdicom, and the
acceptor keeps the listener's limits, timeouts, shutdown and spool promises.

Real peers on 127.0.0.1: the adapter as a subprocess, dcmtk SCUs, pynetdicom requestors, a raw
socket requestor (PDUs built by hand, PS3.8 9.3) where protocol-level control is needed, and
Orthanc where the store matters. The adapters log at DEBUG so that the association's path shows:
"association accepted (native storage)" (native) or "association accepted" (pynetdicom).
"""

from __future__ import annotations

import io
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.association import Association

from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import SampleSet, make_ct_series, make_sample_set
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import LOOPBACK
from tests.peers.raw_scu import raw_c_store
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
NATIVE_ACCEPTED = "association accepted (native storage)"
FULL_STACK_ACCEPTED = "association accepted"  # DimseServer._on_established (pynetdicom)
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # PS3.4 C.6.2
VERIFICATION = "1.2.840.10008.1.1"  # PS3.4 A.4
SHUTDOWN_TIMEOUT = 25.0  # adapter.service.Supervisor's stop_timeout


# ------------------------------------------------------------------------------ adapters
def site(url: str, **dimse: Any) -> dict[str, Any]:
    return {
        "log": {"level": "DEBUG"},
        "dicomweb": {"url": url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 0.5},
        "importer": {"dimse": {"ae_title": AET, **dimse}},
    }


class ProbeFreeAdapter(AdapterProcess):
    """Waits for /readyz instead of connecting to the DIMSE port: AdapterProcess's TCP probe
    leaves a pynetdicom acceptor waiting acse_timeout (30 s) for an A-ASSOCIATE-RQ, and that
    counts against ``max_associations`` (see test_a_tcp_probe_does_not_hold_an_association_slot).
    """

    def _serving(self) -> bool:
        return requests.get(f"{self.health_url}/readyz", timeout=1.0).status_code == 200


def _start(config: dict[str, Any], tmp: Path, name: str) -> AdapterProcess:
    return AdapterProcess(config, tmp, name=name).start()


@pytest.fixture(scope="module")
def adapter(
    orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    """One adapter with the default config (native storage on), shared by this module."""
    proc = _start(site(orthanc.dicomweb_url), tmp_path_factory.mktemp("native"), "native")
    try:
        yield proc
    finally:
        proc.terminate()


@pytest.fixture
def start_adapter(tmp_path: Path) -> Iterator[Callable[..., AdapterProcess]]:
    started: list[AdapterProcess] = []

    def start(config: dict[str, Any]) -> AdapterProcess:
        proc = _start(config, tmp_path, f"adapter{len(started)}")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()


def listener_line(adapter: AdapterProcess) -> str:
    [line] = [
        r["message"] for r in adapter.log_records() if r["message"].startswith("DIMSE listener")
    ]
    return str(line)


def accepted(adapter: AdapterProcess, message: str, calling_ae: str) -> int:
    """How many associations from ``calling_ae`` were logged as accepted with ``message``."""
    return sum(
        1
        for r in adapter.log_records()
        if r["message"] == message and r.get("calling_ae") == calling_ae
    )


def incoming(adapter: AdapterProcess) -> list[Path]:
    return sorted((adapter.workdir / "spool" / "incoming").iterdir())


def partial_files(adapter: AdapterProcess) -> list[Path]:
    return sorted((adapter.workdir / "spool" / "incoming").glob("native-*.part"))


def ready(adapter: AdapterProcess) -> list[Path]:
    return sorted((adapter.workdir / "spool" / "ready").iterdir())


def wait_spool_drained(adapter: AdapterProcess) -> None:
    wait_until(lambda: not ready(adapter), 30, interval=0.1, what="the spool's ready/ to drain")


def sop_instance_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def wait_in_store(orthanc: OrthancPeer, uids: set[str], timeout: float = 30.0) -> None:
    wait_until(
        lambda: uids <= orthanc.sop_instance_uids(),
        timeout,
        interval=0.1,
        what=f"{len(uids)} instances in Orthanc",
    )


def assert_stored_as_sent(orthanc: OrthancPeer, files: list[Path]) -> None:
    for path in files:
        sent = pydicom.dcmread(path)
        stored = pydicom.dcmread(io.BytesIO(orthanc.get_instance_file(str(sent.SOPInstanceUID))))
        assert stored.SOPInstanceUID == sent.SOPInstanceUID
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID, path.name
        assert stored.PixelData == sent.PixelData, f"{path.name}: pixel data differs"


def dataset_bytes(path: Path) -> bytes:
    """The data set of a Part-10 file as it travels (everything after the File Meta group)."""
    data = path.read_bytes()
    meta_length = 12 + int.from_bytes(data[140:144], "little")
    return data[132 + meta_length :]


def requestor(aet: str, *contexts: str) -> AE:
    """A pynetdicom requestor that never times out by itself while holding an association."""
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = 10
    ae.network_timeout = None
    for abstract in contexts:
        ae.add_requested_context(abstract, ExplicitVRLittleEndian)
    return ae


def associate(ae: AE, port: int) -> Association:
    return ae.associate(LOOPBACK, port, ae_title=AET)


def associate_when_free(ae: AE, adapter: AdapterProcess) -> Association:
    """The first association on an adapter with ``max_associations: 1``: a pynetdicom
    association released by an earlier test keeps its slot for a few ms while it winds down."""

    def attempt() -> Association | None:
        assoc = associate(ae, adapter.port)
        return assoc if assoc.is_established else None

    return wait_until(attempt, 5, interval=0.02, what="a free association slot")


def rejections(adapter: AdapterProcess, calling_ae: str) -> list[str]:
    return [
        r["message"]
        for r in adapter.log_records()
        if r["message"].startswith("association rejected") and r.get("calling_ae") == calling_ae
    ]


# ------------------------------------------------------------------------------ raw PDUs
def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(calling_ae: str, sop_class: str = CTImageStorage) -> bytes:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2): one presentation context (id 1, Explicit VR LE)."""
    body = struct.pack(">HH", 1, 0) + AET.encode().ljust(16) + calling_ae.encode().ljust(16)
    body += bytes(32) + _item(0x10, b"1.2.840.10008.3.1.1.1")
    syntax = _item(0x30, sop_class.encode()) + _item(0x40, ExplicitVRLittleEndian.encode())
    body += _item(0x20, bytes([1, 0, 0, 0]) + syntax)
    user = _item(0x51, struct.pack(">L", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.8.498.1")
    body += _item(0x50, user)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def p_data(value: bytes, *, command: bool, last: bool, context_id: int = 1) -> bytes:
    """P-DATA-TF (PS3.8 9.3.5) with one PDV."""
    header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    pdv = struct.pack(">LBB", len(value) + 2, context_id, header) + value
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


A_ABORT_RQ = struct.pack(">BBL", 0x07, 0, 4) + bytes([0, 0, 0, 0])  # source: service user


def c_store_rq(sop_class: str, sop_instance: str) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1), Implicit VR LE, with a data set following."""
    cmd = Dataset()
    cmd.AffectedSOPClassUID = sop_class
    cmd.CommandField = 0x0001
    cmd.MessageID = 1
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000
    cmd.AffectedSOPInstanceUID = sop_instance

    def encode(ds: Dataset) -> bytes:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, True
        write_dataset(fp, ds)
        return fp.getvalue()

    cmd.CommandGroupLength = len(encode(cmd))
    return encode(cmd)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """(type, body) of the next PDU; raises EOFError when the peer closed the connection."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError(f"connection closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    kind, _, length = struct.unpack(">BBL", exactly(6))
    return kind, exactly(length)


def raw_association(port: int, calling_ae: str) -> socket.socket:
    """A connected socket with an accepted association (context 1: CT, Explicit VR LE)."""
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    sock.sendall(associate_rq(calling_ae))
    kind, body = read_pdu(sock)
    assert kind == 0x02, f"expected A-ASSOCIATE-AC, got PDU type 0x{kind:02X}"
    items = body[68:]  # after version, AE titles and reserved bytes: the variable items
    context = items[4 + int.from_bytes(items[2:4], "big") :]  # after the application context
    assert (context[0], context[4], context[6]) == (0x21, 1, 0), "context 1 not accepted"
    return sock


# ------------------------------------------------------------------------------ tests
def test_storescu_instances_arrive_byte_equal_through_the_native_acceptor(
    orthanc: OrthancPeer, adapter: AdapterProcess, tmp_path: Path
) -> None:
    samples: SampleSet = make_sample_set(tmp_path / "samples", ct_instances=2)
    result = dcmtk.storescu(adapter.port, samples.files, called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == len(samples.files)
    wait_in_store(orthanc, samples.uids)
    assert_stored_as_sent(orthanc, list(samples.files))
    assert "native storage" in listener_line(adapter)
    assert accepted(adapter, NATIVE_ACCEPTED, "STORESCU") == 1
    assert accepted(adapter, FULL_STACK_ACCEPTED, "STORESCU") == 0


def test_storescu_instances_arrive_through_pynetdicom_with_native_storage_off(
    orthanc: OrthancPeer, start_adapter: Callable[..., AdapterProcess], tmp_path: Path
) -> None:
    off = start_adapter(site(orthanc.dicomweb_url, native_storage=False))
    files = make_ct_series(tmp_path / "ct", 3, rows=64, cols=64)
    result = dcmtk.storescu(off.port, files, called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == 3
    wait_in_store(orthanc, {sop_instance_uid(f) for f in files})
    assert_stored_as_sent(orthanc, files)
    assert "native storage" not in listener_line(off)
    assert accepted(off, FULL_STACK_ACCEPTED, "STORESCU") == 1
    assert accepted(off, NATIVE_ACCEPTED, "STORESCU") == 0


def test_an_association_proposing_storage_and_c_find_is_served_by_pynetdicom(
    orthanc: OrthancPeer, adapter: AdapterProcess, tmp_path: Path
) -> None:
    [file] = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)
    ds = pydicom.dcmread(file)
    ae = requestor("MIXEDSCU", CTImageStorage, STUDY_ROOT_FIND)
    assoc = associate(ae, adapter.port)
    try:
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
        wait_in_store(orthanc, {str(ds.SOPInstanceUID)})
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ds.StudyInstanceUID
        responses = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
        statuses = [int(status.Status) for status, _ in responses]
        assert statuses == [0xFF00, 0x0000], statuses
        identifier = responses[0][1]
        assert identifier is not None and identifier.StudyInstanceUID == ds.StudyInstanceUID
        assoc.release()
    finally:
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()
    assert accepted(adapter, FULL_STACK_ACCEPTED, "MIXEDSCU") == 1
    assert accepted(adapter, NATIVE_ACCEPTED, "MIXEDSCU") == 0

    found = dcmtk.findscu(
        adapter.port, {"StudyInstanceUID": str(ds.StudyInstanceUID)}, called_aet=AET
    ).check()
    assert dcmtk.count_find_responses(found) == 1
    assert accepted(adapter, FULL_STACK_ACCEPTED, "FINDSCU") == 1


def test_c_echo_on_a_native_association_succeeds(adapter: AdapterProcess) -> None:
    result = dcmtk.echoscu(adapter.port, called_aet=AET).check()
    assert "Received Echo Response (Success)" in result.output
    assert accepted(adapter, NATIVE_ACCEPTED, "ECHOSCU") == 1


def test_a_data_set_whose_uid_differs_from_the_command_is_refused_and_not_spooled(
    orthanc: OrthancPeer, adapter: AdapterProcess, tmp_path: Path
) -> None:
    [file] = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)
    wait_spool_drained(adapter)
    announced = generate_uid()
    result = raw_c_store(
        adapter.port, CTImageStorage, announced, dataset_bytes(file), called_aet=AET
    )
    assert (result.status, result.error_comment, result.aborted) == (
        0xC000,
        "SOP Instance UID differs from AffectedSOPInstanceUID",
        False,
    )
    assert incoming(adapter) == [] and ready(adapter) == []
    assert orthanc.find_instance_id(announced) is None
    assert orthanc.find_instance_id(sop_instance_uid(file)) is None
    assert accepted(adapter, NATIVE_ACCEPTED, "RAWSCU") >= 1


@pytest.mark.parametrize("how", ["a-abort", "connection-closed-inside-a-pdv"])
def test_an_association_ended_in_the_middle_of_a_data_set_leaves_nothing_behind(
    how: str, orthanc: OrthancPeer, adapter: AdapterProcess, tmp_path: Path
) -> None:
    cut, good = make_ct_series(tmp_path / "ct", 2, rows=128, cols=128)
    uid = sop_instance_uid(cut)
    body = dataset_bytes(cut)
    half = body[: len(body) // 2]
    wait_spool_drained(adapter)

    sock = raw_association(adapter.port, "HALFSCU")
    try:
        sock.sendall(p_data(c_store_rq(CTImageStorage, uid), command=True, last=True))
        [part] = wait_until(
            lambda: partial_files(adapter), 10, interval=0.01, what="a native-*.part file"
        )
        if how == "a-abort":
            sock.sendall(p_data(half, command=False, last=False))
            wait_until(
                lambda: part.stat().st_size > len(half),
                10,
                interval=0.01,
                what=f"half the data set in {part.name}",
            )
            sock.sendall(A_ABORT_RQ)
            with pytest.raises((EOFError, ConnectionResetError)):
                read_pdu(sock)  # the acceptor closes without answering (PS3.8 9.1.3)
        else:  # a PDV that announces the whole data set, of which half comes
            sock.sendall(p_data(body, command=False, last=True)[: 12 + len(half)])
    finally:
        sock.close()

    wait_until(lambda: not part.exists(), 10, interval=0.02, what=f"{part.name} removed")
    assert incoming(adapter) == [] and ready(adapter) == []
    assert orthanc.find_instance_id(uid) is None

    dcmtk.storescu(adapter.port, [good], called_aet=AET).check()  # still serving
    wait_in_store(orthanc, {sop_instance_uid(good)})
    assert adapter.is_running


@pytest.fixture(scope="module")
def limited(
    orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    """``max_associations: 1``, started without a TCP probe of its DIMSE port."""
    config = site(orthanc.dicomweb_url, max_associations=1)
    proc = ProbeFreeAdapter(config, tmp_path_factory.mktemp("limited"), name="limited").start()
    try:
        yield proc
    finally:
        proc.terminate()


def test_the_association_limit_rejects_a_storage_association_until_one_is_released(
    limited: AdapterProcess,
) -> None:
    ae = requestor("HOLDSCU", CTImageStorage)
    other = requestor("SECONDSCU", CTImageStorage)
    held = associate_when_free(ae, limited)
    try:
        second = associate(other, limited.port)
        assert second.is_rejected
        rj = second.acceptor.primitive
        assert rj is not None
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # transient
        assert rejections(limited, "SECONDSCU") == [
            "association rejected: local limit exceeded (1 associations)"
        ]
        held.release()
        again = associate(other, limited.port)
        assert again.is_established, "a new association is refused after the release"
        again.release()
    finally:
        for requestor_ae in (ae, other):
            for assoc in requestor_ae.active_associations:
                assoc.abort()
            requestor_ae.shutdown()
    assert accepted(limited, NATIVE_ACCEPTED, "SECONDSCU") == 1


def test_a_pynetdicom_association_counts_against_the_limit_of_native_ones(
    limited: AdapterProcess,
) -> None:
    finder = requestor("FINDHOLD", STUDY_ROOT_FIND)
    held = associate_when_free(finder, limited)
    try:
        refused = dcmtk.echoscu(limited.port, called_aet=AET)
        assert not refused.ok and "Local Limit Exceeded" in refused.output, refused.output
        held.release()
    finally:
        if held.is_established:
            held.abort()
        finder.shutdown()
    assert rejections(limited, "ECHOSCU") == [
        "association rejected: local limit exceeded (1 associations)"
    ]


def test_a_native_association_counts_against_the_limit_of_pynetdicom_ones(
    limited: AdapterProcess,
) -> None:
    ae = requestor("HOLDSCU2", CTImageStorage)
    held = associate_when_free(ae, limited)
    try:
        found = dcmtk.findscu(limited.port, {"StudyInstanceUID": generate_uid()}, called_aet=AET)
        assert not found.ok and "Local Limit Exceeded" in found.output, found.output
        held.release()
    finally:
        if held.is_established:
            held.abort()
        ae.shutdown()
    assert accepted(limited, FULL_STACK_ACCEPTED, "FINDSCU") == 0
    assert accepted(limited, NATIVE_ACCEPTED, "HOLDSCU2") == 1


def test_a_tcp_probe_does_not_hold_an_association_slot(
    orthanc: OrthancPeer, tmp_path: Path
) -> None:
    config = site(orthanc.dicomweb_url, max_associations=1)
    with ProbeFreeAdapter(config, tmp_path, name="probed") as probed:
        with socket.create_connection((LOOPBACK, probed.port), timeout=5):
            pass  # what a load balancer's TCP health check does
        time.sleep(0.2)  # let the listener see the close
        ae = requestor("AFTERPROBE", CTImageStorage)
        try:
            assoc = associate(ae, probed.port)
            assert assoc.is_established, "storage association refused after a TCP probe"
            assoc.release()
        finally:
            ae.shutdown()


def test_an_idle_native_association_is_aborted_after_the_network_timeout(
    orthanc: OrthancPeer, start_adapter: Callable[..., AdapterProcess]
) -> None:
    idle = start_adapter(site(orthanc.dicomweb_url, network_timeout=1))
    sock = raw_association(idle.port, "IDLESCU")
    try:
        start = time.monotonic()
        sock.settimeout(10)
        kind, _ = read_pdu(sock)
        waited = time.monotonic() - start
        assert kind == 0x07, f"expected A-ABORT, got PDU type 0x{kind:02X}"
        with pytest.raises(EOFError):
            read_pdu(sock)
    finally:
        sock.close()
    assert 0.8 <= waited <= 4.0, f"aborted after {waited:.2f}s with network_timeout: 1"
    idle.wait_for_log(r"association idle for 1s: aborting")

    # the timeout is per read, not per association: a busy association outlives it
    ae = requestor("BUSYSCU", VERIFICATION)
    busy = associate(ae, idle.port)
    try:
        assert busy.is_established
        for _ in range(5):
            assert busy.send_c_echo().Status == 0x0000
            time.sleep(0.4)
        assert busy.is_established
        busy.release()
    finally:
        if busy.is_established:
            busy.abort()
        ae.shutdown()


def test_stopping_the_adapter_aborts_a_held_association_within_the_shutdown_timeout(
    orthanc: OrthancPeer, start_adapter: Callable[..., AdapterProcess]
) -> None:
    stopping = start_adapter(site(orthanc.dicomweb_url))
    ae = requestor("HOLDSCU", CTImageStorage)
    held = associate(ae, stopping.port)
    try:
        assert held.is_established
        start = time.monotonic()
        code = stopping.terminate(timeout=SHUTDOWN_TIMEOUT + 4)
        took = time.monotonic() - start
        wait_until(lambda: held.is_aborted, 5, interval=0.05, what="the requestor to see A-ABORT")
    finally:
        if held.is_established:
            held.abort()
        ae.shutdown()
    assert code == 0, f"adapter exit code {code}"
    assert took < SHUTDOWN_TIMEOUT + 4, f"shutdown took {took:.1f}s"
    assert "aborting an association still open at shutdown" in stopping.log_text()
