"""A PACS that serves one association at a time (dcmtk storescp without --fork) still gets
everything from a pooled C-STORE SCU, without each extra association costing a full timeout."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adapter.dimse.client import GROW_ACSE_TIMEOUT, StoreScu
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import StoreScpPeer

pytestmark = pytest.mark.integration


def test_pool_caps_itself_at_what_a_serial_pacs_serves(tmp_path: Path) -> None:
    pacs = StoreScpPeer(tmp_path / "serial", aet="SERIALPACS").start()  # no --fork
    files = make_ct_series(tmp_path / "ct", 12, rows=32, cols=32)
    scu = StoreScu("SERIALPACS", "127.0.0.1", pacs.port, pool_size=4, acse_timeout=30)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(pool.map(scu.send_file, files))
        elapsed = time.monotonic() - started
        assert statuses == [0x0000] * 12
        pacs.wait_for_files(12)
        # One short wait for the unanswered extra associations, never the 30 s ACSE timeout.
        assert elapsed < GROW_ACSE_TIMEOUT + 15, f"took {elapsed:.1f}s"
    finally:
        scu.close()
        pacs.stop()
