"""Recycled spool files (adapter/spool_pool.py): a delivered file's inode is written over by
the next received instance, and a power cut still loses nothing acknowledged and never brings
back a name whose inode holds another instance.

The power-cut model: what survives is each file's content as of its last fsync and each
directory's entries as of its last fsync (``os.fsync`` is wrapped to take those snapshots);
anything not fsynced is assumed lost."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from adapter.spool import Spool, SpoolBudget, SpoolEntry, SpoolMeta
from adapter.spool_pool import FilePool

CT = "1.2.840.10008.5.1.4.1.1.2"


class PowerCut:
    """Snapshots of what an fsync made durable (contents by inode, directory entries)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.contents: dict[int, str] = {}
        self.listings: dict[str, dict[str, int]] = {}
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            real_fsync(fd)
            st = os.fstat(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if stat.S_ISDIR(st.st_mode):
                self.listings[path] = {e.name: e.inode() for e in os.scandir(path)}
            else:
                with open(f"/proc/self/fd/{fd}", "rb") as f:
                    self.contents[st.st_ino] = hashlib.sha256(f.read()).hexdigest()

        monkeypatch.setattr(os, "fsync", fsync)

    def survivors(self, directory: Path) -> dict[str, str | None]:
        """name -> content hash (None: the content never reached the disk) after a cut."""
        listing = self.listings.get(str(directory), {})
        return {name: self.contents.get(ino) for name, ino in listing.items()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def spools(tmp_path: Path) -> Iterator[tuple[Spool, Spool, FilePool]]:
    pool = FilePool(tmp_path / "spool" / "free")
    budget = SpoolBudget(10**9, pool=pool)
    inbox = Spool(tmp_path / "spool", max_bytes=10**9, budget=budget)
    outbox = Spool(tmp_path / "spool" / "outbox" / "store", max_bytes=10**9, budget=budget)
    yield inbox, outbox, pool
    inbox.close()
    outbox.close()


def receive(inbox: Spool, data: bytes) -> SpoolEntry:
    """What the native acceptor and the Storage SCP do; returning = the C-STORE is answered."""
    path = inbox.incoming_dir / f"native-{generate_uid()}.part"
    with inbox.open_receive_file(path) as f:
        f.write(data)
    return inbox.put_file(path, SpoolMeta(CT, generate_uid()))


def route_and_deliver(inbox: Spool, outbox: Spool, entry: SpoolEntry) -> None:
    """RoutingService then DeliveryService, as far as the files go."""
    linked = outbox.link_in(entry.path, entry.id, entry.meta, sync=False)
    assert linked is not None
    outbox.sync()
    inbox.complete(entry)
    (claimed,) = outbox.claim_batch(1, 1 << 30)
    outbox.complete(claimed)


def test_a_delivered_file_is_written_over_by_the_next_instance_and_cut_to_its_length(
    spools: tuple[Spool, Spool, FilePool],
) -> None:
    inbox, outbox, pool = spools
    first = receive(inbox, b"A" * 5000)
    inode = first.path.stat().st_ino
    route_and_deliver(inbox, outbox, first)
    assert pool.files == 1
    second = receive(inbox, b"B" * 1200)
    assert second.path.stat().st_ino == inode  # the same inode, not a new file
    assert second.path.read_bytes() == b"B" * 1200
    assert pool.files == 0


def test_a_file_still_linked_in_another_outbox_is_not_taken(
    spools: tuple[Spool, Spool, FilePool], tmp_path: Path
) -> None:
    inbox, outbox, pool = spools
    entry = receive(inbox, b"C" * 100)
    outbox.link_in(entry.path, entry.id, entry.meta)
    inbox.complete(entry)  # the inbox link goes; the outbox still holds the file
    assert pool.files == 0
    (claimed,) = outbox.claim_batch(1, 1 << 30)
    assert claimed.path.read_bytes() == b"C" * 100


def test_a_retired_file_is_not_reused_before_its_old_name_is_durably_gone(
    tmp_path: Path,
) -> None:
    pool = FilePool(tmp_path / "free")
    old = tmp_path / "ready-name"
    old.write_bytes(b"x" * 10)
    retired = pool.retire(old)
    assert retired is not None and not old.exists()
    fresh = tmp_path / "rx1"
    with pool.open_for_writing(fresh) as f:  # not published yet: a new file
        f.write(b"y")
    assert fresh.stat().st_ino != retired[0].stat().st_ino
    pool.publish([retired])
    again = tmp_path / "rx2"
    ino = retired[0].stat().st_ino
    with pool.open_for_writing(again) as f:
        f.write(b"z")
    assert again.stat().st_ino == ino and again.read_bytes() == b"z"


def test_the_pool_is_bounded_and_emptied_at_start(tmp_path: Path) -> None:
    pool = FilePool(tmp_path / "free", max_files=2, max_file_bytes=100)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    assert pool.retire(big) is None and big.exists()  # too big: the caller unlinks it
    for i in range(3):
        (tmp_path / f"f{i}").write_bytes(b"x")
    assert [pool.retire(tmp_path / f"f{i}") is not None for i in range(3)] == [True, True, False]
    assert FilePool(tmp_path / "free").files == 0
    assert list((tmp_path / "free").iterdir()) == []


def test_power_cut_keeps_every_acknowledged_instance_and_no_name_with_another_ones_data(
    spools: tuple[Spool, Spool, FilePool], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, outbox, _pool = spools
    cut = PowerCut(monkeypatch)
    expected: dict[str, str] = {}  # entry id -> the data its C-STORE carried
    pending: list[SpoolEntry] = []
    for i in range(12):
        data = bytes([65 + i]) * (3000 - 100 * i)
        entry = receive(inbox, data)  # acknowledged here
        expected[entry.id] = sha(data)
        pending.append(entry)
        if i % 3 == 2:  # some get delivered (their files recycled), others wait
            route_and_deliver(inbox, outbox, pending.pop(0))
        # a power cut now: every acknowledged, undelivered instance is on disk, intact
        left = {
            name.removesuffix(".dcm"): digest
            for d in (inbox.ready_dir, outbox.ready_dir)
            for name, digest in cut.survivors(d).items()
        }
        for waiting in pending:
            assert left.get(waiting.id) == expected[waiting.id], f"lost {waiting.id} at {i}"
        for name, digest in left.items():  # whatever survives is what that name was given
            assert digest == expected[name], f"{name} came back holding other data"
    assert sum(1 for _ in inbox.incoming_dir.iterdir()) == 0
