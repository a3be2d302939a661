"""The requestor side of the native DIMSE code (adapter/dimse/store_requestor.py and the PDUs it
uses), checked against pynetdicom's encoder/decoder and a pynetdicom Storage SCP; and the
spool's group-committed directory fsync."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE, _config, evt
from pynetdicom import pdu as npdu
from pynetdicom.dsutils import decode, split_dataset

from adapter import spool_files
from adapter.dimse.command_set import decode_response, encode_c_store_rq
from adapter.dimse.pdu import (
    AssociateAccept,
    PduError,
    encode_associate_ac,
    encode_associate_rq,
    parse_associate_ac,
    parse_associate_rq,
)
from adapter.dimse.store_requestor import (
    AssociationAbortedError,
    AssociationRejectedError,
    ConnectFailedError,
    StoreAssociation,
)
from tests.peers.datasets import make_ct_series
from tests.peers.ports import free_port

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
IMPL_UID = "1.2.826.0.1.3680043.8.498.1"


def test_associate_rq_decodes_with_pynetdicom() -> None:
    raw = encode_associate_rq(
        "PACS",
        "EXPORTADAPTER",
        [(1, CT, (EXPLICIT, IMPLICIT)), (3, "1.2.840.10008.1.1", (IMPLICIT,))],
        max_pdu_length=0,
        implementation_class_uid=IMPL_UID,
        implementation_version_name="DICOMADAPTER",
    )
    theirs = npdu.A_ASSOCIATE_RQ()
    theirs.decode(raw)
    assert theirs.called_ae_title == "PACS" and theirs.calling_ae_title == "EXPORTADAPTER"
    contexts = theirs.presentation_context
    assert [(cx.context_id, str(cx.abstract_syntax)) for cx in contexts] == [
        (1, CT),
        (3, "1.2.840.10008.1.1"),
    ]
    assert [str(ts) for ts in contexts[0].transfer_syntax] == [EXPLICIT, IMPLICIT]
    ours = parse_associate_rq(raw)  # and our own acceptor reads what our requestor writes
    assert ours.called_ae == "PACS" and ours.max_pdu_length == 0


def test_associate_ac_written_by_our_acceptor_is_read_back() -> None:
    rq = parse_associate_rq(
        encode_associate_rq(
            "IMPORTADAPTER",
            "PACS",
            [(1, CT, (EXPLICIT,)), (3, "1.2.3.4", (IMPLICIT,))],
            max_pdu_length=16384,
            implementation_class_uid=IMPL_UID,
            implementation_version_name="",
        )
    )
    raw = encode_associate_ac(
        rq,
        {1: (0, EXPLICIT), 3: (3, IMPLICIT)},
        max_pdu_length=65536,
        implementation_class_uid=IMPL_UID,
        implementation_version_name="X",
    )
    assert parse_associate_ac(raw) == AssociateAccept({1: (0, EXPLICIT), 3: (3, IMPLICIT)}, 65536)


@pytest.mark.parametrize("cut", [10, 73, 80])
def test_a_cut_associate_ac_is_a_pdu_error(cut: int) -> None:
    rq = parse_associate_rq(
        encode_associate_rq(
            "A",
            "B",
            [(1, CT, (EXPLICIT,))],
            max_pdu_length=0,
            implementation_class_uid=IMPL_UID,
            implementation_version_name="",
        )
    )
    raw = encode_associate_ac(
        rq,
        {1: (0, EXPLICIT)},
        max_pdu_length=0,
        implementation_class_uid=IMPL_UID,
        implementation_version_name="",
    )
    with pytest.raises(PduError):
        parse_associate_ac(raw[:cut])


def test_c_store_rq_decodes_with_pynetdicom_and_a_response_is_read() -> None:
    raw = encode_c_store_rq(7, CT, "1.2.3.4.5")
    ds = decode(BytesIO(raw), True, True)
    assert (ds.CommandField, ds.MessageID, ds.AffectedSOPClassUID, ds.AffectedSOPInstanceUID) == (
        1,
        7,
        CT,
        "1.2.3.4.5",
    )
    assert ds.CommandDataSetType != 0x0101
    rsp = struct.pack("<HHL", 0, 0x0100, 2) + struct.pack("<H", 0x8001)
    rsp += struct.pack("<HHL", 0, 0x0120, 2) + struct.pack("<H", 7)
    rsp += struct.pack("<HHL", 0, 0x0900, 2) + struct.pack("<H", 0xA700)
    rsp += struct.pack("<HHL", 0, 0x0902, 4) + b"full"
    response = decode_response(rsp)
    assert (response.command_field, response.message_id_being_responded_to) == (0x8001, 7)
    assert (response.status, response.error_comment) == (0xA700, "full")


# ------------------------------------------------------------------ against a pynetdicom SCP
@pytest.fixture
def scp(tmp_path: Path) -> Iterator[tuple[int, list[bytes], dict[str, Any]]]:
    """A pynetdicom Storage SCP (CT in Explicit VR LE only) that keeps what it receives."""
    received: list[bytes] = []
    behaviour: dict[str, Any] = {"status": 0x0000, "delay": 0.0}

    def on_store(event: Any) -> int:
        time.sleep(behaviour["delay"])
        if _config.STORE_RECV_CHUNKED_DATASET:  # set process-wide by adapter.dimse.server
            stored = Path(event.dataset_path)
            _, offset = split_dataset(stored)
            received.append(stored.read_bytes()[offset:])
        else:
            received.append(event.request.DataSet.getvalue())
        return int(behaviour["status"])

    ae = AE(ae_title="PACS")
    ae.add_supported_context(CT, [EXPLICIT])
    ae.add_supported_context("1.2.840.10008.1.1", [IMPLICIT])
    ae.require_called_aet = True
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield port, received, behaviour
    finally:
        server.shutdown()


def _request(port: int, called: str = "PACS", **kwargs: Any) -> StoreAssociation:
    options: dict[str, Any] = {
        "connection_timeout": 5,
        "acse_timeout": 5,
        "network_timeout": 5,
        "implementation_class_uid": IMPL_UID,
        "implementation_version_name": "TEST",
    }
    options.update(kwargs)
    return StoreAssociation.request(
        "127.0.0.1",
        port,
        called_ae=called,
        calling_ae="EXPORTADAPTER",
        contexts=[(CT, (EXPLICIT,)), (CT, (IMPLICIT,)), ("1.2.3.4", (EXPLICIT,))],
        **options,
    )


def test_a_file_is_stored_byte_for_byte_and_contexts_are_reported(
    scp: tuple[int, list[bytes], dict[str, Any]], tmp_path: Path
) -> None:
    port, received, _ = scp
    [path] = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)
    _, offset = split_dataset(path)
    assoc = _request(port)
    try:
        assert assoc.accepted == {(CT, EXPLICIT): 1} and assoc.rejected == {"1.2.3.4"}
        uid = str(dcmread(path).SOPInstanceUID)
        response = assoc.send_c_store(1, 1, CT, uid, path, offset)
        assert response.status == 0x0000
        assert received == [path.read_bytes()[offset:]]
    finally:
        assoc.release()
    assert not assoc.is_established


def test_a_failure_status_and_the_dimse_timeout(
    scp: tuple[int, list[bytes], dict[str, Any]], tmp_path: Path
) -> None:
    port, _, behaviour = scp
    [path] = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)
    _, offset = split_dataset(path)
    uid = str(dcmread(path).SOPInstanceUID)
    assoc = _request(port, dimse_timeout=0.5)
    behaviour["status"] = 0xA700
    assert assoc.send_c_store(1, 1, CT, uid, path, offset).status == 0xA700
    behaviour.update(status=0, delay=1.5)
    started = time.monotonic()
    with pytest.raises(AssociationAbortedError):
        assoc.send_c_store(3, 1, CT, uid, path, offset)
    assert time.monotonic() - started < 1.4 and not assoc.is_established


def test_rejection_refusal_and_nothing_listening(
    scp: tuple[int, list[bytes], dict[str, Any]],
) -> None:
    port, _, _ = scp
    with pytest.raises(AssociationRejectedError) as rejected:
        _request(port, called="WRONG")
    assert rejected.value.result == 1 and "called AE title not recognized" in str(rejected.value)
    with pytest.raises(ConnectFailedError):
        _request(free_port())


# ------------------------------------------------------------------ group-committed fsync
def test_every_directory_sync_caller_returns_after_an_fsync_that_began_after_its_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[float] = []
    lock = threading.Lock()

    def slow_fsync(directory: Path) -> None:
        with lock:
            started.append(time.monotonic())
        time.sleep(0.05)

    monkeypatch.setattr(spool_files, "fsync_dir", slow_fsync)
    sync = spool_files.DirectorySync(tmp_path)
    calls: list[tuple[float, float]] = []

    def caller() -> None:
        called = time.monotonic()
        sync.sync()
        with lock:
            calls.append((called, time.monotonic()))

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
        time.sleep(0.005)
    for t in threads:
        t.join(5)
    assert len(calls) == 16
    assert len(started) < 16  # shared: fewer fsyncs than callers
    for called, returned in calls:
        # some fsync began after the call and finished (50 ms) before the return
        assert any(called <= s and s + 0.05 <= returned + 0.001 for s in started)
