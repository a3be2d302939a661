"""Two-way sync without echoes: one ``dicom-adapter run`` with importer and exporter, Orthanc as
the DICOM store with the notifier plugin publishing to the Pub/Sub emulator, dcmtk storescp as
the PACS. What the PACS sends in reaches the store and is not sent back; what others store is
delivered to the PACS."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import StoreScpPeer
from tests.peers.orthanc import OrthancPeer
from tests.peers.pubsub import PubSubEmulator
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

NOTIFIER = Path(__file__).resolve().parents[2] / "exporter" / "orthanc_notifier.py"


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{name}{re.escape(labels)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[StoreScpPeer]:
    peer = StoreScpPeer(tmp_path / "pacs", aet="PACS", extra_args=["--fork"]).start()
    try:
        yield peer
    finally:
        peer.stop()


def test_pacs_instances_are_imported_and_not_echoed_while_others_are_exported(
    pubsub_emulator: PubSubEmulator,
    orthanc_factory: Callable[..., OrthancPeer],
    pacs: StoreScpPeer,
    tmp_path: Path,
) -> None:
    name = f"two-way-{uuid.uuid4().hex[:8]}"
    pubsub_emulator.create_subscription(name, name)
    store = orthanc_factory(
        aet="STORE",
        python_script=NOTIFIER,
        extra_config={
            "DicomAdapterNotifier": {
                "PubSubHost": pubsub_emulator.host,
                "Project": pubsub_emulator.project,
                "Topic": name,
                "StoreName": "orthanc",
            }
        },
    )
    adapter = AdapterProcess(
        {
            "dicomweb": {"url": store.dicomweb_url, "auth": {"kind": "none"}},
            "retry": {"initial_delay": 0.2, "max_delay": 1.0},
            "importer": {"dimse": {"ae_title": "IMPORTADAPTER"}},
            "exporter": {
                "pubsub": {"project": pubsub_emulator.project, "subscription": name},
                "destination": {
                    "kind": "dimse",
                    "ae_title": "PACS",
                    "host": "127.0.0.1",
                    "port": pacs.port,
                },
                "state_dir": str(tmp_path / "export"),
            },
        },
        tmp_path,
        env=pubsub_emulator.env(),
    ).start()
    try:
        from_pacs = make_ct_series(tmp_path / "from-pacs", 5, rows=16, cols=16, seed=1)
        sent = dcmtk.storescu(adapter.port, from_pacs, aet="PACS", called_aet="IMPORTADAPTER")
        assert dcmtk.count_store_successes(sent.check()) == len(from_pacs)
        store.wait_for_instance_count(len(from_pacs), timeout=30)
        wait_until(
            lambda: (
                _metric(
                    adapter.metrics_text(),
                    "dicom_adapter_export_messages_skipped_total",
                    '{reason="echo"}',
                )
                >= len(from_pacs)
            ),
            timeout=30,
            what="the PACS's own instances skipped as echoes",
        )

        by_others = make_ct_series(tmp_path / "by-others", 3, rows=16, cols=16, seed=2)
        for path in by_others:
            store.upload_file(path)
        pacs.wait_for_files(len(by_others), timeout=30)
        uid = {
            p: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in [*from_pacs, *by_others]
        }
        assert pacs.received_sop_instance_uids() == {uid[p] for p in by_others}
        assert store.sop_instance_uids() >= set(uid.values())
    finally:
        adapter.terminate()
