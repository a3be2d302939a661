"""One retry policy for every network call (upload path and exporter), built on tenacity.

Exponential backoff with full jitter, capped; a peer's ``Retry-After`` (RFC 9110 10.2.3) wins
over a shorter computed delay; a shutdown event interrupts the sleep and re-raises the last error.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import tenacity

from adapter.errors import PermanentError, TransientError

__all__ = ["DEFAULT_RETRY_HTTP_STATUSES", "RetryPolicy", "parse_retry_after"]

T = TypeVar("T")

DEFAULT_RETRY_HTTP_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

#: Never sleep longer than this for one Retry-After, whatever the peer asked for.
MAX_RETRY_AFTER = 3600.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if
    absent or unparseable. Dates in the past give 0."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return min(max(0.0, (when - current).total_seconds()), MAX_RETRY_AFTER)


class _InterruptedError(Exception):
    """Raised out of the sleep when the stop event is set."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a call that failed with a retryable error."""

    max_attempts: int = 10  # 0 = no count limit
    max_elapsed: float = 0.0  # seconds since the first attempt; 0 = no time limit
    poison_attempts: int = 3  # requests broken mid-flight before a dead letter; 0 = never
    initial_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0
    jitter: bool = True
    retry_http_statuses: frozenset[int] = field(default=DEFAULT_RETRY_HTTP_STATUSES)

    def __post_init__(self) -> None:
        if self.max_attempts < 0 or self.max_elapsed < 0 or self.poison_attempts < 0:
            raise ValueError("max_attempts, max_elapsed, poison_attempts must be >= 0 (0 = off)")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")

    def is_retryable(self, error: BaseException) -> bool:
        """True for TransientError, and for PermanentError whose HTTP status was configured as
        retryable (a site may choose to retry e.g. 409 from a store that is still indexing)."""
        if isinstance(error, TransientError):
            return True
        if isinstance(error, PermanentError):
            return error.http_status is not None and error.http_status in self.retry_http_statuses
        return False

    def exhausted(self, attempts: int, first_attempt: float | None, now: float) -> bool:
        """True once ``attempts`` failed attempts, the first at ``first_attempt`` (epoch
        seconds), used up the count or the time budget (whichever is set and runs out first)."""
        if self.max_attempts and attempts >= self.max_attempts:
            return True
        return bool(self.max_elapsed and first_attempt and now - first_attempt >= self.max_elapsed)

    def backoff(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt number ``attempt`` (1-based), capped."""
        exponent = max(0, attempt - 1)
        try:
            raw = self.initial_delay * (self.multiplier**exponent)
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, raw)

    def delay_for(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to sleep after failed attempt ``attempt``: full-jitter exponential backoff,
        but never less than the peer's Retry-After (carried by TransientError.retry_after)."""
        cap = self.backoff(attempt)
        delay = random.uniform(0.0, cap) if self.jitter else cap
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
        return delay

    def call(
        self,
        fn: Callable[[], T],
        *,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stop_event: threading.Event | None = None,
    ) -> T:
        """Run ``fn`` until it succeeds, fails with a non-retryable error, runs out of attempts
        or time, or ``stop_event`` is set; then re-raise the last error unchanged.

        ``on_retry(attempt, error, delay)`` is called before each sleep (for logs and metrics).
        """
        last_error: list[BaseException] = []

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            return self.delay_for(state.attempt_number, error)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if error is None:  # pragma: no cover - only exceptions are retried
                return
            last_error[:] = [error]
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            if on_retry is not None:
                on_retry(state.attempt_number, error, delay)

        def do_sleep(seconds: float) -> None:
            if stop_event is None:
                sleep(seconds)
                return
            if stop_event.is_set():
                raise _InterruptedError
            if sleep is time.sleep:
                if stop_event.wait(seconds):
                    raise _InterruptedError
            else:
                sleep(seconds)
                if stop_event.is_set():
                    raise _InterruptedError

        stop: tenacity.stop.stop_base = (
            tenacity.stop_never
            if self.max_attempts == 0
            else tenacity.stop_after_attempt(self.max_attempts)
        )
        if self.max_elapsed:
            stop = stop | tenacity.stop_after_delay(self.max_elapsed)
        if stop_event is not None:
            event = stop_event
            stop = stop | tenacity.stop_when_event_set(event)

        retrying = tenacity.Retrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(self.is_retryable),
            reraise=True,
            sleep=do_sleep,
            before_sleep=before_sleep,
        )
        try:
            return retrying(fn)
        except _InterruptedError:
            raise last_error[0] from None
