"""Where the CPU goes on a two-core box: STOW-RS straight into Orthanc (b-StowClient-c4) and
storescu x8 -> dicom-adapter -> Orthanc (c-a8), alternating, with each party's CPU seconds.

    python benchmarks/cpu_account.py [--instances 1000] [--rounds 2] [--pause 32]

``--pause``: seconds to wait before each row. On a journal-less ext4 (this project's VMs) every
new inode skips the inodes freed in the last 30 s, so a row right after the previous row's
clean-up (thousands of files deleted) pays for it; 32 s lets that window pass.
When every party is CPU-bound on the same cores, c-a8 / b is about the ratio of the CPU seconds
each needs (b: Orthanc + client; c-a8: Orthanc + adapter + storescu): this prints both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks.data import ct_series  # noqa: E402
from benchmarks.importbench import ImportBench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pause", type=float, default=32.0)
    args = p.parse_args(argv)
    series = ct_series(HERE / "out" / "data", args.instances)
    n = len(series.instances)
    rows: dict[str, list[tuple[float, float, float]]] = {"b": [], "c-a8": []}
    with tempfile.TemporaryDirectory(prefix="dicom-adapter-cpu-") as tmp:
        bench = ImportBench(Path(tmp), 1)
        for _ in range(args.rounds):
            time.sleep(args.pause)
            b = bench.stow_direct(series, "StowClient", 4)
            time.sleep(args.pause)
            c = bench.through_adapter(series, 8)
            if not (b.runs and c.runs):
                print(f"FAILED: {b.error or c.error}")
                return 1
            bx, cx = b.runs[0].extra, c.runs[0].extra
            rows["b"].append((n / b.runs[0].seconds, bx["orthanc_cpu_s"], bx["client_cpu_s"]))
            others = cx["adapter_cpu_s"] + cx["storescu_cpu_s"]
            rows["c-a8"].append((n / c.runs[0].seconds, cx["orthanc_cpu_s"], others))
            print(
                f"b {rows['b'][-1][0]:.0f}/s (Orthanc {bx['orthanc_cpu_s']:.2f} s, client "
                f"{bx['client_cpu_s']:.2f} s) | c-a8 {rows['c-a8'][-1][0]:.0f}/s (Orthanc "
                f"{cx['orthanc_cpu_s']:.2f} s, adapter {cx['adapter_cpu_s']:.2f} s, storescu "
                f"{cx['storescu_cpu_s']:.2f} s)",
                flush=True,
            )
    med = {k: [statistics.median(col) for col in zip(*v, strict=True)] for k, v in rows.items()}
    cpu_b, cpu_c = med["b"][1] + med["b"][2], med["c-a8"][1] + med["c-a8"][2]
    print(f"\n{n} CT, {args.rounds} rounds, pause {args.pause:g} s (medians)")
    print(f"  c-a8 / b rate: {med['c-a8'][0] / med['b'][0]:.2f}")
    print(f"  CPU s b / c-a8: {cpu_b:.2f} / {cpu_c:.2f} = {cpu_b / cpu_c:.2f}")
    print(f"  adapter CPU per instance: {1000 * med['c-a8'][2] / n:.2f} ms incl. storescu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
