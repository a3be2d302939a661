"""Rows for a cloud-like store: Orthanc behind ``delay_proxy`` (``rtt`` added per request).

- ``b-cloud-c8``: StowClient, 20 per request, 8 in flight: the store's own limit through it;
- ``b-cloud-1x1``: 1 instance per request, 1 in flight: 1/RTT, what one waiting sender gets;
- ``j-a1``, ``j-a8``: the Java adapter's shape (``sync_stow_scp.py``: each C-STORE answered
  after a synchronous STOW-RS of that one instance), 1 and 8 associations;
- ``cs-a1``/``cs-a8`` (ack after-spool) and ``cu-a1``/``cu-a8`` (ack after-upload): storescu
  -> dicom-adapter -> proxy -> Orthanc, until QIDO finds all.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.data import Series
from benchmarks.importbench import ImportBench, _groups, wait_queryable
from benchmarks.measure import Measurement, Timed, measure
from benchmarks.procs import (
    ProxyProcess,
    cpu_seconds,
    free_port,
    fresh_orthanc,
    poll,
    run_storescu_groups,
)
from tests.peers.ports import is_listening
from tests.peers.wait import describe_exit, spawn, stop_process, tail

__all__ = ["cloud_rows", "cloud_verdicts"]


def sync_stow(bench: ImportBench, series: Series, associations: int, rtt: float) -> Measurement:
    """storescu x ``associations`` -> sync_stow_scp -> proxy -> Orthanc (storescu start ->
    every storescu exited: each acknowledgement came after its instance's STOW)."""
    n = len(series.instances)
    key = f"j-a{associations}"
    label = (
        f"storescu x{associations} -> 1 sync STOW per C-STORE (Java shape) -> "
        f"+{rtt * 1000:.0f} ms proxy -> Orthanc"
    )
    groups = _groups(series.paths, associations)

    def once(i: int) -> Timed:
        tmp = bench._tmp(f"{key}-{i}")
        peer = fresh_orthanc(tmp / "orthanc")
        proxy = ProxyProcess(peer.dicomweb_url, rtt, tmp / "proxy.log").start()
        port = free_port()
        proc = spawn(
            [sys.executable, "-m", "benchmarks.sync_stow_scp", str(port), proxy.url],
            tmp / "scp.log",
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            poll(lambda: is_listening(port) or describe_exit(proc), 30, "sync STOW SCP")
            if proc.poll() is not None:
                raise RuntimeError(f"sync_stow_scp exited: {tail(tmp / 'scp.log')}")
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.monotonic()
            ok = run_storescu_groups(port, groups, "SYNCSTOW", timeout=120 + 2 * n)
            elapsed = time.monotonic() - t0
            if ok != n:
                raise RuntimeError(f"storescu: {ok} of {n} acknowledged")
            wait_queryable(peer, series, timeout=60)  # acknowledged = stored: already there
            return Timed(elapsed, {"scp_cpu_s": cpu_seconds(proc.pid) - cpu0})
        finally:
            stop_process(proc, timeout=10)
            proxy.stop()
            peer.cleanup()

    return measure(key, label, n, series.total_bytes, bench.runs, once)


def cloud_rows(bench: ImportBench, series: Series, rtt: float) -> list[Measurement]:
    rows = [
        bench.stow_direct(series, "StowClient", 8, key="b-cloud-c8", rtt=rtt),
        bench.stow_direct(series, "StowClient", 1, key="b-cloud-1x1", rtt=rtt, batch=1),
        sync_stow(bench, series, 1, rtt),
        sync_stow(bench, series, 8, rtt),
    ]
    for ack, short in (("after-spool", "cs"), ("after-upload", "cu")):
        for assoc in (1, 8):
            rows.append(
                bench.through_adapter(series, assoc, ack=ack, rtt=rtt, key=f"{short}-a{assoc}")
            )
    return rows


def cloud_verdicts(rows: dict[str, Measurement]) -> list[str]:
    """Ratios against the store's limit through the proxy and against 1/RTT."""

    def rate(key: str) -> float | None:
        m = rows.get(key)
        return m.per_second if m is not None else None

    out: list[str] = []
    limit, one = rate("b-cloud-c8"), rate("b-cloud-1x1")
    if limit:
        out.append(f"cloud limit b-cloud-c8 = {limit:.1f}/s; 1/RTT b-cloud-1x1 = {one or 0:.1f}/s")
        for key, target in (
            ("j-a1", None),
            ("j-a8", None),
            ("cs-a1", None),
            ("cs-a8", None),
            ("cu-a1", None),
            ("cu-a8", 0.8),
        ):
            r = rate(key)
            if not r:
                continue
            ratio = r / limit
            verdict = (
                f" (target >= {target}: {'MET' if ratio >= target else 'NOT MET'})"
                if target
                else ""
            )
            line = f"ratio {key} / b-cloud-c8 = {ratio:.2f}{verdict}"
            if key in ("j-a8", "cu-a8") and one:  # one C-STORE at a time per association
                ceiling = min(limit, 8 * one)
                line += (
                    f"; / min(b-cloud-c8, 8 x b-cloud-1x1 = {8 * one:.0f}) = "
                    f"{r / ceiling:.2f} (8 synchronous senders cannot beat 8 / RTT)"
                )
            if key.endswith("-a1") and one:
                r1 = r / one
                goal = " (target >= 0.9: " + ("MET" if r1 >= 0.9 else "NOT MET") + ")"
                line += f"; / b-cloud-1x1 = {r1:.2f}{goal if key == 'cu-a1' else ''}"
            out.append(line)
    return out
