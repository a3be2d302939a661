"""Waiting for delivery: a C-STORE answered after upload, a Pub/Sub message acked once every
destination has the instance (delivered, or held durably in its outbox).

The router tells the waiter which destinations an instance goes to; each destination's
delivery service settles its part. The waiting side may give up (``cancel``): the sender was
answered with a failure and will send again, so the outboxes drop their copies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from adapter.status import Status

__all__ = ["DeliveryWaiter", "Verdict"]

WaitMode = Literal["delivered", "settled"]


@dataclass(frozen=True)
class Verdict:
    """The outcome a waiter reports: a DIMSE status and, for a failure, an ErrorComment."""

    status: Status
    comment: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS


class DeliveryWaiter:
    """One instance's wait for its destinations; thread-safe.

    ``mode="delivered"`` (ack after-upload): done when every destination delivered it, or
    one rejected it. ``mode="settled"`` (export ack): done when every destination delivered,
    rejected (dead-lettered) or holds it for a retry.
    """

    def __init__(self, mode: WaitMode = "delivered", deadline: float | None = None) -> None:
        self.mode = mode
        self.deadline = deadline  # time.monotonic(); delivery services stop retrying for us then
        self._cond = threading.Condition()
        self._pending: set[str] | None = None  # None until the router decided
        self._rejected: Verdict | None = None
        self._last_error: dict[str, str] = {}
        self._result: Verdict | None = None
        self._cancelled = False

    # ------------------------------------------------------------------ router side
    def expect(self, destinations: Iterable[str]) -> None:
        """The destinations this instance goes to (none: dropped by a rule, done at once)."""
        with self._cond:
            self._pending = set(destinations)
            self._check()

    # ------------------------------------------------------------------ delivery side
    def delivered(self, destination: str) -> None:
        self._settle(destination, None)

    def held(self, destination: str, error: str) -> None:
        """A transient failure: the instance waits in the destination's outbox."""
        with self._cond:
            self._last_error[destination] = error
            if self.mode == "settled":
                self._discard(destination)

    def rejected(self, destination: str, verdict: Verdict) -> None:
        self._settle(destination, verdict)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def expired(self) -> bool:
        """True once the waiting side's deadline passed (no point retrying for it)."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    # ------------------------------------------------------------------ waiting side
    def wait(self, timeout: float | None = None) -> Verdict | None:
        """The verdict, or None if ``timeout`` passed first."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._result is None:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self._result

    def cancel(self) -> bool:
        """Give up waiting; False if the verdict came first (then use it)."""
        with self._cond:
            if self._result is not None:
                return False
            self._cancelled = True
            self._cond.notify_all()
            return True

    def last_error(self) -> str | None:
        """The latest transient failure, named by destination (for an ErrorComment)."""
        with self._cond:
            if not self._last_error:
                return None
            name, error = next(reversed(self._last_error.items()))
            return f"{name}: {error}"

    @property
    def result(self) -> Verdict | None:
        return self._result

    # ------------------------------------------------------------------ internals
    def _settle(self, destination: str, rejection: Verdict | None) -> None:
        with self._cond:
            if rejection is not None and self._rejected is None:
                self._rejected = rejection
            self._discard(destination)

    def _discard(self, destination: str) -> None:
        if self._pending is not None:
            self._pending.discard(destination)
        self._check()

    def _check(self) -> None:
        if self._result is not None or self._pending is None or self._cancelled:
            return
        if self._rejected is not None and self.mode == "delivered":
            self._result = self._rejected
        elif not self._pending:
            self._result = self._rejected or Verdict(Status.SUCCESS)
        if self._result is not None:
            self._cond.notify_all()
