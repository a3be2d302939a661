"""Retry budgets are time, not a count (a destination down for a night dead-letters nothing),
and an instance whose requests keep breaking the destination is dead-lettered after a bounded
number of such attempts (issue #14), against the loopback STOW-RS stub."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapter.config_types import RetryConfig
from adapter.delivery import DeliveryService
from adapter.destinations.dicomweb import StowDestination
from adapter.dicomweb.session import SessionSettings, build_session
from adapter.dicomweb.stow import StowClient
from adapter.errors import TransientError
from adapter.retry import RetryPolicy
from adapter.spool import Spool
from tests.peers.http_stub import HttpStub, RecordedRequest, StubResponse
from tests.peers.ports import free_port
from tests.peers.wait import wait_until
from tests.unit.test_upload_service import spool, spool_instances, stow_answer, stub, uids_in

__all__ = ["spool", "stub"]  # fixtures shared with test_upload_service


def policy_of(cfg: RetryConfig) -> RetryPolicy:
    """What the plugin context builds from the site's ``retry`` block."""
    return RetryPolicy(
        max_attempts=cfg.max_attempts,
        max_elapsed=cfg.max_elapsed,
        poison_attempts=cfg.poison_attempts,
        initial_delay=cfg.initial_delay,
        max_delay=cfg.max_delay,
        jitter=False,
    )


@pytest.fixture
def service(spool: Spool) -> Iterator[Callable[..., DeliveryService]]:
    started: list[DeliveryService] = []

    def start(url: str, policy: RetryPolicy, batch: int = 20) -> DeliveryService:
        stow = StowClient(build_session(SessionSettings(url, read_timeout=5)), url)
        destination = StowDestination("store", stow, max_batch=batch)
        svc = DeliveryService("importer", spool, destination, policy, workers=1, linger=0.0)
        svc.start()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop(5)


def drained(spool: Spool) -> bool:
    return spool.depth() == 0 and spool.claimed_count() == 0


def test_the_default_budget_is_a_day_and_max_attempts_is_not_a_limit() -> None:
    cfg = RetryConfig()
    assert (cfg.max_elapsed, cfg.max_attempts, cfg.poison_attempts) == (86400.0, 0, 3)
    policy = policy_of(cfg)
    assert not policy.exhausted(10_000, time.time() - 3600, time.time())
    assert policy.exhausted(2, time.time() - 86401, time.time())
    forever = policy_of(RetryConfig(max_elapsed=0))
    assert not forever.exhausted(10**9, 0.0, time.time())


@pytest.mark.parametrize("down", ["503", "refused"])
def test_a_destination_down_longer_than_attempts_times_max_delay_dead_letters_nothing(
    stub: HttpStub, spool: Spool, tmp_path: Path, service: Callable[..., DeliveryService], down: str
) -> None:
    cfg = RetryConfig(initial_delay=0.01, max_delay=0.02)
    legacy_budget = 10 * cfg.max_delay  # what the count of 10 attempts allowed before
    entries = spool_instances(spool, tmp_path, 5)
    url = stub.url if down == "503" else f"http://127.0.0.1:{free_port()}"
    stub.default = StubResponse(503, {"Content-Type": "text/plain"}, b"down")
    svc = service(url, policy_of(cfg))
    started = time.monotonic()
    wait_until(
        lambda: all(e.attempts >= 15 for e in entries) and time.monotonic() - started > 1.0,
        20,
        what="15 failed attempts each",
    )
    assert time.monotonic() - started > 4 * legacy_budget
    assert spool.dead_letters is not None and spool.dead_letters.entries() == []
    assert spool.depth() == 5  # all still queued
    assert all(e.broken == 0 for e in entries)  # down is not poison
    if down == "503":
        stub.default = StubResponse(200)
        stub.handler = lambda r: StubResponse.json(200, stow_answer(uids_in(r)))
        wait_until(lambda: drained(spool), 10, what="delivered once the store is back")
        assert spool.dead_letters.entries() == []
    svc.stop(5)


def test_the_time_budget_ends_the_retries(
    stub: HttpStub, spool: Spool, tmp_path: Path, service: Callable[..., DeliveryService]
) -> None:
    spool_instances(spool, tmp_path, 1)
    stub.default = StubResponse(503, {"Content-Type": "text/plain"}, b"down")
    service(stub.url, policy_of(RetryConfig(max_elapsed=0.5, initial_delay=0.02, max_delay=0.05)))
    wait_until(lambda: drained(spool), 10, what="the budget ran out")
    assert spool.dead_letters is not None
    [letter] = spool.dead_letters.entries()
    assert letter.reason.startswith("gave up after 1s (") or letter.reason.startswith(
        "gave up after 0s ("
    ), letter.reason
    assert letter.attempts > 3


def test_call_stops_after_max_elapsed() -> None:
    calls = 0
    clock = [0.0]

    def fail() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("down")

    policy = RetryPolicy(max_attempts=0, max_elapsed=0.2, initial_delay=0.01, max_delay=0.01)
    started = time.monotonic()
    with pytest.raises(TransientError):
        policy.call(fail, sleep=lambda s: clock.append(s) or time.sleep(s))
    assert 0.2 <= time.monotonic() - started < 2 and calls > 3


def test_an_instance_that_breaks_the_store_is_dead_lettered_after_three_attempts(
    stub: HttpStub, spool: Spool, tmp_path: Path, service: Callable[..., DeliveryService]
) -> None:
    entries = spool_instances(spool, tmp_path, 4)
    poison = entries[2].sop_instance_uid
    seen: list[list[str]] = []
    lock = threading.Lock()

    def answer(request: RecordedRequest) -> StubResponse:
        uids = uids_in(request)
        with lock:
            seen.append(uids)
        if poison in uids:
            return StubResponse(drop=True)  # the store "crashes": connection closed, no answer
        return StubResponse.json(200, stow_answer(uids))

    stub.handler = answer
    service(stub.url, policy_of(RetryConfig(initial_delay=0.01, max_delay=0.05)))
    wait_until(lambda: drained(spool), 15, what="spool drained")
    assert spool.dead_letters is not None
    [letter] = spool.dead_letters.entries()
    assert letter.sop_instance_uid == poison
    assert "broke the connection 3 times while it was in flight" in letter.reason
    assert sum(poison in uids for uids in seen) == 3  # bounded: not an endless retry
    assert seen[0] == [e.sop_instance_uid for e in entries]  # one batch, then alone
    assert all(uids == [poison] for uids in seen[1:] if poison in uids)
    stored = {u for uids in seen if poison not in uids for u in uids}
    assert stored == {e.sop_instance_uid for e in entries} - {poison}


def test_poison_attempts_zero_never_dead_letters_for_breaks(
    stub: HttpStub, spool: Spool, tmp_path: Path, service: Callable[..., DeliveryService]
) -> None:
    [entry] = spool_instances(spool, tmp_path, 1)
    stub.default = StubResponse(drop=True)
    service(stub.url, policy_of(RetryConfig(poison_attempts=0, initial_delay=0.01, max_delay=0.02)))
    wait_until(lambda: entry.broken >= 5, 10, what="five broken attempts")
    assert spool.dead_letters is not None and spool.dead_letters.entries() == []
