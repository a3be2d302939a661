"""Cloud Storage against a real emulator on loopback: the ``gcs`` destination kind, the spool's
bucket backup, and the Java adapter's gs:// ``--persistent_file_storage_location`` end to end
(a pod without a volume that loses its disk and resumes from the bucket)."""

from __future__ import annotations

import io
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from adapter.destinations.gcs import GcsObjectDestination, object_name
from adapter.errors import TransientError
from adapter.gcs_client import make_client
from adapter.pipeline.instance import Instance
from adapter.spool import Spool
from adapter.spool_backup import GcsSpoolBackup, SpoolBackupError
from adapter.spool_files import SpoolBudget, read_spool_meta
from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.gcs import GcsEmulator
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port, is_listening
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"


@pytest.fixture
def bucket(gcs_emulator: GcsEmulator) -> str:
    """A fresh bucket of the session's emulator."""
    name = f"b-{uuid.uuid4().hex[:12]}"
    gcs_emulator.create_bucket(name)
    return name


@pytest.fixture
def emulator_env(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> GcsEmulator:
    """This process's google-cloud-storage clients go to the emulator (anonymous)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    return gcs_emulator


def _instance(path: Path) -> Instance:
    return Instance(path, read_spool_meta(path))


def dataset_bytes(part10: bytes) -> bytes:
    """The data set after the File Meta Information (what travels in a C-STORE)."""
    meta_len = int.from_bytes(part10[140:144], "little")
    return part10[132 + 12 + meta_len :]


# ---------------------------------------------------------------------- the destination
def test_gcs_destination_writes_one_object_per_instance_and_overwrites_a_resend(
    emulator_env: GcsEmulator, bucket: str, tmp_path: Path
) -> None:
    files = make_ct_series(tmp_path / "ct", 2, rows=32, cols=32)
    files.append(make_ct_series(tmp_path / "big", 1, rows=2100, cols=2100)[0])  # > 8 MiB
    dest = GcsObjectDestination(
        "archive", bucket, "site/a", make_client("test-project"), timeout=30
    )
    instances = [_instance(f) for f in files]
    outcomes = dest.deliver(instances)
    assert [o.kind for o in outcomes] == ["delivered"] * 3
    for inst in instances:
        meta = inst.meta
        name = (
            f"site/a/{meta.study_instance_uid}/{meta.series_instance_uid}/"
            f"{meta.sop_instance_uid}.dcm"
        )
        assert object_name("site/a", inst) == name
        assert emulator_env.read(bucket, name) == inst.path.read_bytes()
        assert emulator_env.content_type(bucket, name) == "application/dicom"

    changed = pydicom.dcmread(files[0])
    changed.InstanceNumber = 99
    changed.save_as(files[0])
    assert dest.deliver([_instance(files[0])])[0].kind == "delivered"
    assert emulator_env.read(bucket, object_name("site/a", instances[0])) == files[0].read_bytes()
    assert len(emulator_env.objects(bucket)) == 3  # the re-send replaced its object
    dest.close()


def test_gcs_destination_from_config_talks_to_the_emulator_anonymously(
    emulator_env: GcsEmulator, bucket: str, tmp_path: Path
) -> None:
    from adapter.destinations import GcsDestination

    [path] = make_ct_series(tmp_path / "ct", 1, rows=16, cols=16)
    dest = GcsObjectDestination.from_config("archive", GcsDestination(bucket=bucket))
    assert dest.deliver([_instance(path)])[0].kind == "delivered"
    assert emulator_env.objects(bucket) == [object_name("", _instance(path))]


def test_a_missing_bucket_or_an_unreachable_service_is_transient(
    emulator_env: GcsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [path] = make_ct_series(tmp_path / "ct", 1, rows=16, cols=16)
    missing = GcsObjectDestination("archive", "no-such-bucket", "", make_client("p"), timeout=10)
    with pytest.raises(TransientError, match="HTTP 404") as info:
        missing.deliver([_instance(path)])
    assert info.value.http_status == 404

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nobody
    down = GcsObjectDestination("archive", "bucket", "", make_client("p"), timeout=5)
    with pytest.raises(TransientError, match="ConnectionError"):
        down.deliver([_instance(path)])


# ---------------------------------------------------------------------- the spool backup
def test_the_spool_backs_up_before_put_file_returns_and_deletes_on_the_last_release(
    emulator_env: GcsEmulator, bucket: str, tmp_path: Path
) -> None:
    backup = GcsSpoolBackup(bucket, "dir", make_client("p"), timeout=10)
    backup.start()
    budget = SpoolBudget(1 << 30, on_released=backup.release)
    spool = Spool(tmp_path / "spool", 1 << 30, budget=budget, backup=backup)
    outbox = Spool(tmp_path / "spool" / "outbox" / "a", 1 << 30, budget=budget)
    [path] = make_ct_series(tmp_path / "ct", 1, rows=16, cols=16)
    sent = path.read_bytes()
    entry = spool.put_file(path, read_spool_meta(path))
    assert emulator_env.objects(bucket) == [f"dir/{entry.id}.dcm"]  # before put_file returned
    assert emulator_env.read(bucket, f"dir/{entry.id}.dcm") == sent

    linked = outbox.link_in(entry.path, entry.id, entry.meta)  # routed: a second link
    assert linked is not None
    spool.complete(entry)  # the inbox copy goes: the outbox still holds it
    backup.stop(10)  # runs the queued deletes (none)
    assert emulator_env.objects(bucket) == [f"dir/{entry.id}.dcm"]
    backup.start()
    outbox.complete(linked)  # delivered: the last link
    wait_until(lambda: not emulator_env.objects(bucket), 10, what="the object deleted")
    backup.stop(10)
    spool.close()
    outbox.close()


def test_a_failed_backup_refuses_the_instance_and_keeps_no_local_copy(
    emulator_env: GcsEmulator, tmp_path: Path
) -> None:
    backup = GcsSpoolBackup("no-such-bucket", "dir", make_client("p"), timeout=10)
    spool = Spool(tmp_path / "spool", 1 << 30, backup=backup)
    [path] = make_ct_series(tmp_path / "ct", 1, rows=16, cols=16)
    with pytest.raises(SpoolBackupError, match=r"backup to gs://no-such-bucket failed: HTTP 404"):
        spool.put_file(path, read_spool_meta(path))
    assert list((tmp_path / "spool" / "ready").iterdir()) == []
    assert spool.depth() == 0 and spool.bytes_used == 0
    spool.close()


def test_restore_brings_back_every_entry_under_its_own_id_and_skips_known_ones(
    emulator_env: GcsEmulator, bucket: str, tmp_path: Path
) -> None:
    backup = GcsSpoolBackup(bucket, "dir", make_client("p"), timeout=10)
    files = make_ct_series(tmp_path / "ct", 3, rows=16, cols=16)
    first = Spool(tmp_path / "one", 1 << 30, backup=backup)
    entries = [first.put_file(f, read_spool_meta(f)) for f in files]
    sent = {e.id: e.path.read_bytes() for e in entries}
    first.close()
    bucket_obj = emulator_env.client().bucket(bucket)
    bucket_obj.blob("dir/not-an-entry.txt").upload_from_string(b"x")
    bucket_obj.blob("elsewhere/x.dcm").upload_from_string(b"x")

    ready = tmp_path / "two" / "ready"
    known = {entries[2].id}  # e.g. still in an outbox that survived
    assert backup.restore(ready, known=known) == 2
    assert sorted(p.name for p in ready.iterdir()) == sorted(f"{e.id}.dcm" for e in entries[:2])
    for entry in entries[:2]:
        assert (ready / f"{entry.id}.dcm").read_bytes() == sent[entry.id]
    assert backup.restore(ready, known=known) == 0  # already there: nothing twice
    second = Spool(tmp_path / "two", 1 << 30)  # the rescan indexes them, AE origin intact
    assert second.depth() == 2
    assert list((tmp_path / "two" / "incoming").iterdir()) == []
    second.close()


# ---------------------------------------------------------------------- end to end
@pytest.fixture
def start_adapter(tmp_path: Path) -> Iterator[Callable[..., AdapterProcess]]:
    started: list[AdapterProcess] = []

    def start(config: dict[str, Any] | None = None, **kw: Any) -> AdapterProcess:
        proc = AdapterProcess(config, tmp_path, name=f"adapter{len(started)}", **kw)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.terminate()


def _legacy_health_port_free() -> None:
    wait_until(lambda: not is_listening(8080), 30, what="port 8080 (legacy health) to be free")


def test_legacy_gs_location_acks_after_the_bucket_write_and_resumes_from_the_bucket(
    orthanc: OrthancPeer,
    gcs_emulator: GcsEmulator,
    bucket: str,
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    """A pod without a volume: --auto_ack_cstore answers once the instance is in the bucket
    (the Java adapter: after createBackup); the store is down, the pod dies and loses its
    disk; the new pod restores from the bucket and delivers every instance."""
    port = free_port()
    argv = [
        f"--dimse_aet={AET}",
        f"--dimse_port={port}",
        f"--dicomweb_address={orthanc.dicomweb_url}",
        f"--persistent_file_storage_location=gs://{bucket}/dicom/backup",
        "--gcs_backup_project_id=test-project",
        "--auto_ack_cstore",
    ]
    tmp = tmp_path / "pod-tmp"  # the pod's /tmp: the working spool lives under it
    tmp.mkdir()
    env = {**gcs_emulator.env(), "TMPDIR": str(tmp)}
    files = make_ct_series(tmp_path / "ct", 5, rows=64, cols=64)
    sent = {str(pydicom.dcmread(f).SOPInstanceUID): f for f in files}

    orthanc.stop()
    _legacy_health_port_free()
    adapter = start_adapter(argv=argv, dimse_port=port, env=env)
    result = dcmtk.storescu(adapter.port, files, called_aet=AET).check()
    assert dcmtk.count_store_successes(result) == 5
    objects = gcs_emulator.objects(bucket, "dicom/backup/")
    assert len(objects) == 5
    sent_sets = {dataset_bytes(f.read_bytes()) for f in files}
    for name in objects:
        assert dataset_bytes(gcs_emulator.read(bucket, name)) in sent_sets
        entry_id = Path(name).name.removesuffix(".dcm")
        assert b"STORESCU".hex() in entry_id  # the origin travels in the name

    adapter.kill9()
    shutil.rmtree(tmp / "dicom-adapter")  # the pod's disk is gone
    orthanc.start()
    _legacy_health_port_free()
    adapter.start()
    wait_until(
        lambda: set(sent) <= orthanc.sop_instance_uids(),
        60,
        interval=0.3,
        what="5 instances delivered from the bucket after the restart",
    )
    adapter.wait_for_log(r"spool backup: restored 5 instance")
    for uid, path in sent.items():
        stored = orthanc.get_instance_file(uid)
        assert dataset_bytes(stored) == dataset_bytes(path.read_bytes()), uid
    wait_until(
        lambda: not gcs_emulator.objects(bucket), 30, interval=0.2, what="the bucket emptied"
    )


def test_legacy_gs_location_without_auto_ack_answers_after_the_upload(
    orthanc: OrthancPeer,
    gcs_emulator: GcsEmulator,
    bucket: str,
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    """Java without --auto_ack_cstore waits for the STOW too: success once stored, a failure
    (and no object left behind: the sender keeps it) when the store stays down."""
    port = free_port()
    argv = [
        f"--dimse_aet={AET}",
        f"--dimse_port={port}",
        f"--dicomweb_address={orthanc.dicomweb_url}",
        f"--persistent_file_storage_location=gs://{bucket}/d",
        "--gcs_backup_project_id=test-project",
        "--persistent_file_upload_retry_amount=1",
        "--min_upload_delay=50",
        "--max_waiting_time_between_uploads=100",
    ]
    tmp = tmp_path / "pod-tmp"
    tmp.mkdir()
    env = {**gcs_emulator.env(), "TMPDIR": str(tmp)}
    [ok, refused] = make_ct_series(tmp_path / "ct", 2, rows=32, cols=32)
    _legacy_health_port_free()
    adapter = start_adapter(argv=argv, dimse_port=port, env=env)
    assert dcmtk.count_store_successes(dcmtk.storescu(adapter.port, [ok], called_aet=AET)) == 1
    assert str(pydicom.dcmread(ok).SOPInstanceUID) in orthanc.sop_instance_uids()

    orthanc.stop()
    result = dcmtk.storescu(adapter.port, [refused], called_aet=AET)
    assert dcmtk.store_response_statuses(result) == ["Refused: OutOfResources"]
    wait_until(lambda: not gcs_emulator.objects(bucket), 10, what="no object left behind")


def test_a_gcs_destination_in_yaml_routing_gets_every_instance_beside_the_store(
    orthanc: OrthancPeer,
    gcs_emulator: GcsEmulator,
    bucket: str,
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    config = {
        "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
        "destinations": {"archive": {"kind": "gcs", "bucket": bucket, "prefix": "arc"}},
        "importer": {
            "dimse": {"ae_title": AET},
            "routing": {"default": ["store", "archive"]},
        },
    }
    adapter = start_adapter(config, env=gcs_emulator.env())
    files = make_ct_series(tmp_path / "ct", 3, rows=32, cols=32)
    assert dcmtk.count_store_successes(dcmtk.storescu(adapter.port, files, called_aet=AET)) == 3
    uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    wait_until(lambda: uids <= orthanc.sop_instance_uids(), 30, what="3 instances in the store")
    wait_until(
        lambda: len(gcs_emulator.objects(bucket, "arc/")) == 3, 30, what="3 objects archived"
    )
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        name = f"arc/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        stored = pydicom.dcmread(io.BytesIO(gcs_emulator.read(bucket, name)))
        assert stored.PixelData == pydicom.dcmread(f).PixelData


def test_a_backup_that_cannot_be_written_refuses_the_c_store_and_a_missing_bucket_the_start(
    gcs_emulator: GcsEmulator,
    bucket: str,
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    from tests.peers.adapter_proc import AdapterProcessError
    from tests.peers.raw_scu import raw_c_store

    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    config = {
        "dicomweb": {"url": closed, "auth": {"kind": "none"}},
        "importer": {
            "dimse": {"ae_title": AET},
            "spool": {"backup": {"bucket": bucket, "prefix": "spool", "project": "p"}},
        },
    }
    adapter = start_adapter(config, env=gcs_emulator.env())
    gcs_emulator.client().bucket(bucket).delete()  # gone while the adapter runs
    [path] = make_ct_series(tmp_path / "ct", 1, rows=16, cols=16)
    ds = pydicom.dcmread(path)
    result = raw_c_store(
        adapter.port,
        ds.SOPClassUID,
        ds.SOPInstanceUID,
        dataset_bytes(path.read_bytes()),
        called_aet=AET,
    )
    assert result.status == 0xA700
    assert (result.error_comment or "").startswith(f"backup to gs://{bucket} failed: HTTP 404")
    assert list((adapter.workdir / "spool" / "ready").glob("*.dcm")) == []
    adapter.wait_for_log("spool backup: upload to gs://")

    with pytest.raises(AdapterProcessError, match="cannot list the spool backup"):
        start_adapter(config, env=gcs_emulator.env())


def test_receiving_child_processes_back_up_and_the_parent_deletes(
    orthanc: OrthancPeer,
    gcs_emulator: GcsEmulator,
    bucket: str,
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    config = {
        "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 0.5},
        "importer": {
            "dimse": {"ae_title": AET, "processes": 2, "port": free_port()},
            "ack": "after-spool",
            "spool": {"backup": {"bucket": bucket, "prefix": "mp"}},
        },
    }
    orthanc.stop()
    adapter = start_adapter(config, env=gcs_emulator.env())
    files = make_ct_series(tmp_path / "ct", 4, rows=32, cols=32)
    assert dcmtk.count_store_successes(dcmtk.storescu(adapter.port, files, called_aet=AET)) == 4
    assert len(gcs_emulator.objects(bucket, "mp/")) == 4  # written by a child before its answer
    orthanc.start()
    uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    wait_until(lambda: uids <= orthanc.sop_instance_uids(), 60, interval=0.3, what="delivered")
    wait_until(lambda: not gcs_emulator.objects(bucket), 30, interval=0.2, what="bucket emptied")
