"""The Java adapter's routing flags, passed exactly as its users pass them: the adapter (a
subprocess) started with --destination_config_inline and friends, dcmtk senders, and two or
three Orthancs checked for where each instance went, byte for byte."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess, legacy_health_env
from tests.peers.datasets import make_ct_series
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
MAMMOGRAPHY = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image, For Presentation


@pytest.fixture
def start_legacy(tmp_path: Path) -> Iterator[Callable[..., AdapterProcess]]:
    """Start the adapter with Java flags (plus the DIMSE port and a private spool)."""
    started: list[AdapterProcess] = []

    def start(*flags: str, env: dict[str, str] | None = None) -> AdapterProcess:
        port = free_port()
        name = f"legacy{len(started)}"
        argv = [
            f"--dimse_aet={AET}",
            f"--dimse_port={port}",
            f"--persistent_file_storage_location={tmp_path / name / 'spool'}",
            *flags,
        ]
        env = {**legacy_health_env(), **(env or {})}
        proc = AdapterProcess(None, tmp_path, argv=argv, dimse_port=port, name=name, env=env)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.terminate()


def make_instance(directory: Path, modality: str) -> Path:
    """One small instance of ``modality`` (MG: a mammography SOP class), fresh UIDs."""
    [path] = make_ct_series(directory, 1, rows=32, cols=32)
    if modality != "CT":
        ds = pydicom.dcmread(path)
        ds.Modality = modality
        if modality == "MG":
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MAMMOGRAPHY
        path = path.with_name(f"{modality.lower()}-{ds.SOPInstanceUID}.dcm")
        ds.save_as(path, enforce_file_format=True)
    return path


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def dataset_bytes(data: bytes) -> bytes:
    """The data set of a Part-10 file (everything after the File Meta group)."""
    meta_length = 12 + int.from_bytes(data[140:144], "little")
    return data[132 + meta_length :]


def assert_stored_byte_equal(store: OrthancPeer, path: Path) -> None:
    stored = store.get_instance_file(uid_of(path))
    assert dataset_bytes(stored) == dataset_bytes(path.read_bytes()), path.name
    sent_ts = pydicom.dcmread(path).file_meta.TransferSyntaxUID
    assert pydicom.dcmread(io.BytesIO(stored)).file_meta.TransferSyntaxUID == sent_ts


def test_a_modality_filter_sends_mg_to_the_second_store_and_ct_to_the_address(
    orthanc: OrthancPeer,
    orthanc_factory: Callable[..., OrthancPeer],
    start_legacy: Callable[..., AdapterProcess],
    tmp_path: Path,
) -> None:
    second = orthanc_factory(aet="ORTHANC2")
    adapter = start_legacy(
        f"--dicomweb_address={orthanc.dicomweb_url}",
        "--destination_config_inline="
        f'[{{"filter":"Modality=MG","dicomweb_destination":"{second.dicomweb_url}"}}]',
    )
    mg, ct = make_instance(tmp_path / "mg", "MG"), make_instance(tmp_path / "ct", "CT")
    result = dcmtk.dcmsend(adapter.port, [mg, ct], called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == 2
    # answered after the upload (Java semantics without --auto_ack_cstore): nothing is pending
    assert (
        uid_of(mg) in second.sop_instance_uids() and uid_of(mg) not in orthanc.sop_instance_uids()
    )
    assert (
        uid_of(ct) in orthanc.sop_instance_uids() and uid_of(ct) not in second.sop_instance_uids()
    )
    assert_stored_byte_equal(second, mg)
    assert_stored_byte_equal(orthanc, ct)


def test_send_to_all_matching_destinations_stores_in_the_store_and_its_backup(
    orthanc: OrthancPeer,
    orthanc_factory: Callable[..., OrthancPeer],
    start_legacy: Callable[..., AdapterProcess],
    tmp_path: Path,
) -> None:
    second, backup = orthanc_factory(aet="ORTHANC2"), orthanc_factory(aet="BACKUP")
    adapter = start_legacy(
        f"--dicomweb_address={orthanc.dicomweb_url}",
        "--send_to_all_matching_destinations",
        "--destination_config_inline=["
        f'{{"filter":"Modality=MG","dicomweb_destination":"{second.dicomweb_url}"}},'
        f'{{"filter":"Modality=MG","dicomweb_destination":"{backup.dicomweb_url}/studies"}}]',
    )
    mg, ct = make_instance(tmp_path / "mg", "MG"), make_instance(tmp_path / "ct", "CT")
    result = dcmtk.storescu(adapter.port, [mg, ct], called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == 2
    assert uid_of(mg) in second.sop_instance_uids() and uid_of(mg) in backup.sop_instance_uids()
    assert uid_of(mg) not in orthanc.sop_instance_uids()
    assert_stored_byte_equal(second, mg)
    assert_stored_byte_equal(backup, mg)
    # no filter matched the CT: it goes to --dicomweb_address (see the report: Java dropped it)
    assert uid_of(ct) in orthanc.sop_instance_uids()
    assert uid_of(ct) not in second.sop_instance_uids() | backup.sop_instance_uids()


def test_an_aetitle_filter_routes_by_the_calling_ae_from_a_file_path(
    orthanc: OrthancPeer,
    orthanc_factory: Callable[..., OrthancPeer],
    start_legacy: Callable[..., AdapterProcess],
    tmp_path: Path,
) -> None:
    second = orthanc_factory(aet="ORTHANC2")
    config = tmp_path / "destinations.json"
    config.write_text(
        f'[{{"filter":"AETitle=MAMMOSCU","dicomweb_destination":"{second.dicomweb_url}"}}]\n'
    )
    adapter = start_legacy(
        f"--dicomweb_address={orthanc.dicomweb_url}", f"--destination_config_path={config}"
    )
    mine, other = make_instance(tmp_path / "a", "CT"), make_instance(tmp_path / "b", "CT")
    dcmtk.storescu(adapter.port, [mine], aet="MAMMOSCU", called_aet=AET).check()
    dcmtk.storescu(adapter.port, [other], aet="OTHERSCU", called_aet=AET).check()
    assert uid_of(mine) in second.sop_instance_uids()
    assert uid_of(mine) not in orthanc.sop_instance_uids()
    assert uid_of(other) in orthanc.sop_instance_uids()
    assert uid_of(other) not in second.sop_instance_uids()


def test_the_lenient_json_of_the_java_users_from_the_environment(
    orthanc: OrthancPeer,
    orthanc_factory: Callable[..., OrthancPeer],
    start_legacy: Callable[..., AdapterProcess],
    tmp_path: Path,
) -> None:
    second = orthanc_factory(aet="ORTHANC2")
    lenient = (  # single quotes, unquoted keys and an unquoted host, trailing commas
        f"[{{filter: 'AETitle=MAMMOSCU&Modality=MG', dicomweb_destination: "
        f"'{second.dicomweb_url}',}},]"
    )
    adapter = start_legacy(
        f"--dicomweb_address={orthanc.dicomweb_url}",
        '--aet_dictionary_inline=[{"name":"STORESCP","host":0.0.0.0,"port":2576},]',
        env={"ENV_DESTINATION_CONFIG_JSON": lenient},
    )
    mg, ct = make_instance(tmp_path / "mg", "MG"), make_instance(tmp_path / "ct", "CT")
    dcmtk.dcmsend(adapter.port, [mg, ct], aet="MAMMOSCU", called_aet=AET).check()
    assert uid_of(mg) in second.sop_instance_uids()
    assert uid_of(mg) not in orthanc.sop_instance_uids()
    assert uid_of(ct) in orthanc.sop_instance_uids()
    assert_stored_byte_equal(second, mg)


@pytest.mark.parametrize("cmove_aet", [None, "CMOVEAET"])
def test_dimse_cmove_aet_is_the_calling_ae_of_the_c_move_sub_operations(
    orthanc: OrthancPeer,
    orthanc_factory: Callable[..., OrthancPeer],
    start_legacy: Callable[..., AdapterProcess],
    tmp_path: Path,
    cmove_aet: str | None,
) -> None:
    destination = orthanc_factory(aet="MOVEDEST")  # Orthanc records each sender's AE title
    [path] = make_ct_series(tmp_path / "ct", 1, rows=32, cols=32)
    orthanc.upload_file(path)
    adapter = start_legacy(
        f"--dicomweb_address={orthanc.dicomweb_url}",
        "--aet_dictionary_inline="
        f"[{{name: MOVEDEST, host: 127.0.0.1, port: {destination.dicom_port}}},]",
        *([f"--dimse_cmove_aet={cmove_aet}"] if cmove_aet else []),
    )
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    result = dcmtk.movescu(
        adapter.port, {"StudyInstanceUID": str(ds.StudyInstanceUID)}, "MOVEDEST", called_aet=AET
    )
    assert result.ok, result.output
    oid = destination.find_instance_id(str(ds.SOPInstanceUID))
    assert oid is not None, "the instance did not arrive at the move destination"
    remote = destination.request("GET", f"/instances/{oid}/metadata/RemoteAET").text
    assert remote == (cmove_aet or AET)
