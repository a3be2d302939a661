"""Multi-process receive, in one process: a child's spool view moves files in durably, keeps
the shared budget, hands the name to the parent; the parent's Spool adopts each file once."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from adapter.spool import Spool, SpoolFullError, SpoolMeta
from importer.receivers import ReceiverSpool, _ParentLink
from tests.peers.datasets import make_ct_series

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool", max_bytes=10_000)
    yield s
    s.close()


def received(tmp_path: Path, size: int = 1000) -> Path:
    path = tmp_path / f"rx-{time.monotonic_ns()}.tmp"
    path.write_bytes(os.urandom(size))
    return path


def meta() -> SpoolMeta:
    return SpoolMeta(sop_class_uid=CT, sop_instance_uid=generate_uid())


def child_view(spool: Spool) -> tuple[ReceiverSpool, Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    budget = ctx.Array("q", 2)
    parent_end, child_end = ctx.Pipe(duplex=True)
    view = ReceiverSpool(spool.path, spool.max_bytes, 0, budget, _ParentLink(child_end))
    return view, budget, parent_end


def test_child_moves_in_and_parent_adopts_once(spool: Spool, tmp_path: Path) -> None:
    view, budget, parent_end = child_view(spool)
    entry = view.put_file(received(tmp_path), meta())
    assert entry.path.parent == spool.ready_dir and entry.path.exists()
    kind, name, sent_meta, size = parent_end.recv()
    assert (kind, name, size) == ("spooled", entry.path.name, 1000)
    assert budget[1] == 1000  # reserved until the parent adopts it
    assert spool.adopt(name, sent_meta) is not None
    assert spool.adopt(name, sent_meta) is None  # already known
    assert spool.rescan() == 0
    assert (spool.depth(), spool.bytes_used) == (1, 1000)


def test_rescan_first_then_the_late_message(spool: Spool, tmp_path: Path) -> None:
    view, _budget, parent_end = child_view(spool)
    view.put_file(make_ct_series(tmp_path / "ct", 1, rows=8, cols=8)[0], meta())
    assert spool.rescan() == 1
    _, name, sent_meta, _ = parent_end.recv()
    assert spool.adopt(name, sent_meta) is None
    assert spool.depth() == 1


def test_child_refuses_over_the_shared_budget(spool: Spool, tmp_path: Path) -> None:
    view, budget, _parent_end = child_view(spool)
    budget[0] = 9_500  # what the parent's spool holds
    src = received(tmp_path)
    assert not view.has_room(1000)
    with pytest.raises(SpoolFullError):
        view.put_file(src, meta())
    assert src.exists() and budget[1] == 0


def test_adopt_refuses_a_path(spool: Spool) -> None:
    with pytest.raises(ValueError):
        spool.adopt("../x.dcm")
