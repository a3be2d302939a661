"""DIMSE conformance as real dcmtk senders see it: called AE title checking (PS3.8 9.3.4), the
adapter's own Implementation Class UID and Version Name (PS3.7 D.3.3.2-3) on the wire and in the
File Meta of spooled files, upper-layer behaviour (PS3.8 9.3.8, 9.1.1) and the operator's log.

The adapter runs as a subprocess (as deployed) in front of the session Orthanc.
"""

from __future__ import annotations

import contextlib
import re
import secrets
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
    """Instance files in the spool and its outboxes (its lock files aside), one per instance:
    a routed instance's hard links in the inbox and an outbox are one file."""
    found: dict[tuple[int, int], Path] = {}
    for p in (adapter.workdir / "spool").rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # unlinked as it moved on
            if not p.is_file() or p.name.startswith("."):
                continue
            st = p.stat()
            found.setdefault((st.st_dev, st.st_ino), p)
    return list(found.values())


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


# ------------------------------------------------------------------ item 9: operability
def test_a_port_in_use_is_named_in_one_line(orthanc: OrthancPeer, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    import yaml

    from tests.peers.ports import free_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = site(orthanc.dicomweb_url, bind="127.0.0.1", port=port)
        config.update(
            health={"bind": "127.0.0.1", "port": free_port()},
            state_dir=str(tmp_path / "state"),
            log={"format": "text"},
        )
        config["importer"]["spool"] = {"path": str(tmp_path / "spool")}
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump(config))
        run = subprocess.run(
            [sys.executable, "-m", "adapter.cli", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert f"DIMSE listener: cannot listen on 127.0.0.1:{port}: address already in use" in out
    assert "Traceback" not in out and "Errno" not in out, out


def test_legacy_importer_and_exporter_run_side_by_side(
    orthanc: OrthancPeer, pubsub_emulator: Any, tmp_path: Path
) -> None:
    """Both with the Java flags on one host: own health ports, own spool and working
    directories, one shared state directory (the echo guard's provenance log)."""
    import requests

    from tests.peers.ports import free_port

    name = f"side-{secrets.token_hex(4)}"
    pubsub_emulator.create_topic(name)
    pubsub_emulator.create_subscription(name, name)
    shared = {
        "DICOM_ADAPTER_STATE_DIR": str(tmp_path / "state"),
        **pubsub_emulator.env(),
    }
    dimse_port, import_health, export_health = free_port(), free_port(), free_port()
    importer = AdapterProcess(
        None,
        tmp_path,
        name="legacy-import",
        argv=[
            f"--dimse_aet={AET}",
            f"--dimse_port={dimse_port}",
            f"--dicomweb_address={orthanc.dicomweb_url}",
            f"--health_port={import_health}",
            f"--spool_dir={tmp_path / 'spool'}",
        ],
        dimse_port=dimse_port,
        env=shared,
    )
    exporter = AdapterProcess(
        None,
        tmp_path,
        name="legacy-export",
        argv=[
            "export",
            "--peer_dimse_aet=PACS",
            "--peer_dimse_ip=127.0.0.1",
            f"--peer_dimse_port={free_port()}",
            f"--project_id={pubsub_emulator.project}",
            f"--subscription_id={name}",
            f"--dicomweb_addr={orthanc.dicomweb_url}",
        ],
        env={
            **shared,
            "DICOM_ADAPTER_HEALTH_PORT": str(export_health),
            "DICOM_ADAPTER_EXPORT_STATE_DIR": str(tmp_path / "export"),
        },
    )
    with importer.start(), exporter.start():
        for port in (import_health, export_health):
            wait_until(lambda p=port: _healthy(requests, p), timeout=30, what=f"/healthz on {port}")
        [file] = make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)
        assert dcmtk.storescu(dimse_port, [file], called_aet=AET).ok
        assert importer.is_running and exporter.is_running
    assert (tmp_path / "state" / "provenance.sqlite").exists()
    assert (tmp_path / "spool").is_dir() and (tmp_path / "export").is_dir()


def _healthy(requests: Any, port: int) -> bool:
    try:
        return bool(requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok)
    except requests.RequestException:
        return False


@pytest.mark.parametrize("native_storage", [True, False])
def test_one_info_line_per_association(
    start_adapter: Callable[..., AdapterProcess],
    orthanc: OrthancPeer,
    tmp_path: Path,
    native_storage: bool,
) -> None:
    proc = start_adapter(site(orthanc.dicomweb_url, native_storage=native_storage))
    files = make_ct_series(tmp_path / "ct", 3, rows=8, cols=8)
    assert dcmtk.storescu(proc.port, files, aet="OPSPACS", called_aet=AET).ok
    line = proc.wait_for_log(r"association from OPSPACS ended: [^\"]*").group(0)
    from adapter.part10_scan import read_file_meta

    size = sum(p.stat().st_size - read_file_meta(p).data_set_offset for p in files)
    assert f"3 instance(s), {size} bytes in " in line, line
    assert line.endswith("; statuses: C-STORE 0x0000 x3"), line
    [record] = [r for r in proc.log_records() if r["message"] == line]
    assert record["severity"] == "INFO" and record["calling_ae"] == "OPSPACS"


# ------------------------------------------------------------------ item 7: upper layer
def test_both_paths_announce_a_bounded_maximum_pdu_length(
    adapter: AdapterProcess, tmp_path: Path
) -> None:
    [file] = make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)
    native = dcmtk.storescu(adapter.port, [file], called_aet=AET, extra_args=["-d"])
    full = dcmtk.findscu(adapter.port, {"PatientID": "NOBODY"}, called_aet=AET, extra_args=["-d"])
    for result in (native, full):
        sizes = re.findall(r"Their Max PDU Receive Size:[ \t]*(\d+)", result.output)
        assert sizes and sizes[-1] == "262144", result.output


def test_an_unrecognized_pdu_type_is_aborted_by_the_provider_with_reason_1(
    adapter: AdapterProcess,
) -> None:
    import socket
    import struct

    from adapter.dimse.pdu import encode_associate_rq

    rq = encode_associate_rq(
        AET,
        "RAWSCU",
        [(1, "1.2.840.10008.1.1", ("1.2.840.10008.1.2",))],
        max_pdu_length=16384,
        implementation_class_uid="1.2.3.4",
        implementation_version_name="RAW",
    )
    with socket.create_connection(("127.0.0.1", adapter.port), timeout=10) as sock:
        sock.sendall(rq)
        kind, _, length = struct.unpack(">BBL", sock.recv(6, socket.MSG_WAITALL))
        assert kind == 0x02  # A-ASSOCIATE-AC
        sock.recv(length, socket.MSG_WAITALL)
        sock.sendall(struct.pack(">BBL", 0x09, 0, 4) + bytes(4))  # no such PDU type
        abort = sock.recv(10, socket.MSG_WAITALL)
    assert abort[0] == 0x07 and (abort[8], abort[9]) == (2, 1), abort.hex()
