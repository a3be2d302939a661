"""An instance a PACS dies on (it aborts the association with that C-STORE in flight) is
dead-lettered after ``retry.poison_attempts`` such attempts, not retried forever; the PACS's
other instances are delivered (issue #14 item 2, for DIMSE destinations)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from adapter.delivery import DeliveryService
from adapter.destinations.dimse import StoreScuDestination
from adapter.dimse.client import StoreScu
from adapter.retry import RetryPolicy
from adapter.spool import Spool
from tests.peers.ports import LOOPBACK
from tests.peers.wait import wait_until
from tests.unit.test_upload_service import spool, spool_instances

__all__ = ["spool"]

pytestmark = pytest.mark.integration


class CrashingPacs:
    """A Storage SCP that aborts the association when it receives the ``poison`` instance (a
    PACS that crashes on it and comes back without it), and keeps every other one."""

    def __init__(self) -> None:
        self.poison = ""
        self.stored: list[str] = []
        self.poison_seen = 0
        self._lock = threading.Lock()
        self.ae = AE(ae_title="CRASHPACS")
        self.ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        self.server = self.ae.start_server(
            (LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_c_store)]
        )
        self.port = self.server.server_address[1]

    def _on_c_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            if uid == self.poison:
                self.poison_seen += 1
                event.assoc.abort()
                return 0xA700
            self.stored.append(uid)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def pacs() -> Iterator[CrashingPacs]:
    peer = CrashingPacs()
    yield peer
    peer.stop()


def test_an_instance_the_pacs_dies_on_is_dead_lettered_after_three_attempts(
    pacs: CrashingPacs, spool: Spool, tmp_path: Path
) -> None:
    entries = spool_instances(spool, tmp_path, 4)
    pacs.poison = entries[1].sop_instance_uid
    scu = StoreScu("CRASHPACS", LOOPBACK, pacs.port, pool_size=1, dimse_timeout=10)
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.05, jitter=False)
    svc = DeliveryService(
        "exporter", spool, StoreScuDestination("pacs", scu), policy, workers=1, linger=0.0
    )
    svc.start()
    try:
        wait_until(
            lambda: spool.depth() == 0 and spool.claimed_count() == 0, 30, what="spool drained"
        )
    finally:
        svc.stop(5)
    assert spool.dead_letters is not None
    [letter] = spool.dead_letters.entries()
    assert letter.sop_instance_uid == pacs.poison
    assert "broke the connection 3 times while it was in flight" in letter.reason
    assert "no response" in letter.reason
    # an attempt on a kept-open association is retried at once on a new one (the PACS may
    # have dropped the old one while idle): at most two sends per counted attempt
    assert 3 <= pacs.poison_seen <= 6
    assert sorted(pacs.stored) == sorted(
        e.sop_instance_uid for e in entries if e.sop_instance_uid != pacs.poison
    )
