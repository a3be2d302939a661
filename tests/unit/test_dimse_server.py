"""The DIMSE listener on loopback with a pynetdicom SCU: bound port, allow-list rejection,
TCP_NODELAY, chunked receive into the spool's directory, transfer syntax choice, shutdown."""

from __future__ import annotations

import io
import logging
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless
from pynetdicom import AE, evt
from pynetdicom.events import Event

from adapter import metrics
from adapter.config import DimseServerConfig, TlsConfig
from adapter.dimse.contexts import STORAGE_SOP_CLASSES, storage_contexts
from adapter.dimse.server import DimseServer
from tests.peers.datasets import make_ct_series
from tests.peers.wait import wait_until

CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., DimseServer]]:
    servers: list[DimseServer] = []

    def start(handlers: list[tuple[Any, Any]] | None = None, **config: Any) -> DimseServer:
        cfg = DimseServerConfig(bind="127.0.0.1", port=0, acse_timeout=5, **config)
        server = DimseServer(
            cfg, handlers or [], storage_contexts(), receive_dir=tmp_path / "incoming"
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(2)


def scu(*contexts: tuple[str, list[str]], aet: str = "SCU") -> AE:
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for abstract, syntaxes in contexts or ((VERIFICATION, [ImplicitVRLittleEndian]),):
        ae.add_requested_context(abstract, syntaxes)
    return ae


def sample(value: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(value, labels) or 0.0


def test_port_zero_binds_a_free_port_and_readiness_follows_the_listener(
    serve: Callable[..., DimseServer],
) -> None:
    server = serve()
    assert server.port > 0 and server.readiness() == {"dimse_listener": True}
    with socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass
    server.stop(1)
    assert server.readiness() == {"dimse_listener": False}


def test_c_echo_is_answered_and_counted(serve: Callable[..., DimseServer]) -> None:
    server = serve()
    labels = {"service": "C-ECHO", "status": "0x0000"}
    before = sample("dicom_adapter_dimse_requests_total", labels)
    assoc = scu().associate("127.0.0.1", server.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert sample("dicom_adapter_dimse_requests_total", labels) == before + 1


def test_an_unknown_calling_ae_is_rejected_as_not_recognized_and_logged(
    serve: Callable[..., DimseServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(allowed_calling_aets=("GOODPACS",))
    caplog.set_level(logging.WARNING, logger="adapter.dimse.server")
    assoc = scu(aet="INTRUDER").associate("127.0.0.1", server.port)
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert rj is not None
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)  # PS3.8 7.1.1.9
    [record] = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert record.getMessage() == "association rejected: calling AE title not recognized"
    assert record.__dict__["calling_ae"] == "INTRUDER"
    assert str(record.__dict__["peer"]).startswith("127.0.0.1:")
    good = scu(aet="GOODPACS").associate("127.0.0.1", server.port)
    assert good.is_established
    good.release()


def test_more_associations_than_allowed_are_rejected_transiently(
    serve: Callable[..., DimseServer],
) -> None:
    server = serve(max_associations=1)
    first = scu().associate("127.0.0.1", server.port)
    assert first.is_established
    second = scu().associate("127.0.0.1", server.port)
    assert second.is_rejected, (  # once in CI it was not: say what it was instead
        f"second association: established={second.is_established} "
        f"aborted={second.is_aborted}; first: established={first.is_established} "
        f"aborted={first.is_aborted}; server status: {server.status()}"
    )
    assert second.acceptor.primitive is not None
    assert second.acceptor.primitive.result == 0x02  # rejected-transient: try again later
    first.release()


def test_accepted_sockets_have_tcp_nodelay(serve: Callable[..., DimseServer]) -> None:
    seen: list[int] = []

    def on_echo(event: Event) -> int:
        seen.append(
            event.assoc.dul.socket.socket.getsockopt(  # type: ignore[union-attr]
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
        )
        return 0x0000

    server = serve([(evt.EVT_C_ECHO, on_echo)])
    assoc = scu().associate("127.0.0.1", server.port)
    assoc.send_c_echo()
    assoc.release()
    assert seen and seen[0] != 0


def test_a_data_set_arrives_as_a_part10_file_in_the_receive_directory(
    serve: Callable[..., DimseServer], tmp_path: Path
) -> None:
    [source] = make_ct_series(tmp_path / "src", 1, rows=16, cols=16)
    received: list[tuple[Path, bytes]] = []

    def on_store(event: Event) -> int:
        path = Path(event.dataset_path)
        received.append((path, path.read_bytes()))
        return 0x0000

    server = serve([(evt.EVT_C_STORE, on_store)])
    assoc = scu((CT, [ExplicitVRLittleEndian])).associate("127.0.0.1", server.port)
    assert assoc.send_c_store(pydicom.dcmread(source)).Status == 0x0000
    assoc.release()
    [(path, data)] = received
    assert path.parent == tmp_path / "incoming"  # same filesystem as the spool: a rename
    assert not path.exists()  # pynetdicom deletes its file after the handler (we rename it)
    ds = pydicom.dcmread(io.BytesIO(data))
    original = pydicom.dcmread(source)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert ds.PixelData == original.PixelData


def test_the_requestors_first_transfer_syntax_is_accepted_so_nothing_is_converted(
    serve: Callable[..., DimseServer],
) -> None:
    server = serve()
    ae = scu(
        (CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (CT, [JPEGLSLossless, ExplicitVRLittleEndian]),
        (CT, [RLELossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (STORAGE_SOP_CLASSES[5], [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
    )
    assoc = ae.associate("127.0.0.1", server.port)
    accepted = [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts]
    assoc.release()
    assert accepted == [ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, ImplicitVRLittleEndian]


def test_stop_does_not_wait_for_a_connection_that_never_associated(
    serve: Callable[..., DimseServer],
) -> None:
    server = serve()
    probe = socket.create_connection(("127.0.0.1", server.port), timeout=2)  # a TCP probe
    gate = server._gate  # the probe waits there for an A-ASSOCIATE-RQ (establishment.py)
    assert gate is not None
    wait_until(gate.waiting, 5, interval=0.01, what="the probe's connection")
    start = time.monotonic()
    server.stop(10)
    assert time.monotonic() - start < 2
    probe.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (openssl, 1 day, never leaves tmp_path)."""
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_listener_serves_tls_clients_and_refuses_plain_ones(
    serve: Callable[..., DimseServer], tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    server = serve(tls=TlsConfig(enabled=True, cert_file=cert, key_file=key))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assoc = scu().associate("127.0.0.1", server.port, tls_args=(client, "127.0.0.1"))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    ae = scu()
    ae.acse_timeout = 2
    assert not ae.associate("127.0.0.1", server.port).is_established


def test_a_tls_client_that_never_handshakes_does_not_block_the_others(
    serve: Callable[..., DimseServer], tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    server = serve(tls=TlsConfig(enabled=True, cert_file=cert, key_file=key))
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=2)  # says nothing
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = scu()
        ae.acse_timeout = 5
        start = time.monotonic()
        assoc = ae.associate("127.0.0.1", server.port, tls_args=(client, "127.0.0.1"))
        assert assoc.is_established and time.monotonic() - start < 3
        assoc.release()
    finally:
        stalled.close()


def test_a_small_response_goes_in_one_p_data_pdu_with_its_identifier() -> None:
    """A C-GET-RSP and its Failed SOP Instance UID List travel in one P-DATA-TF (two PDVs):
    dcmtk's getscu skips the identifier instead of failing its release (server.py)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid
    from pynetdicom.dimse_messages import C_GET_RSP, C_STORE_RQ
    from pynetdicom.dimse_primitives import C_GET, C_STORE
    from pynetdicom.dsutils import encode

    failed = Dataset()
    failed.FailedSOPInstanceUIDList = [generate_uid(), generate_uid()]
    rsp = C_GET()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.Status = 0xB000
    rsp.NumberOfCompletedSuboperations, rsp.NumberOfFailedSuboperations = 3, 2
    rsp.NumberOfWarningSuboperations = 0
    rsp.Identifier = io.BytesIO(encode(failed, True, True) or b"")
    message = C_GET_RSP()
    message.primitive_to_message(rsp)
    [pdata] = list(message.encode_msg(1, 16384))
    headers = [value[0] for _, value in pdata.presentation_data_value_list]
    assert headers == [0x03, 0x02]  # last command fragment, last data set fragment
    # too large for the peer's PDU: as pynetdicom sends it, one PDV per PDU
    assert len(list(message.encode_msg(1, 100))) > 2

    store = C_STORE()
    store.MessageID, store.Priority = 1, 2
    store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = CT, generate_uid()
    store.DataSet = io.BytesIO(b"\x00" * 64)
    request = C_STORE_RQ()
    request.primitive_to_message(store)
    assert len(list(request.encode_msg(1, 16384))) == 2  # requests are left alone


def test_our_implementation_identity_is_valid_and_follows_the_release() -> None:
    import tomllib

    from pydicom.uid import UID

    from adapter.dimse.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

    assert UID(IMPLEMENTATION_CLASS_UID).is_valid and IMPLEMENTATION_CLASS_UID.startswith("2.25.")
    version = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    major, minor, *_ = version["project"]["version"].split(".")
    assert f"DICOMADAPTER_{major}_{minor}" == IMPLEMENTATION_VERSION_NAME
    assert len(IMPLEMENTATION_VERSION_NAME) <= 16  # SH (PS3.7 D.3.3.3)
