"""Hostile A-ASSOCIATE-RQs and P-DATA-TF PDUs (issue #14) against the adapter's listener: one
data set per command and nothing after its last fragment (PS3.7 6.3.1, PS3.8 9.3.5), AE titles
of the AE repertoire (PS3.5 6.2), protocol version 1 and a User Information Item (PS3.8 9.3.2),
each refused with a precise status, A-ASSOCIATE-RJ or A-ABORT, never a bare close.

PDUs built by hand on a raw socket (dcmtk cannot send them); the adapter is a subprocess with
native storage on, in front of the session Orthanc.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from adapter.dimse.command_set import decode_response, encode_c_store_rq
from adapter.dimse.pdu import encode_associate_rq, encode_p_data
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import LOOPBACK
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"


def _running_adapter(
    orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory, name: str, **dimse: Any
) -> Iterator[AdapterProcess]:
    """An importer in front of ``orthanc`` with ``dimse`` settings, stopped afterwards."""
    config = {
        "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 0.5},
        "importer": {"dimse": {"ae_title": AET, **dimse}},
    }
    proc = AdapterProcess(config, tmp_path_factory.mktemp(name), name=name).start()
    try:
        yield proc
    finally:
        proc.terminate()


@pytest.fixture(scope="module")
def adapter(
    orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    yield from _running_adapter(orthanc, tmp_path_factory, "pdus", allowed_calling_aets=["RAWSCU"])


def spooled(adapter: AdapterProcess) -> list[Path]:
    spool = adapter.workdir / "spool"
    return [p for p in spool.rglob("*") if p.is_file() and not p.name.startswith(".")]


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = sock.recv(6, socket.MSG_WAITALL)
    if len(header) < 6:
        raise EOFError(f"connection closed after {len(header)} bytes")
    kind, _, length = struct.unpack(">BBL", header)
    return kind, sock.recv(length, socket.MSG_WAITALL)


def rq(
    calling: bytes = b"RAWSCU",
    called: bytes = AET.encode(),
    *,
    version: int = 1,
    user_information: bool = True,
    syntaxes: tuple[str, ...] = (ExplicitVRLittleEndian,),
) -> bytes:
    pdu = bytearray(
        encode_associate_rq(
            "X",
            "Y",
            [(1, CTImageStorage, syntaxes)],
            max_pdu_length=16384,
            implementation_class_uid="1.2.3.4",
            implementation_version_name="RAW",
        )
    )
    pdu[6:8] = struct.pack(">H", version)
    pdu[10:26], pdu[26:42] = called.ljust(16), calling.ljust(16)
    if not user_information:
        user = pdu.rindex(b"\x50\x00")
        del pdu[user:]
        pdu[2:6] = struct.pack(">L", len(pdu) - 6)
    return bytes(pdu)


def answer_to(adapter: AdapterProcess, pdu: bytes) -> tuple[int, bytes]:
    with socket.create_connection((LOOPBACK, adapter.port), timeout=10) as sock:
        sock.sendall(pdu)
        return read_pdu(sock)


# ------------------------------------------------------------------ A-ASSOCIATE-RQ
@pytest.mark.parametrize(
    ("calling", "called", "reason"),
    [(b"RAWSCU\t", AET.encode(), 3), (b"RAW\nSCU", AET.encode(), 3), (b"RAWSCU", b"IMPORT\x01", 7)],
)
def test_an_ae_title_with_control_characters_is_rejected(
    adapter: AdapterProcess, calling: bytes, called: bytes, reason: int
) -> None:
    kind, body = answer_to(adapter, rq(calling, called))
    assert (kind, body[1], body[2], body[3]) == (0x03, 1, 1, reason), body.hex()
    adapter.wait_for_log(r"association rejected: call(ing|ed) AE title not recognized \(not an")


@pytest.mark.parametrize("version", [0, 2])
def test_a_protocol_version_without_version_1_is_rejected(
    adapter: AdapterProcess, version: int
) -> None:
    kind, body = answer_to(adapter, rq(version=version))
    assert (kind, body[1], body[2], body[3]) == (0x03, 1, 2, 2), body.hex()  # ACSE, version


def test_a_protocol_version_field_with_version_1_among_others_is_accepted(
    adapter: AdapterProcess,
) -> None:
    assert answer_to(adapter, rq(version=3))[0] == 0x02


def test_an_associate_rq_without_user_information_is_aborted(adapter: AdapterProcess) -> None:
    kind, body = answer_to(adapter, rq(user_information=False))
    assert (kind, body[2], body[3]) == (0x07, 2, 6), body.hex()


def test_a_refused_context_with_a_non_ascii_syntax_still_gets_an_associate_ac(
    adapter: AdapterProcess,
) -> None:
    pdu = bytearray(rq(syntaxes=(ExplicitVRLittleEndian,)))
    bad = b"\x20\x00" + struct.pack(">H", 4 + 4 + 25 + 4 + 18)
    bad += bytes([3, 0, 0, 0]) + b"\x30\x00\x00\x19" + CTImageStorage.encode()
    bad += b"\x40\x00\x00\x12" + b"1.2.840.10008.1.2\xff"
    user = pdu.rindex(b"\x50\x00")
    pdu[user:user] = bad
    pdu[2:6] = struct.pack(">L", len(pdu) - 6)
    kind, _ = answer_to(adapter, bytes(pdu))
    assert kind == 0x02
    assert "Traceback" not in adapter.log_text()


# ------------------------------------------------------------------ P-DATA-TF
def pdv(value: bytes, *, command: bool, last: bool) -> bytes:
    header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    return struct.pack(">LBB", len(value) + 2, 1, header) + value


def p_data(*pdvs: bytes) -> bytes:
    body = b"".join(pdvs)
    return struct.pack(">BBL", 0x04, 0, len(body)) + body


def stored_data_set(tmp_path: Path) -> tuple[str, bytes]:
    [file] = make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)
    data = file.read_bytes()
    meta_length = 12 + int.from_bytes(data[140:144], "little")
    return str(pydicom.dcmread(file).SOPInstanceUID), data[132 + meta_length :]


def associated(adapter: AdapterProcess) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, adapter.port), timeout=10)
    sock.sendall(rq())
    kind, _ = read_pdu(sock)
    assert kind == 0x02
    return sock


def store_command(sop_instance: str) -> bytes:
    return encode_p_data(1, encode_c_store_rq(1, CTImageStorage, sop_instance), 0)


def test_a_second_data_set_for_one_command_is_refused(
    adapter: AdapterProcess, tmp_path: Path
) -> None:
    uid, data = stored_data_set(tmp_path)
    before = spooled(adapter)
    with associated(adapter) as sock:
        sock.sendall(store_command(uid))
        sock.sendall(
            p_data(pdv(data, command=False, last=True), pdv(data, command=False, last=True))
        )
        kind, body = read_pdu(sock)
        assert kind == 0x04
        response = decode_response(body[6:])
    assert (response.status, response.error_comment) == (
        0xC000,
        "data after the last fragment of the data set",
    )
    assert spooled(adapter) == before


def test_bytes_after_the_last_pdv_abort_without_an_answer(
    adapter: AdapterProcess, tmp_path: Path
) -> None:
    uid, data = stored_data_set(tmp_path)
    before = spooled(adapter)
    with associated(adapter) as sock:
        sock.sendall(store_command(uid))
        body = pdv(data, command=False, last=True) + b"\x00\x00\x00"  # not a PDV
        sock.sendall(struct.pack(">BBL", 0x04, 0, len(body)) + body)
        kind, abort = read_pdu(sock)
    assert (kind, abort[2], abort[3]) == (0x07, 2, 6), abort.hex()
    wait_until(lambda: spooled(adapter) == before, 5, what="no spooled file")
    adapter.wait_for_log(r"P-DATA-TF ends inside a PDV item header: aborting")


def test_a_well_formed_store_on_the_same_listener_succeeds(
    adapter: AdapterProcess, tmp_path: Path
) -> None:
    uid, data = stored_data_set(tmp_path)
    with associated(adapter) as sock:
        sock.sendall(store_command(uid))
        sock.sendall(p_data(pdv(data, command=False, last=True)))
        kind, body = read_pdu(sock)
    assert kind == 0x04 and decode_response(body[6:]).status == 0x0000


# ------------------------------------------------------------------ pynetdicom's DUL thread
@pytest.fixture(scope="module")
def pynetdicom_adapter(
    orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    yield from _running_adapter(orthanc, tmp_path_factory, "pdus-pynetdicom", native_storage=False)


def _command(sop_instance: str, field: int = 0x0001) -> bytes:
    command = bytearray(encode_c_store_rq(1, CTImageStorage, sop_instance))
    at = command.index(b"\x00\x00\x00\x01\x02\x00\x00\x00") + 8
    command[at : at + 2] = struct.pack("<H", field)
    return bytes(command)


@pytest.mark.parametrize(
    ("context_id", "field"),
    [(5, 0x0001), (1, 0x7777)],
    ids=["unaccepted-context", "unknown-command"],
)
def test_a_command_pynetdicom_cannot_decode_aborts_and_leaves_no_file(
    pynetdicom_adapter: AdapterProcess, tmp_path: Path, context_id: int, field: int
) -> None:
    """Found by tests/fuzz/test_pdu_fuzz.py: pynetdicom's DUL thread died on these (KeyError),
    without an A-ABORT, leaving the chunked data-set file open in the spool's incoming/."""
    uid, data = stored_data_set(tmp_path)
    command = _command(uid, field)
    with associated(pynetdicom_adapter) as sock:
        sock.sendall(p_data(struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command))
        sock.sendall(p_data(pdv(data[:100], command=False, last=False)))
        kind, abort = read_pdu(sock)
    assert (kind, abort[2]) == (0x07, 2), abort.hex()
    incoming = pynetdicom_adapter.workdir / "spool" / "incoming"
    wait_until(lambda: not list(incoming.glob("*.dcm")), 5, what="no chunked file left")
    pynetdicom_adapter.wait_for_log(r"malformed DIMSE message \(KeyError\): aborting")
    assert "uncaught" not in pynetdicom_adapter.log_text()


def test_a_command_inside_an_unfinished_data_set_aborts_and_leaves_no_file(
    pynetdicom_adapter: AdapterProcess, tmp_path: Path
) -> None:
    """Found by tests/fuzz/test_pdu_fuzz.py: pynetdicom started the next message and dropped
    the half-written chunked file, still open, in the spool's incoming/ (PS3.8 E.2)."""
    uid, data = stored_data_set(tmp_path)
    echo = _command(uid, 0x0030)  # a C-ECHO-RQ's Command Field where the data set goes on
    with associated(pynetdicom_adapter) as sock:
        sock.sendall(store_command(uid))
        sock.sendall(p_data(pdv(data, command=False, last=False)))
        sock.sendall(p_data(pdv(echo, command=True, last=True)))
        kind, abort = read_pdu(sock)
    assert (kind, abort[2]) == (0x07, 2), abort.hex()
    incoming = pynetdicom_adapter.workdir / "spool" / "incoming"
    wait_until(lambda: not list(incoming.glob("*.dcm")), 5, what="no chunked file left")
    pynetdicom_adapter.wait_for_log(r"a command fragment inside an unfinished data set: aborting")
