"""Shared fixtures: real peers (Orthanc + DICOMweb, Pub/Sub emulator, dcmtk storescp) and
synthetic DICOM samples.

Peers start only when a test asks for them (pytest fixtures are lazy), listen on 127.0.0.1
only, and are stopped by PID at the end. A missing peer binary makes the test ERROR with an
install hint: never a silent skip (CI installs everything in .ci/run).

Session fixtures
    ``orthanc``          -> tests.peers.orthanc.OrthancPeer, AET "ORTHANC". If a test stopped
                            (or froze) it, it is started again before the next test using it.
    ``pubsub_emulator``  -> tests.peers.pubsub.PubSubEmulator, project "test-project".
    ``sample_files``     -> tests.peers.datasets.SampleSet (read-only: don't modify the files).
Function fixtures
    ``free_port``        -> int, a free TCP port on 127.0.0.1.
    ``storescp``         -> a started tests.peers.dcmtk.StoreScpPeer (AET "STORESCP").
    ``orthanc_factory``  -> callable(**OrthancPeer kwargs) -> started private OrthancPeer,
                            stopped after the test (for tests that need their own config or
                            that stop/restart Orthanc without disturbing the shared one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.peers.datasets import SampleSet
    from tests.peers.dcmtk import StoreScpPeer
    from tests.peers.orthanc import OrthancPeer
    from tests.peers.pubsub import PubSubEmulator

_INTEGRATION_DIR = Path(__file__).parent / "integration"
_session_orthanc: list[OrthancPeer] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ is an integration test, marked or not."""
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Give every test that uses ``orthanc`` a running Orthanc, even if an earlier test
    stopped, killed or froze it (same ports, same storage)."""
    if "orthanc" in getattr(item, "fixturenames", ()) and _session_orthanc:
        peer = _session_orthanc[0]
        peer.thaw()
        if not peer.is_running:
            peer.start()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    from tests.peers.orthanc import OrthancPeer

    peer = OrthancPeer(tmp_path_factory.mktemp("orthanc"), aet="ORTHANC")
    peer.start()
    _session_orthanc.append(peer)
    try:
        yield peer
    finally:
        _session_orthanc.clear()
        peer.stop()


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    from tests.peers.pubsub import PubSubEmulator

    emulator = PubSubEmulator(tmp_path_factory.mktemp("pubsub"), project="test-project")
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    from tests.peers.datasets import make_sample_set
    from tests.peers.dcmtk import require_dcmtk

    require_dcmtk(["dcmcjpeg", "dcmcjpls", "dcmcrle", "dcmconv"])
    return make_sample_set(tmp_path_factory.mktemp("samples"))


@pytest.fixture
def free_port() -> int:
    from tests.peers.ports import free_port as _free_port

    return _free_port()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreScpPeer]:
    from tests.peers.dcmtk import StoreScpPeer

    peer = StoreScpPeer(tmp_path / "storescp-received", aet="STORESCP")
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., OrthancPeer]]:
    from tests.peers.orthanc import OrthancPeer

    started: list[OrthancPeer] = []

    def make(**kwargs: Any) -> OrthancPeer:
        workdir = kwargs.pop("workdir", None) or tmp_path / f"orthanc-{len(started)}"
        peer = OrthancPeer(workdir, **kwargs)
        started.append(peer)
        return peer.start()

    try:
        yield make
    finally:
        for peer in started:
            peer.kill()  # its storage is thrown away: no need for the 3.5 s clean shutdown


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Cloud Storage emulator on 127.0.0.1 (tests.peers.gcs.GcsEmulator); tests make their
    own buckets (unique names: the session shares it)."""
    from tests.peers.gcs import GcsEmulator

    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs"))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
