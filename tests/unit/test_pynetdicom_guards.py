"""The guards adapter/dimse/pynetdicom_setup.py puts around pynetdicom's state machine and
A-ABORT decoding: input pynetdicom's own code dies on is answered as PS3.8 9.2 says."""

from __future__ import annotations

from typing import Any

import pynetdicom.fsm
import pynetdicom.pdu
import pytest

import adapter.dimse.pynetdicom_setup  # noqa: F401  (installs the guards)


class _Timer:
    def __init__(self) -> None:
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False


class _Dul:
    """What the actions AA-2 and AA-8 touch of a DULServiceProvider."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.to_user: list[Any] = []
        self.artim_timer = _Timer()
        self.closed = False
        self.assoc = None
        outer = self

        class _Queue:
            def put(self, item: Any) -> None:
                outer.to_user.append(item)

        class _Socket:
            def close(self) -> None:
                outer.closed = True

        self.to_user_queue = _Queue()
        self.socket = _Socket()

    def _send(self, pdu: Any) -> None:
        self.sent.append(pdu)


def _machine(state: str) -> Any:
    machine = pynetdicom.fsm.StateMachine(_Dul())  # type: ignore[arg-type]
    machine.current_state = state
    return machine


def test_a_peer_pdu_invalid_for_the_state_is_answered_with_an_a_abort() -> None:
    machine = _machine("Sta6")
    assert ("Evt5", "Sta6") not in pynetdicom.fsm.TRANSITION_TABLE
    machine.do_action("Evt5")  # pynetdicom: InvalidEventError, its DUL thread dies
    assert machine.current_state == "Sta13"
    assert [type(p).__name__ for p in machine.dul.sent] == ["A_ABORT_RQ"]
    assert machine.dul.sent[0].source == 2 and machine.dul.artim_timer.running


@pytest.mark.parametrize("event", ["Evt9", "Evt14", "Evt15", "Evt11"])
def test_a_local_response_after_the_abort_is_dropped(event: str) -> None:
    machine = _machine("Sta13")
    machine.do_action(event)
    assert machine.current_state == "Sta13" and machine.dul.sent == []


def test_a_stale_artim_expiry_is_ignored_and_the_timer_stopped() -> None:
    machine = _machine("Sta6")
    machine.dul.artim_timer.start()
    machine.do_action("Evt18")
    assert machine.current_state == "Sta6" and not machine.dul.artim_timer.running


@pytest.mark.parametrize("source", [1, 3, 0xFF])
def test_an_a_abort_with_a_reserved_source_is_still_an_abort(source: int) -> None:
    pdu = pynetdicom.pdu.A_ABORT_RQ()
    pdu.decode(bytes([0x07, 0x00, 0, 0, 0, 4, 0, 0, source, 0]))
    primitive = pdu.to_primitive()  # pynetdicom: ValueError
    assert type(primitive).__name__ == "A_ABORT" and primitive.abort_source == 0
