"""Routing and fan-out with real peers: two Orthanc stores and two dcmtk storescp PACS behind
one importer; every instance where the rules say, byte-equal, nowhere else; a destination down
for a minute delays only itself; kill -9 in the middle of a fan-out loses nothing."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess, kill9_during_send
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import StoreScpPeer
from tests.peers.orthanc import OrthancPeer
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"


@pytest.fixture
def start_adapter(tmp_path: Path) -> Iterator[Callable[..., AdapterProcess]]:
    started: list[AdapterProcess] = []

    def start(config: dict[str, Any]) -> AdapterProcess:
        proc = AdapterProcess(config, tmp_path, name=f"adapter{len(started)}")
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.terminate()


@pytest.fixture
def pacs_pair(tmp_path: Path) -> Iterator[tuple[StoreScpPeer, StoreScpPeer]]:
    a = StoreScpPeer(tmp_path / "pacs-a", aet="PACS_A", extra_args=["--fork"]).start()
    b = StoreScpPeer(tmp_path / "pacs-b", aet="PACS_B", extra_args=["--fork"]).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def dimse(peer: StoreScpPeer) -> dict[str, Any]:
    return {"kind": "dimse", "ae_title": peer.aet, "host": "127.0.0.1", "port": peer.port}


def web(orthanc: OrthancPeer) -> dict[str, Any]:
    return {"kind": "dicomweb", "url": orthanc.dicomweb_url, "auth": {"kind": "none"}}


def site(
    store: OrthancPeer, destinations: dict[str, Any], routing: dict[str, Any]
) -> dict[str, Any]:
    return {
        "dicomweb": {"url": store.dicomweb_url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 0.5},
        "destinations": destinations,
        "importer": {"dimse": {"ae_title": AET}, "routing": routing},
    }


def with_modality(files: list[Path], modality: str) -> list[Path]:
    for path in files:
        ds = pydicom.dcmread(path)
        ds.Modality = modality
        ds.save_as(path)
    return files


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def same_data_set(sent: Path, got: bytes | Path) -> bool:
    """Every data set element equal (the File Meta Information is each receiver's own)."""
    a = pydicom.dcmread(sent)
    b = pydicom.dcmread(io.BytesIO(got) if isinstance(got, bytes) else got)
    return a == b and a.PixelData == b.PixelData


def test_rules_send_each_instance_where_they_say_byte_equal_and_nowhere_else(
    orthanc: OrthancPeer,
    orthanc_factory: Callable[..., OrthancPeer],
    pacs_pair: tuple[StoreScpPeer, StoreScpPeer],
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    store2 = orthanc_factory()
    pacs_a, pacs_b = pacs_pair
    orthanc.clear()
    ct = make_ct_series(tmp_path / "ct", 3, rows=32, cols=32)
    mg = with_modality(make_ct_series(tmp_path / "mg", 2, rows=32, cols=32, seed=3), "MG")
    routing = {
        "mode": "all",
        "rules": [
            {"name": "mammo", "match": {"Modality": "MG"}, "destinations": ["store2"]},
            {
                "name": "ct-fan-out",
                "match": {"all": [{"Modality": "CT"}, {"calling_ae": "MODALITY*"}]},
                "destinations": ["store", "pacs-a"],
            },
        ],
        "default": ["pacs-b"],
    }
    adapter = start_adapter(
        site(
            orthanc,
            {"store2": web(store2), "pacs-a": dimse(pacs_a), "pacs-b": dimse(pacs_b)},
            routing,
        )
    )
    dcmtk.storescu(adapter.port, [*ct, *mg], aet="MODALITY1", called_aet=AET).check()
    ct_uids, mg_uids = {uid_of(p) for p in ct}, {uid_of(p) for p in mg}
    wait_until(lambda: orthanc.sop_instance_uids() >= ct_uids, 30, what="CT in the store")
    wait_until(lambda: store2.sop_instance_uids() >= mg_uids, 30, what="MG in store 2")
    pacs_a.wait_for_files(len(ct), timeout=30)
    wait_until(
        lambda: (
            "outbox_depth" in adapter.metrics_text()
            and all(
                line.endswith(" 0.0")
                for line in adapter.metrics_text().splitlines()
                if line.startswith("dicom_adapter_outbox_depth{")
            )
        ),
        30,
        what="every outbox empty",
    )
    assert orthanc.sop_instance_uids() == ct_uids
    assert store2.sop_instance_uids() == mg_uids
    assert pacs_a.received_sop_instance_uids() == ct_uids
    assert pacs_b.received_sop_instance_uids() == set()  # nothing fell to the default
    for path in ct:
        assert same_data_set(path, orthanc.get_instance_file(uid_of(path)))
    for path in mg:
        assert same_data_set(path, store2.get_instance_file(uid_of(path)))
    received = {uid_of(f): f for f in pacs_a.received_files()}
    for path in ct:
        assert same_data_set(path, received[uid_of(path)])
    # another calling AE: the CT rule does not match, the default PACS gets it
    [other] = make_ct_series(tmp_path / "other", 1, rows=16, cols=16, seed=9)
    dcmtk.storescu(adapter.port, [other], aet="WORKSTATION", called_aet=AET).check()
    pacs_b.wait_for_files(1, timeout=30)
    assert pacs_b.received_sop_instance_uids() == {uid_of(other)}
    routed = 'dicom_adapter_routed_total{destination="pacs-a",plugin="importer",rule="ct-fan-out"}'
    assert f"{routed} 3.0" in adapter.metrics_text()


def test_a_destination_down_for_a_minute_delays_only_itself(
    orthanc: OrthancPeer,
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    pacs = StoreScpPeer(tmp_path / "pacs", aet="PACS_A", extra_args=["--fork"]).start()
    pacs.stop()  # down while the send happens; the same port comes back a minute later
    orthanc.clear()
    files = make_ct_series(tmp_path / "ct", 300, rows=32, cols=32)
    uids = {uid_of(p) for p in files}
    routing = {"rules": [{"name": "both", "destinations": ["store", "pacs"]}]}
    adapter = start_adapter(site(orthanc, {"pacs": dimse(pacs)}, routing))
    try:
        dcmtk.storescu(adapter.port, files, called_aet=AET).check()
        # the store gets everything while the PACS is down: its outbox never waits on the PACS
        wait_until(lambda: orthanc.sop_instance_uids() >= uids, 60, what="all 300 in the store")
        metrics = adapter.metrics_text()
        assert 'dicom_adapter_destination_up{destination="pacs",plugin="importer"} 0.0' in metrics
        assert (
            'dicom_adapter_deliveries_total{destination="store",outcome="delivered",'
            'plugin="importer"} 300.0' in metrics
        )  # each instance once: no duplicates at the healthy destination
        ready = requests.get(f"{adapter.health_url}/readyz", timeout=5)
        assert ready.status_code == 200  # a destination that is down leaves the importer ready
        assert ready.json()["destinations"] == {"importer/store": "up", "importer/pacs": "failing"}
        wait_until(
            lambda: _oldest(adapter, "pacs") >= 60,
            90,
            interval=1.0,
            what="the PACS down for a minute",
        )
        pacs.start()
        pacs.wait_for_files(300, timeout=90)
        assert pacs.received_sop_instance_uids() == uids
        assert 'dicom_adapter_destination_up{destination="pacs",plugin="importer"} 1.0' in (
            adapter.metrics_text()
        )
        assert orthanc.sop_instance_uids() == uids
    finally:
        pacs.stop()


def _oldest(adapter: AdapterProcess, destination: str) -> float:
    for line in adapter.metrics_text().splitlines():
        if line.startswith("dicom_adapter_outbox_oldest_age_seconds{") and (
            f'destination="{destination}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_kill9_in_the_middle_of_a_fan_out_loses_nothing_acknowledged(
    orthanc: OrthancPeer,
    pacs_pair: tuple[StoreScpPeer, StoreScpPeer],
    tmp_path: Path,
    start_adapter: Callable[..., AdapterProcess],
) -> None:
    pacs_a, _ = pacs_pair
    orthanc.clear()
    files = make_ct_series(tmp_path / "ct", 200, rows=64, cols=64)
    routing = {"rules": [{"name": "both", "destinations": ["store", "pacs-a"]}]}
    dest = {"pacs-a": dimse(pacs_a) | {"delivery": {"workers": 1}, "pool_size": 1}}
    cfg = site(orthanc, dest, routing)
    cfg["importer"]["upload"] = {"workers": 1, "batch_max_instances": 5}
    adapter = start_adapter(cfg)
    acked = kill9_during_send(adapter, files, tmp_path / "dcmsend.log", AET, after=60)
    assert 60 <= len(acked) < 200, "the kill did not land in the middle of the send"
    adapter.start()  # same spool and outboxes
    wait_until(lambda: acked <= orthanc.sop_instance_uids(), 60, interval=0.3, what="store")
    wait_until(lambda: acked <= pacs_a.received_sop_instance_uids(), 60, interval=0.3, what="PACS")
