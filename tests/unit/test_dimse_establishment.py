"""The listener's association limit and connection gate (adapter/dimse/establishment.py, PS3.8
9.1.5): a slot is checked and counted in one step, held while its association's thread lives;
the gate hands over a whole A-ASSOCIATE-RQ, refuses what is not one, and closes at ARTIM."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from adapter.dimse.establishment import AssociationGate, AssociationLimit
from adapter.dimse.pdu import encode_associate_rq, encode_release_rp
from tests.peers.wait import wait_until


def test_concurrent_reservations_never_pass_the_limit() -> None:
    limit = AssociationLimit(3)
    start = threading.Barrier(16)
    got: list[object] = []

    def reserve() -> None:
        start.wait()
        slot = limit.reserve()
        if slot is not None:
            got.append(slot)

    workers = [threading.Thread(target=reserve) for _ in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(got) == 3 and limit.count() == 3 and limit.reserve() is None


def test_a_slot_is_held_while_the_thread_it_follows_lives() -> None:
    limit = AssociationLimit(1)
    slot = limit.reserve()
    assert slot is not None
    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    slot.follow(thread)
    assert limit.reserve() is None
    done.set()
    thread.join()
    assert limit.reserve() is not None


RQ = encode_associate_rq(
    "SCP",
    "SCU",
    [(1, "1.2.840.10008.1.1", ("1.2.840.10008.1.2",))],
    max_pdu_length=16384,
    implementation_class_uid="1.2.3.4",
    implementation_version_name="T",
)


@pytest.fixture
def gate() -> Iterator[tuple[AssociationGate, list[bytes]]]:
    taken: list[bytes] = []

    def on_request(sock: socket.socket, address: tuple[str, int], data: bytes) -> bytes | None:
        taken.append(data)
        sock.close()
        return None

    gate = AssociationGate(on_request, artim_timeout=0.5, name="test")
    gate.start()
    yield gate, taken
    gate.close()


def connect(gate: AssociationGate) -> socket.socket:
    ours, peer = socket.socketpair()
    gate.add(ours, ("127.0.0.1", 1))
    peer.settimeout(5)
    return peer


def test_a_whole_associate_rq_in_pieces_is_handed_over(
    gate: tuple[AssociationGate, list[bytes]],
) -> None:
    g, taken = gate
    peer = connect(g)
    for piece in (RQ[:3], RQ[3:50], RQ[50:]):
        peer.sendall(piece)
    wait_until(lambda: taken, 5, interval=0.01, what="the hand-over")
    assert taken == [RQ] and g.waiting() == 0
    peer.close()


def test_another_pdu_first_is_aborted_as_unexpected(
    gate: tuple[AssociationGate, list[bytes]],
) -> None:
    g, taken = gate
    peer = connect(g)
    peer.sendall(encode_release_rp())
    abort = peer.recv(10, socket.MSG_WAITALL)
    assert abort[0] == 0x07 and (abort[8], abort[9]) == (2, 2) and taken == []
    peer.close()


def test_a_silent_connection_is_closed_at_artim(
    gate: tuple[AssociationGate, list[bytes]],
) -> None:
    g, _ = gate
    peer = connect(g)
    peer.sendall(RQ[:10])
    started = time.monotonic()
    assert peer.recv(10) == b""
    assert 0.4 <= time.monotonic() - started < 2.0
    peer.close()


def test_past_the_bound_the_oldest_waiting_connection_goes() -> None:
    gate = AssociationGate(lambda *_: None, artim_timeout=30, name="test", max_pending=2)
    gate.start()
    try:
        peers = [connect(gate) for _ in range(3)]
        assert peers[0].recv(10) == b""  # the oldest, closed
        wait_until(lambda: gate.waiting() == 2, 5, interval=0.01, what="two waiting")
        for peer in peers:
            peer.close()
    finally:
        gate.close()


def test_an_oversized_associate_rq_is_aborted_with_reason_6(
    gate: tuple[AssociationGate, list[bytes]],
) -> None:
    g, _ = gate
    peer = connect(g)
    peer.sendall(struct.pack(">BBL", 0x01, 0, 0x7FFFFFF0))
    abort = peer.recv(10, socket.MSG_WAITALL)
    assert abort[0] == 0x07 and (abort[8], abort[9]) == (2, 6)
    peer.close()
