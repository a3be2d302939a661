"""Where the CPU goes on a two-core box: STOW-RS straight into Orthanc (b-StowClient-c4) and
storescu x8 -> dicom-adapter -> Orthanc (c-a8), alternating, with each party's CPU seconds.

    python benchmarks/cpu_account.py [--instances 1000] [--rounds 2] [--pause 32] [--store-cpus 1]

``--pause``: seconds to wait before each row. On a journal-less ext4 (this project's VMs) every
new inode skips the inodes freed in the last 30 s, so a row right after the previous row's
clean-up (thousands of files deleted) pays for it; 32 s lets that window pass.
When every party is CPU-bound on the same cores, c-a8 / b is about the ratio of the CPU seconds
each needs (b: Orthanc + client; c-a8: Orthanc + adapter + storescu): this prints both.

``--store-dir /dev/shm``: Orthanc's storage on a filesystem of its own (a tmpfs), so that its
file creation does not share the spool's disk.
``--store-cpus 1``: Orthanc's threads on CPU 1 only, this process and what it starts (the STOW-RS
client, dicom-adapter, storescu) on the other CPUs: the store's CPU is its own, as a remote
store's is in production, and the same in both rows; the ratio then shows whether the adapter
keeps the store as busy as a bare client does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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
    p.add_argument("--store-cpus", default="", help="e.g. 1 or 1,2: Orthanc's CPUs")
    p.add_argument("--store-dir", type=Path, help="Orthanc's storage here, e.g. /dev/shm")
    args = p.parse_args(argv)
    store_cpus = {int(c) for c in args.store_cpus.split(",") if c.strip()} or None
    if store_cpus is not None:
        others = os.sched_getaffinity(0) - store_cpus
        if not others:
            p.error(f"--store-cpus {args.store_cpus} leaves no CPU for the adapter side")
        os.sched_setaffinity(0, others)  # children (adapter, storescu, Orthanc) inherit it
    series = ct_series(HERE / "out" / "data", args.instances)
    n = len(series.instances)
    rows: dict[str, list[tuple[float, float, float]]] = {"b": [], "c-a8": []}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dicom-adapter-cpu-"))
        store_root = None
        if args.store_dir is not None:
            store_root = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.store_dir)))
        bench = ImportBench(Path(tmp), 1, store_cpus=store_cpus, store_root=store_root)
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
    where = f", Orthanc on CPU {args.store_cpus}" if store_cpus else ""
    where += f", Orthanc's storage in {args.store_dir}" if args.store_dir else ""
    print(f"\n{n} CT, {args.rounds} rounds, pause {args.pause:g} s{where} (medians)")
    print(f"  c-a8 / b rate: {med['c-a8'][0] / med['b'][0]:.2f}")
    print(f"  CPU s b / c-a8: {cpu_b:.2f} / {cpu_c:.2f} = {cpu_b / cpu_c:.2f}")
    print(f"  adapter CPU per instance: {1000 * med['c-a8'][2] / n:.2f} ms incl. storescu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
