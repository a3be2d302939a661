"""The export path end to end with real peers: Pub/Sub emulator -> exporter (in this process)
-> WADO-RS from Orthanc -> C-STORE to dcmtk storescp or a second Orthanc, or STOW-RS."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from adapter import metrics
from adapter.config import SiteConfig, load_config_data
from adapter.deadletter import DeadLetterQueue
from adapter.plugin import PluginContext
from adapter.service import Supervisor
from exporter.config import ExporterConfig
from exporter.plugin import ExporterPlugin
from tests.peers.datasets import SampleSet, make_ct_series
from tests.peers.dcmtk import StoreScpPeer
from tests.peers.orthanc import OrthancPeer
from tests.peers.pubsub import PubSubEmulator
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

STORE = "projects/test-project/locations/local/datasets/local/dicomStores/orthanc"


class Exporter:
    """One in-process exporter on its own topic and subscription."""

    def __init__(
        self, supervisor: Supervisor, topic: str, state_dir: Path, site: SiteConfig
    ) -> None:
        self.supervisor = supervisor
        self.topic = topic
        self.site = site
        config = site.plugins["exporter"]
        assert isinstance(config, ExporterConfig)
        self.config = config
        self.dead_letters = DeadLetterQueue(state_dir / "deadletter", "exporter")


def _header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def notify(emulator: PubSubEmulator, topic: str, path: Path, **attrs: str) -> str:
    """Publish the Healthcare-style notification for one instance file."""
    ds = _header(path)
    data = (
        f"{STORE}/dicomWeb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    future = emulator.publisher().publish(topic, data.encode(), **attrs)
    return str(future.result(timeout=30))


@pytest.fixture
def start_exporter(
    pubsub_emulator: PubSubEmulator,
    orthanc: OrthancPeer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Exporter]]:
    """start_exporter(destination, **exporter_overrides) -> a running Exporter."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    started: list[Supervisor] = []

    def start(destination: dict[str, Any], **overrides: Any) -> Exporter:
        name = f"export-{uuid.uuid4().hex[:8]}"
        topic = pubsub_emulator.create_topic(name)
        pubsub_emulator.create_subscription(name, name, ack_deadline_seconds=10)
        state = tmp_path / name
        pubsub = {
            "project": pubsub_emulator.project,
            "subscription": name,
            "max_delivery_attempts": 20,
            **overrides.pop("pubsub", {}),
        }
        destinations = overrides.pop("destinations", {})  # the site's named destinations
        data = {
            "site": "test",
            "health": {"enabled": False},
            "state_dir": str(state / "core"),
            "retry": {"initial_delay": 0.2, "max_delay": 1.0, "jitter": False},
            "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
            "destinations": destinations,
            "exporter": {
                "pubsub": pubsub,
                "destination": destination,
                "state_dir": str(state),
                "workers": 4,
                **overrides,
            },
        }
        site = load_config_data(data)
        config = site.plugins["exporter"]
        assert isinstance(config, ExporterConfig)
        services = ExporterPlugin().build(PluginContext(site=site), config)
        supervisor = Supervisor(services, stop_timeout=10)
        supervisor.start()
        started.append(supervisor)
        wait_until(lambda: all(supervisor.readiness().values()), 10, what="exporter ready")
        return Exporter(supervisor, topic, state, site)

    yield start
    for supervisor in started:
        supervisor.stop()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreScpPeer]:
    """storescp serving each association in its own process (as a PACS would: in parallel)."""
    peer = StoreScpPeer(tmp_path / "storescp", aet="STORESCP", extra_args=["--fork"]).start()
    try:
        yield peer
    finally:
        peer.stop()


def dimse(peer: StoreScpPeer | OrthancPeer) -> dict[str, Any]:
    port = peer.port if isinstance(peer, StoreScpPeer) else peer.dicom_port
    return {
        "kind": "dimse",
        "ae_title": peer.aet,
        "host": "127.0.0.1",
        "port": port,
        "pool_size": 2,
    }


