"""Attach py-spy (a public sampling profiler, ``pip install py-spy``) to the adapter process
during a measurement and summarise where its CPU time went."""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["PySpy", "summarise"]

_LINE = re.compile(r":\d+\)$")
_PROCESS = re.compile(r"^process \d+:")  # the root frame --subprocesses adds


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class PySpy:
    """``py-spy record --pid PID --format raw`` (collapsed stacks) until :meth:`stop`."""

    #: also sample threads that wait (sleep, lock, fsync...): a wall-clock view
    idle: bool = False
    #: only the thread holding the GIL: what keeps a GIL-bound process at one core
    gil: bool = False

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def start(self) -> PySpy:
        exe = _py_spy()
        if exe is None:
            self.error = "py-spy not installed (pip install py-spy)"
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.out.with_suffix(".log"), "wb")  # noqa: SIM115 - closed with the process
        with log:
            self.proc = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--rate",
                    str(self.rate),
                    "--subprocesses",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "-o",
                    str(self.out),
                    *(["--idle"] if self.idle else []),
                    *(["--gil"] if self.gil else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def stop(self) -> None:
        """SIGINT (py-spy then writes its output), bounded waits, SIGKILL as a last resort."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def __enter__(self) -> PySpy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _frame(name: str) -> str:
    return _LINE.sub(")", name.strip())


def summarise(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self ("leaf") and inclusive sample shares per function from py-spy's collapsed stacks."""
    if not raw.is_file():
        return {"error": f"no profile written at {raw}"}
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f and not _PROCESS.match(f)]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for f in set(frames):
            incl_counts[f] += count

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * c / total, 1)) for name, c in counter.most_common(top)]

    return {
        "samples": total,
        "self_percent": share(self_counts),
        "inclusive_percent": share(incl_counts),
        "raw": str(raw),
    }
