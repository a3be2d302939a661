"""Scale out as the chart does it: two exporter pods on one Pub/Sub subscription deliver every
instance (duplicates are counted and reported, none lost); two importer pods behind one Service
address each take associations and drain their own spool into the store."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.integration.test_import_durability import ready_files
from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import StoreScpPeer
from tests.peers.orthanc import OrthancPeer
from tests.peers.pubsub import PubSubEmulator
from tests.peers.tcp_balancer import TcpBalancer
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
STORE = "projects/test-project/locations/local/datasets/local/dicomStores/orthanc"


def test_two_importers_behind_one_address_each_drain_their_own_spool(
    orthanc: OrthancPeer, tmp_path: Path
) -> None:
    files = make_ct_series(tmp_path / "ct", 120, rows=32, cols=32, seed=13)
    config: dict[str, Any] = {
        "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
        "importer": {"dimse": {"ae_title": AET}},
    }
    pods = [AdapterProcess(config, tmp_path, name=f"importer-{i}").start() for i in range(2)]
    try:
        with TcpBalancer([p.port for p in pods]) as service:
            results: list[int] = []

            def send(group: list[Path]) -> None:
                out = dcmtk.storescu(service.port, group, called_aet=AET)
                results.append(dcmtk.count_store_successes(out))

            threads = [threading.Thread(target=send, args=(files[i::6],)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert sum(results) == len(files)
            assert all(service.connections[p.port] >= 3 for p in pods), service.connections
        sent = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        wait_until(lambda: sent <= orthanc.sop_instance_uids(), 60, what="all in the store")
        for pod in pods:
            wait_until(lambda pod=pod: not ready_files(pod), 30, what=f"{pod.name} drained")
            assert (pod.workdir / "spool").is_dir()
        assert pods[0].workdir != pods[1].workdir  # one spool (PVC) per pod
    finally:
        for pod in pods:
            pod.terminate()


def test_two_exporters_on_one_subscription_deliver_every_instance(
    orthanc: OrthancPeer,
    pubsub_emulator: PubSubEmulator,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    files = make_ct_series(tmp_path / "ct", 150, rows=32, cols=32, seed=17)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for f in files:
        orthanc.upload_file(f)
    name = f"scale-{uuid.uuid4().hex[:8]}"
    topic = pubsub_emulator.create_topic(name)
    pubsub_emulator.create_subscription(name, name, ack_deadline_seconds=10)
    pacs = StoreScpPeer(tmp_path / "pacs", aet="STORESCP", extra_args=["--fork"]).start()
    env = {"PUBSUB_EMULATOR_HOST": pubsub_emulator.host}
    pods: list[AdapterProcess] = []
    try:
        for i in range(2):
            config = {
                "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
                "exporter": {
                    "pubsub": {"project": pubsub_emulator.project, "subscription": name},
                    "destination": {
                        "kind": "dimse",
                        "ae_title": pacs.aet,
                        "host": "127.0.0.1",
                        "port": pacs.port,
                        "pool_size": 2,
                    },
                    "state_dir": str(tmp_path / f"exporter-{i}" / "export-state"),
                    "workers": 4,
                },
            }
            pods.append(AdapterProcess(config, tmp_path, name=f"exporter-{i}", env=env).start())
        publisher = pubsub_emulator.publisher()
        futures = [
            publisher.publish(
                topic,
                f"{STORE}/dicomWeb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}".encode(),
            )
            for ds in headers
        ]
        for future in futures:
            future.result(timeout=30)
        pacs.wait_for_files(len(files), timeout=120)
        assert pacs.received_sop_instance_uids() == {str(ds.SOPInstanceUID) for ds in headers}
        stores = pacs.log_tail(10**8).count("Received Store Request")
        duplicates = stores - len(files)
        print(
            f"two exporters, one subscription: {len(files)} instances, {stores} C-STOREs, "
            f"{duplicates} duplicate(s)"
        )
        record_property("duplicate_c_stores", duplicates)
        assert duplicates >= 0
        assert all(pod.is_running for pod in pods)  # neither pod fell over sharing the queue
    finally:
        for pod in pods:
            pod.terminate()
        pacs.stop()