def received(peer: StoreScpPeer, uid: str) -> Path:
    """The file storescp wrote for ``uid``, once complete (its size is the same twice in a row:
    storescp writes in place, so a file can be seen while it is still being written)."""
    sizes: dict[Path, int] = {}

    def complete() -> Path | None:
        for path in peer.received_files():
            if path.name.endswith(f"{uid}.dcm"):
                size, last = path.stat().st_size, sizes.get(path)
                sizes[path] = size
                return path if size > 0 and size == last else None
        return None

    return wait_until(complete, timeout=20, interval=0.2, what=f"{uid} complete at storescp")


def assert_same_instance(sent: Path, got: Path) -> None:
    """Same transfer syntax and Pixel Data bytes (and everything else in the data set)."""
    a, b = pydicom.dcmread(sent), pydicom.dcmread(got)
    assert b.file_meta.TransferSyntaxUID == a.file_meta.TransferSyntaxUID
    assert b.PixelData == a.PixelData
    assert b == a


@pytest.mark.parametrize("kind", ["ct-explicit", "mr-implicit", "jpeg-lossless", "rle"])
def test_notified_instance_arrives_byte_equal_at_storescp(
    start_exporter: Callable[..., Exporter],
    storescp: StoreScpPeer,
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    sample_files: SampleSet,
    kind: str,
) -> None:
    path = sample_files.by_kind[kind]
    orthanc.upload_file(path)
    exporter = start_exporter(dimse(storescp))
    notify(pubsub_emulator, exporter.topic, path, action="StoreInstances")
    assert_same_instance(path, received(storescp, sample_files.sop_instance_uids[path]))


def test_notified_instances_arrive_at_second_orthanc_as_pacs_and_a_duplicate_is_harmless(
    start_exporter: Callable[..., Exporter],
    orthanc_factory: Callable[..., OrthancPeer],
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    sample_files: SampleSet,
) -> None:
    pacs = orthanc_factory(aet="PACS")
    paths = [sample_files.by_kind[k] for k in ("ct-explicit", "jpeg-ls-lossless", "deflate")]
    for path in paths:
        orthanc.upload_file(path)
    exporter = start_exporter(dimse(pacs))
    for path in paths:
        notify(pubsub_emulator, exporter.topic, path)
    pacs.wait_for_instance_count(len(paths), timeout=20)
    delivered = metrics.DELIVERIES_TOTAL.labels(
        plugin="exporter", destination="peer", outcome="delivered"
    )
    before = delivered._value.get()
    notify(pubsub_emulator, exporter.topic, paths[0])  # at-least-once: a duplicate is harmless
    wait_until(lambda: delivered._value.get() > before, 10, what="the duplicate delivered")
    assert pacs.instance_count() == len(paths)
    for path in paths:
        stored = pacs.get_instance_file(sample_files.sop_instance_uids[path])
        got = pydicom.dcmread(__import__("io").BytesIO(stored))
        sent = pydicom.dcmread(path)
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert got.PixelData == sent.PixelData


def test_pacs_down_then_up_instances_wait_in_the_outbox_and_arrive(
    start_exporter: Callable[..., Exporter],
    tmp_path: Path,
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    sample_files: SampleSet,
) -> None:
    """The messages are acked once the instances are durable in the PACS's outbox (so a
    down PACS holds no Pub/Sub lease); the outbox retries until the PACS is back."""
    pacs = StoreScpPeer(tmp_path / "down-up", extra_args=["--fork"]).start()
    pacs.stop()  # same port later: the PACS is down while the notifications arrive
    paths = list(sample_files.ct_series)
    for path in paths:
        orthanc.upload_file(path)
    exporter = start_exporter(dimse(pacs))
    failed = metrics.DELIVERIES_TOTAL.labels(
        plugin="exporter", destination="peer", outcome="transient_error"
    )
    before, acked = failed._value.get(), metrics.EXPORT_MESSAGES_ACKED_TOTAL._value.get()
    for path in paths:
        notify(pubsub_emulator, exporter.topic, path)
    wait_until(
        lambda: (
            failed._value.get() >= before + 2 * len(paths)
            and metrics.EXPORT_MESSAGES_ACKED_TOTAL._value.get() >= acked + len(paths)
        ),
        timeout=20,
        what="failed attempts while the PACS is down, every message acked",
    )
    pacs.start()
    try:
        pacs.wait_for_files(len(paths), timeout=30)
        assert pacs.received_sop_instance_uids() == {
            sample_files.sop_instance_uids[p] for p in paths
        }
        assert exporter.dead_letters.entries() == []
    finally:
        pacs.cleanup()


