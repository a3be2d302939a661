"""RetryPolicy: which errors are retried, how long it waits, when it gives up."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from adapter.errors import ConfigError, PermanentError, TransientError
from adapter.retry import RetryPolicy, parse_retry_after


class Flaky:
    """Fails with the given errors in order, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_transient_errors_are_retried_until_success() -> None:
    slept: list[float] = []
    fn = Flaky(TransientError("a"), TransientError("b"))
    assert RetryPolicy(jitter=False).call(fn, sleep=slept.append) == "ok"
    assert fn.calls == 3
    assert slept == [1.0, 2.0]


def test_permanent_error_is_raised_at_once() -> None:
    fn = Flaky(PermanentError("nope", http_status=400))
    with pytest.raises(PermanentError, match="nope"):
        RetryPolicy().call(fn, sleep=lambda s: None)
    assert fn.calls == 1


def test_other_exceptions_are_not_retried() -> None:
    fn = Flaky(ConfigError("bad"))
    with pytest.raises(ConfigError):
        RetryPolicy().call(fn, sleep=lambda s: None)
    assert fn.calls == 1


def test_permanent_error_with_configured_status_is_retried() -> None:
    policy = RetryPolicy(retry_http_statuses=frozenset({409}))
    assert policy.is_retryable(PermanentError("conflict", http_status=409))
    assert not policy.is_retryable(PermanentError("bad", http_status=400))
    assert policy.call(Flaky(PermanentError("c", http_status=409)), sleep=lambda s: None) == "ok"


def test_gives_up_after_max_attempts_and_reraises_last_error() -> None:
    fn = Flaky(*(TransientError(f"e{i}") for i in range(5)))
    with pytest.raises(TransientError, match="e2"):
        RetryPolicy(max_attempts=3).call(fn, sleep=lambda s: None)
    assert fn.calls == 3


def test_zero_max_attempts_retries_forever() -> None:
    fn = Flaky(*(TransientError("x") for _ in range(50)))
    assert RetryPolicy(max_attempts=0).call(fn, sleep=lambda s: None) == "ok"
    assert fn.calls == 51


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=10, jitter=False)
    assert [policy.delay_for(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay_for(100_000) == 10  # no overflow when retrying forever


def test_jittered_delay_stays_within_the_backoff() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=60)
    delays = [policy.delay_for(4) for _ in range(200)]
    assert all(0 <= d <= 8 for d in delays)
    assert len(set(delays)) > 1


def test_retry_after_wins_over_shorter_backoff() -> None:
    policy = RetryPolicy(initial_delay=1, jitter=False)
    assert policy.delay_for(1, TransientError("429", http_status=429, retry_after=30)) == 30
    assert policy.delay_for(5, TransientError("429", retry_after=2)) == 16


def test_on_retry_reports_attempt_error_and_delay() -> None:
    seen: list[tuple[int, str, float]] = []
    error = TransientError("busy", http_status=429, retry_after=7)
    RetryPolicy(jitter=False).call(
        Flaky(error), sleep=lambda s: None, on_retry=lambda n, e, d: seen.append((n, str(e), d))
    )
    assert seen == [(1, "busy", 7.0)]


def test_stop_event_interrupts_sleep_and_reraises_last_error() -> None:
    stop = threading.Event()
    fn = Flaky(*(TransientError(f"e{i}") for i in range(100)))
    policy = RetryPolicy(initial_delay=30, jitter=False)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(TransientError, match="e0"):
        policy.call(fn, stop_event=stop)
    assert time.monotonic() - started < 5
    assert fn.calls == 1


def test_stop_event_already_set_makes_one_attempt_only() -> None:
    stop = threading.Event()
    stop.set()
    fn = Flaky(TransientError("down"))
    with pytest.raises(TransientError, match="down"):
        RetryPolicy().call(fn, stop_event=stop, sleep=lambda s: None)
    assert fn.calls == 1


def test_parse_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=45), usegmt=True), now) == 45
    assert parse_retry_after(format_datetime(now - timedelta(seconds=45), usegmt=True), now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("99999999") == 3600  # absurd values are capped


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=-1)
