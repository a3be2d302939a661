"""Interleaved A/B of two installed adapters in one process: the same benchmark code and data,
rounds alternating which goes first, medians of the rates and of the adapter's CPU per instance.
On a shared machine this is the fair way to compare a change (sequential runs drift with load).

    python benchmarks/ab.py --a /tmp/base-venv/bin/dicom-adapter --b .venv/bin/dicom-adapter \\
        [--rounds 3] [--instances 300] [--rows b4,c-a8,r-a8,cs-a8,cu-a8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import benchmarks.procs as procs  # noqa: E402
from benchmarks.data import Series, ct_series  # noqa: E402
from benchmarks.importbench import ImportBench  # noqa: E402
from benchmarks.measure import Measurement  # noqa: E402

RTT = 0.05


def rows(bench: ImportBench, series: Series) -> dict[str, Callable[[], Measurement]]:
    return {
        "b4": lambda: bench.stow_direct(series, "StowClient", 4),
        "c-a1": lambda: bench.through_adapter(series, 1),
        "c-a8": lambda: bench.through_adapter(series, 8),
        "r-a8": lambda: bench.through_adapter(series, 8, key="r-a8", unreachable=True),
        "cs-a1": lambda: bench.through_adapter(series, 1, rtt=RTT, key="cs-a1"),
        "cs-a8": lambda: bench.through_adapter(series, 8, rtt=RTT, key="cs-a8"),
        "cu-a1": lambda: bench.through_adapter(series, 1, ack="after-upload", rtt=RTT, key="cu-a1"),
        "cu-a8": lambda: bench.through_adapter(series, 8, ack="after-upload", rtt=RTT, key="cu-a8"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--a", type=Path, required=True, help="the first dicom-adapter executable")
    p.add_argument("--b", type=Path, required=True, help="the second dicom-adapter executable")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--instances", type=int, default=300)
    p.add_argument("--rows", default="b4,c-a8,r-a8,cs-a8,cu-a8")
    args = p.parse_args(argv)
    series = ct_series(HERE / "out" / "data", args.instances)
    n = len(series.instances)
    results: dict[tuple[str, str], list[tuple[float, float | None, float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="dicom-adapter-ab-") as tmp:
        bench = ImportBench(Path(tmp), 1)
        table = rows(bench, series)
        keys = args.rows.split(",")
        for rnd in range(args.rounds):
            for name in ("a", "b") if rnd % 2 == 0 else ("b", "a"):
                procs.ADAPTER_BIN = getattr(args, name)
                for key in keys:
                    if key.startswith("b") and name == "b":
                        continue  # no adapter in it
                    m = table[key]()
                    if not m.runs:
                        print(f"{key} ({name}) FAILED: {m.error}", flush=True)
                        continue
                    r = m.runs[0]
                    cpu, acked = r.extra.get("adapter_cpu_s"), r.extra.get("adapter_cpu_acked_s")
                    results.setdefault((key, name), []).append(
                        (
                            n / r.seconds,
                            cpu * 1000 / n if cpu is not None else None,
                            acked * 1000 / n if acked is not None else None,
                        )
                    )
    print(f"\nA = {args.a}\nB = {args.b}\n{args.rounds} rounds, {n} CT, load {os.getloadavg()}")
    for (key, name), values in sorted(results.items()):
        rates = [v[0] for v in values]
        cpus = [v[1] for v in values if v[1] is not None]
        acks = [v[2] for v in values if v[2] is not None]
        cpu = f"; CPU {statistics.median(cpus):.2f} ms/instance" if cpus else ""
        ack = f" ({statistics.median(acks):.2f} until acked)" if acks else ""
        print(
            f"{key:7} {name.upper()}: {statistics.median(rates):7.1f}/s "
            f"[{', '.join(f'{x:.0f}' for x in rates)}]{cpu}{ack}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