def test_malformed_message_is_dead_lettered_and_later_messages_flow(
    start_exporter: Callable[..., Exporter],
    storescp: StoreScpPeer,
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    sample_files: SampleSet,
) -> None:
    dlq = f"dead-{uuid.uuid4().hex[:8]}"
    pubsub_emulator.create_subscription(dlq, dlq)
    exporter = start_exporter(dimse(storescp), pubsub={"dead_letter_topic": dlq})
    pubsub_emulator.publish(exporter.topic, b"studies/1.2.3/series/../instances/4")
    path = sample_files.by_kind["sc-rgb"]
    orthanc.upload_file(path)
    notify(pubsub_emulator, exporter.topic, path)
    received(storescp, sample_files.sop_instance_uids[path])
    [entry] = wait_until(exporter.dead_letters.entries, 10, what="a dead letter")
    assert "malformed notification" in entry.reason and "'..'" in entry.reason
    [message] = pubsub_emulator.pull(dlq, timeout=10)
    assert message.message.data == b"studies/1.2.3/series/../instances/4"
    assert "malformed" in message.message.attributes["deadLetterReason"]
    assert (
        pubsub_emulator.pull(exporter.topic.rsplit("/", 1)[-1], min_messages=0, timeout=2) == []
    )  # acked, never redelivered


def test_instance_missing_from_store_is_dead_lettered_with_404(
    start_exporter: Callable[..., Exporter],
    storescp: StoreScpPeer,
    pubsub_emulator: PubSubEmulator,
    tmp_path: Path,
) -> None:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)  # never stored in Orthanc
    exporter = start_exporter(dimse(storescp))
    notify(pubsub_emulator, exporter.topic, path)
    [entry] = wait_until(exporter.dead_letters.entries, 10, what="a dead letter")
    assert entry.http_status == 404
    assert entry.sop_instance_uid == _header(path).SOPInstanceUID
    assert storescp.received_files() == []


def test_dead_letter_retried_by_operator_is_delivered_once_the_store_has_it(
    start_exporter: Callable[..., Exporter],
    storescp: StoreScpPeer,
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    tmp_path: Path,
) -> None:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8, seed=3)
    exporter = start_exporter(dimse(storescp))
    notify(pubsub_emulator, exporter.topic, path)  # not in the store yet: 404
    [entry] = wait_until(exporter.dead_letters.entries, 10, what="a dead letter")
    orthanc.upload_file(path)
    queue = ExporterPlugin().dead_letters(exporter.site.core, exporter.config)
    assert queue.retry([entry.id]) == 1
    received(storescp, entry.sop_instance_uid or "")
    assert exporter.dead_letters.entries() == []


def test_deletions_and_filtered_modalities_are_acked_without_delivery(
    start_exporter: Callable[..., Exporter],
    storescp: StoreScpPeer,
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    sample_files: SampleSet,
) -> None:
    exporter = start_exporter(dimse(storescp), filters={"modalities": ["CT"]})
    ct, mr = sample_files.by_kind["ct-explicit"], sample_files.by_kind["mr-implicit"]
    for path in (ct, mr):
        orthanc.upload_file(path)
    skipped = metrics.EXPORT_MESSAGES_SKIPPED_TOTAL.labels(reason="filtered")._value.get()
    notify(pubsub_emulator, exporter.topic, ct, action="DeleteInstances")
    notify(pubsub_emulator, exporter.topic, mr)  # no modality attribute: read from the header
    notify(pubsub_emulator, exporter.topic, ct, action="StoreInstances", modality="CT")
    received(storescp, sample_files.sop_instance_uids[ct])
    wait_until(
        lambda: (
            metrics.EXPORT_MESSAGES_SKIPPED_TOTAL.labels(reason="filtered")._value.get()
            >= skipped + 2
        ),
        10,
        what="two filtered messages",
    )
    assert storescp.received_sop_instance_uids() == {sample_files.sop_instance_uids[ct]}


