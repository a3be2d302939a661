"""A measurement = one timed action repeated ``runs`` times; rows carry the median."""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Measurement", "Timed", "measure", "say"]

_START = time.monotonic()


def say(message: str) -> None:
    """Progress on stdout, with the time since start."""
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", flush=True)


@dataclass
class Timed:
    """One run's result: wall seconds for the measured span, plus anything else observed."""

    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    """A table row: what was measured, its size, and each run's time."""

    key: str
    label: str
    instances: int
    nbytes: int
    runs: list[Timed] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(r.seconds for r in self.runs) if self.runs else None

    @property
    def per_second(self) -> float | None:
        m = self.median
        return self.instances / m if m else None

    @property
    def mb_per_second(self) -> float | None:
        m = self.median
        return self.nbytes / 1e6 / m if m else None

    def extra_median(self, name: str) -> float | None:
        values = [r.extra[name] for r in self.runs if isinstance(r.extra.get(name), int | float)]
        return statistics.median(values) if values else None

    def extra_max(self, name: str) -> float | None:
        values = [r.extra[name] for r in self.runs if isinstance(r.extra.get(name), int | float)]
        return max(values) if values else None

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "instances": self.instances,
            "bytes": self.nbytes,
            "median_seconds": self.median,
            "instances_per_second": self.per_second,
            "mb_per_second": self.mb_per_second,
            "runs": [{"seconds": r.seconds, **r.extra} for r in self.runs],
            "error": self.error,
        }


def measure(
    key: str,
    label: str,
    instances: int,
    nbytes: int,
    runs: int,
    once: Callable[[int], Timed],
) -> Measurement:
    """Call ``once(run_index)`` ``runs`` times; the first failure ends the row with its error
    (the other rows still run)."""
    m = Measurement(key, label, instances, nbytes)
    for i in range(runs):
        say(f"{key}: run {i + 1}/{runs} - {label}")
        try:
            result = once(i)
        except Exception as exc:  # a failed row is reported, not fatal
            m.error = f"{type(exc).__name__}: {exc}"[:2000]
            say(f"{key}: FAILED: {m.error[:500]}")
            traceback.print_exc()
            break
        m.runs.append(result)
        rate = instances / result.seconds if result.seconds else 0.0
        say(
            f"{key}: {result.seconds:.2f}s ({rate:.1f} instances/s, "
            f"{nbytes / 1e6 / result.seconds if result.seconds else 0:.1f} MB/s)"
        )
    return m