def test_stow_destination_receives_notified_instance(
    start_exporter: Callable[..., Exporter],
    orthanc_factory: Callable[..., OrthancPeer],
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    sample_files: SampleSet,
) -> None:
    target = orthanc_factory(aet="TARGET")
    path = sample_files.by_kind["jpeg-baseline"]
    orthanc.upload_file(path)
    exporter = start_exporter(
        {"kind": "dicomweb", "url": target.dicomweb_url, "auth": {"kind": "none"}}
    )
    notify(pubsub_emulator, exporter.topic, path)
    target.wait_for_instance_count(1, timeout=20)
    stored = target.get_instance_file(sample_files.sop_instance_uids[path])
    assert (
        pydicom.dcmread(__import__("io").BytesIO(stored)).PixelData
        == pydicom.dcmread(path).PixelData
    )


def test_compressed_instances_are_converted_for_pacs_taking_only_uncompressed(
    start_exporter: Callable[..., Exporter],
    tmp_path: Path,
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    sample_files: SampleSet,
) -> None:
    pacs = StoreScpPeer(tmp_path / "uncompressed", extra_args=["+xe", "--fork"]).start()
    try:
        exporter = start_exporter(dimse(pacs))
        rle = sample_files.by_kind["rle"]
        orthanc.upload_file(rle)
        notify(pubsub_emulator, exporter.topic, rle)
        got = pydicom.dcmread(received(pacs, sample_files.sop_instance_uids[rle]))
        assert got.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert (got.pixel_array == pydicom.dcmread(rle).pixel_array).all()
        assert got.SOPInstanceUID == sample_files.sop_instance_uids[rle]
    finally:
        pacs.cleanup()


def test_jpeg_lossless_for_uncompressed_only_pacs_converted_or_dead_lettered_naming_decoder(
    start_exporter: Callable[..., Exporter],
    tmp_path: Path,
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    sample_files: SampleSet,
) -> None:
    """Converted when pylibjpeg-libjpeg (or GDCM) is installed; otherwise a dead letter whose
    reason names the missing decoder -- never a redelivery loop."""
    from pydicom.pixels.decoders.base import JPEGLosslessSV1Decoder

    pacs = StoreScpPeer(tmp_path / "uncompressed", extra_args=["+xe", "--fork"]).start()
    try:
        exporter = start_exporter(dimse(pacs))
        jpeg = sample_files.by_kind["jpeg-lossless"]
        orthanc.upload_file(jpeg)
        notify(pubsub_emulator, exporter.topic, jpeg)
        if JPEGLosslessSV1Decoder.is_available:
            got = pydicom.dcmread(received(pacs, sample_files.sop_instance_uids[jpeg]))
            assert got.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert (got.pixel_array == pydicom.dcmread(jpeg).pixel_array).all()
        else:
            [entry] = wait_until(exporter.dead_letters.entries, 10, what="a dead letter")
            assert "cannot decompress JPEG Lossless" in entry.reason
            assert "pylibjpeg" in entry.reason
            assert entry.has_payload  # the fetched instance is kept for the operator
            assert pacs.received_files() == []
    finally:
        pacs.cleanup()


def test_300_notifications_delivered_exactly_once(
    start_exporter: Callable[..., Exporter],
    storescp: StoreScpPeer,
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    tmp_path: Path,
) -> None:
    paths = make_ct_series(tmp_path / "many", 300, rows=32, cols=32, seed=7)
    for path in paths:
        orthanc.upload_file(path)
    exporter = start_exporter(
        dimse(storescp) | {"pool_size": 4}, pubsub={"max_outstanding_messages": 64}, workers=8
    )
    publisher = pubsub_emulator.publisher()
    futures = []
    for path in paths:
        ds = _header(path)
        data = (
            f"{STORE}/dicomWeb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        futures.append(publisher.publish(exporter.topic, data.encode()))
    for future in futures:
        future.result(timeout=30)
    storescp.wait_for_files(300, timeout=90)
    assert storescp.received_sop_instance_uids() == {_header(p).SOPInstanceUID for p in paths}
    wait_until(
        lambda: storescp.log_tail(10**7).count("Received Store Request") >= 300,
        10,
        what="storescp log",
    )
    assert storescp.log_tail(10**7).count("Received Store Request") == 300  # no duplicates


def test_one_subscription_fans_out_to_two_pacs_and_a_store_while_one_pacs_is_down(
    start_exporter: Callable[..., Exporter],
    storescp: StoreScpPeer,
    orthanc_factory: Callable[..., OrthancPeer],
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    tmp_path: Path,
) -> None:
    """Every message is acked once each destination delivered it or holds it in its outbox;
    the PACS that was down gets everything when it is back, the others never waited."""
    archive = orthanc_factory()
    down = StoreScpPeer(tmp_path / "down", aet="PACS_B", extra_args=["--fork"]).start()
    down.stop()  # the same port comes back later
    paths = make_ct_series(tmp_path / "ct", 6, rows=16, cols=16)
    for path in paths:
        orthanc.upload_file(path)
    uids = {str(_header(p).SOPInstanceUID) for p in paths}
    exporter = start_exporter(
        dimse(storescp),
        destinations={
            "pacs-b": {**dimse(down), "pool_size": 1},
            "archive": {"kind": "dicomweb", "url": archive.dicomweb_url, "auth": {"kind": "none"}},
        },
        routing={"rules": [{"name": "all", "destinations": ["peer", "pacs-b", "archive"]}]},
    )
    acked = metrics.EXPORT_MESSAGES_ACKED_TOTAL._value.get()
    for path in paths:
        notify(pubsub_emulator, exporter.topic, path)
    wait_until(lambda: storescp.received_sop_instance_uids() >= uids, 30, what="PACS A has all")
    wait_until(lambda: archive.sop_instance_uids() >= uids, 30, what="the archive has all")
    wait_until(
        lambda: metrics.EXPORT_MESSAGES_ACKED_TOTAL._value.get() >= acked + len(paths),
        30,
        what="every message acked while PACS B is down",
    )
    down.start()
    try:
        down.wait_for_files(len(paths), timeout=30)
        assert down.received_sop_instance_uids() == uids
        assert exporter.dead_letters.entries() == []
    finally:
        down.cleanup()


def test_jpeg_baseline_for_uncompressed_only_pacs_is_converted_by_the_transcoder(
    start_exporter: Callable[..., Exporter],
    tmp_path: Path,
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    sample_files: SampleSet,
) -> None:
    """StoreScu says the PACS took only Explicit/Implicit VR LE; the transcoder (worker
    processes, the transcode stage's code) makes the copy that is sent: pixels equal."""
    pacs = StoreScpPeer(tmp_path / "uncompressed", extra_args=["+xe", "--fork"]).start()
    try:
        exporter = start_exporter(dimse(pacs))
        jpeg = sample_files.by_kind["jpeg-baseline"]
        orthanc.upload_file(jpeg)
        notify(pubsub_emulator, exporter.topic, jpeg)
        got = pydicom.dcmread(received(pacs, sample_files.sop_instance_uids[jpeg]))
        source = pydicom.dcmread(jpeg)
        assert got.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert got.PhotometricInterpretation == "RGB"  # decoded as pydicom decodes it
        assert (got.pixel_array == source.pixel_array).all()
        assert got.SOPInstanceUID == source.SOPInstanceUID
        assert got.LossyImageCompression == "01"
    finally:
        pacs.cleanup()
