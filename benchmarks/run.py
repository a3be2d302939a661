"""Benchmark dicom-adapter against its peers' own limits, in one command.

    .venv/bin/python benchmarks/run.py [--instances 500] [--big-mb 1024] [--runs 3] [--quick]
                                       [--only import|export] [--profile]

Prints progress and a table of medians; writes JSON to benchmarks/out/. See README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_VENV_PYTHON = HERE.parent / ".venv" / "bin" / "python"
if (
    _VENV_PYTHON.exists()
    and Path(sys.prefix).resolve() != _VENV_PYTHON.parent.parent.resolve()
    and not os.environ.get("BENCH_NO_REEXEC")
):
    # `python benchmarks/run.py` with another interpreter: use the project's venv instead.
    os.environ["BENCH_NO_REEXEC"] = "1"
    os.execv(str(_VENV_PYTHON), [str(_VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks.cloudbench import cloud_rows, cloud_verdicts  # noqa: E402
from benchmarks.data import Series, big_instance, ct_series  # noqa: E402
from benchmarks.exportbench import ExportBench  # noqa: E402
from benchmarks.importbench import ImportBench  # noqa: E402
from benchmarks.measure import Measurement, say  # noqa: E402
from benchmarks.procs import AdapterProcess  # noqa: E402
from benchmarks.profiling import PySpy  # noqa: E402

OUT = HERE / "out"
RATIO_TARGET = 0.9
RSS_TARGET_MB = 200.0


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    lines = [ln.strip() for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    return lines[0] if lines else "?"


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, memory, load, tool versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = next(int(ln.split()[1]) for ln in meminfo.splitlines() if ln.startswith("MemTotal"))

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 1024**2, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "dcmtk": _first_line(["/usr/bin/storescu", "--version"]).strip("$ "),
        "orthanc": _first_line(["/usr/sbin/Orthanc", "--version"]),
        "orthanc_dicomweb": _first_line(
            ["dpkg-query", "-W", "-f", "${Version}", "orthanc-dicomweb"]
        ),
        "pydicom": version("pydicom"),
        "pynetdicom": version("pynetdicom"),
        "requests": version("requests"),
        "git": _first_line(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"]),
        "tcp_nodelay": "TCP_NODELAY=1 in every dcmtk tool's environment (storescu, storescp)",
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[Measurement]) -> str:
    head = f"{'row':<16} {'N':>5} {'MB':>7} {'median s':>9} {'inst/s':>8} {'MB/s':>7}  what"
    lines = [head, "-" * len(head)]
    for m in rows:
        if m.error and not m.runs:
            lines.append(
                f"{m.key:<16} {m.instances:>5} {m.nbytes / 1e6:>7.1f} "
                f"{'n/a':>9} {'':>8} {'':>7}  {m.label} -- NOT RUN: {m.error}"
            )
            continue
        runs = ", ".join(f"{r.seconds:.2f}" for r in m.runs)
        lines.append(
            f"{m.key:<16} {m.instances:>5} {m.nbytes / 1e6:>7.1f} "
            f"{_fmt(m.median, 2):>9} {_fmt(m.per_second):>8} "
            f"{_fmt(m.mb_per_second):>7}  {m.label} [runs: {runs}]"
            + (f" (FAILED after {len(m.runs)} runs)" if m.error else "")
        )
    return "\n".join(lines)


def cpu_lines(rows: list[Measurement]) -> list[str]:
    """Cores kept busy during the measured span (CPU seconds / wall seconds, medians)."""
    out: list[str] = []
    for m in rows:
        if not m.median:
            continue
        parts = []
        for name in ("client", "scp", "adapter", "orthanc", "pacs", "emulator"):
            cpu = m.extra_median(f"{name}_cpu_s")
            if cpu is not None:
                parts.append(f"{name} {cpu / m.median:.2f}")
        adapter = m.extra_median("adapter_cpu_s")
        acked = m.extra_median("adapter_cpu_acked_s")
        if adapter is not None and m.instances:
            parts.append(
                f"adapter {adapter * 1000 / m.instances:.2f} ms CPU/instance"
                + (
                    f" ({acked * 1000 / m.instances:.2f} until all acked)"
                    if acked is not None
                    else ""
                )
            )
        if parts:
            out.append(f"{m.key:<16} cores busy: {', '.join(parts)}")
    return out


def _rate(rows: dict[str, Measurement], key: str) -> float | None:
    m = rows.get(key)
    return m.per_second if m is not None else None


def verdicts(rows: dict[str, Measurement]) -> list[str]:
    """The ratios and targets, in words."""
    out: list[str] = []
    a = _rate(rows, "a")
    b_rates = {k: m.per_second for k, m in rows.items() if k.startswith("b-") and m.per_second}
    if a or b_rates:
        b_key = max(b_rates, key=lambda k: b_rates[k]) if b_rates else None
        limit = min(x for x in (a, b_rates.get(b_key) if b_key else None) if x)
        out.append(
            f"import limit = min(a {_fmt(a)}, best b {_fmt(b_rates.get(b_key or ''))} "
            f"[{b_key}]) = {limit:.1f} instances/s"
        )
        for key in ("c-a1", "c-a8", "c-a8-p2"):
            c = _rate(rows, key)
            if c:
                ratio = c / limit
                met = "MET" if ratio >= RATIO_TARGET else "NOT MET"
                target = f" (target >= {RATIO_TARGET}: {met})" if key != "c-a1" else ""
                ack = rows[key].extra_median("ack_seconds")
                out.append(
                    f"ratio {key} / limit = {ratio:.2f}{target}; storescu all acked "
                    f"after {_fmt(ack, 2)} s (median)"
                )
    single, fan = _rate(rows, "c-a8"), _rate(rows, "c-a8-fan2")
    if single and fan:
        ratio = fan / single
        out.append(
            f"fan-out ratio c-a8-fan2 / c-a8 = {ratio:.2f} (two DICOMweb destinations "
            f"against one, same run; target >= 0.8: {'MET' if ratio >= 0.8 else 'NOT MET'})"
        )
        two, one = _rate(rows, "b-two-stores"), _rate(rows, "b-StowClient-c4")
        if two and one:
            out.append(
                f"  the stores' own fan-out cost: b-two-stores / b-StowClient-c4 = "
                f"{two / one:.2f}; c-a8-fan2 / b-two-stores = {fan / two:.2f}"
            )
    deid = _rate(rows, "c-a8-deid")
    if single and deid:
        ratio = deid / single
        out.append(
            f"de-identification ratio c-a8-deid / c-a8 = {ratio:.2f} (PS3.15 basic "
            f"profile on the default route, same run; target >= 0.8: "
            f"{'MET' if ratio >= 0.8 else 'NOT MET'})"
        )
    d = rows.get("d")
    if d is not None and d.runs:
        peak = d.extra_max("peak_rss_mb")
        verdict = "MET" if peak is not None and peak < RSS_TARGET_MB else "NOT MET"
        out.append(
            f"d: peak RSS (adapter + children, sampled every 20 ms) {_fmt(peak)} MB max "
            f"over runs, VmHWM {_fmt(d.extra_max('vmhwm_mb'))} MB, idle "
            f"{_fmt(d.extra_median('baseline_rss_mb'))} MB "
            f"(target < {RSS_TARGET_MB:.0f} MB: {verdict})"
        )
    hand, exp = _rate(rows, "e-hand"), _rate(rows, "e-adapter")
    if hand and exp:
        ratio = exp / hand
        out.append(
            f"export ratio exporter / by hand = {ratio:.2f} (target >= {RATIO_TARGET}: "
            f"{'MET' if ratio >= RATIO_TARGET else 'NOT MET'})"
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instances", type=int, help="CT instances in the series (default 500)")
    p.add_argument(
        "--big-mb", type=int, help="MiB of the multi-frame instance (default 1024; 0 skips row d)"
    )
    p.add_argument("--runs", type=int, help="runs per row; the table shows medians (default 3)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for development: 50 instances, 50 MiB, 1 run",
    )
    p.add_argument(
        "--only",
        choices=["import", "export", "cloud"],
        help="only one direction, or only the cloud-like rows (delay proxy)",
    )
    p.add_argument(
        "--rtt-ms",
        type=float,
        default=50.0,
        help="round trip the delay proxy adds to each STOW-RS (cloud rows; 0 skips)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the adapter during the first run of c-a8 and e-adapter",
    )
    p.add_argument(
        "--profile-idle",
        action="store_true",
        help="with --profile: sample waiting threads too (wall-clock view)",
    )
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL",
    )
    p.add_argument(
        "--pacs-serial",
        action="store_true",
        help="export to a storescp without --fork (one association at a time)",
    )
    p.add_argument("--workdir", type=Path, help="scratch dir (default: a new temp dir)")
    p.add_argument(
        "--adapter-log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="WARNING",
        help="the adapter's log level (logs: out/logs/)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.instances = args.instances or (50 if quick else 500)
    args.big_mb = args.big_mb if args.big_mb is not None else (50 if quick else 1024)
    args.runs = args.runs or (1 if quick else 3)
    if args.instances < 8 or args.runs < 1 or args.big_mb < 0:
        p.error("--instances >= 8, --runs >= 1, --big-mb >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now().astimezone()
    info = machine()
    say(
        f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, "
        f"load {info['loadavg_at_start']}; {info['dcmtk']}; {info['orthanc']}"
    )
    say(f"data: {args.instances} CT instances, {args.big_mb} MiB multi-frame; runs: {args.runs}")
    PySpy.idle = args.profile_idle
    PySpy.gil = args.profile_gil
    AdapterProcess.log_level = args.adapter_log_level
    AdapterProcess.logs_dir = OUT / "logs"
    cache = OUT / "data"
    series = ct_series(cache, args.instances)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dicom-adapter-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[Measurement] = []
    try:
        if args.only in (None, "import"):
            bench = ImportBench(
                workdir / "import", args.runs, profile_dir=OUT if args.profile else None
            )
            rows.append(bench.dcmtk_to_dcmtk(series))
            for variant in ("requests", "StowClient"):
                for concurrency in (1, 4):
                    rows.append(bench.stow_direct(series, variant, concurrency))
            rows.append(bench.bare_pynetdicom(series, 1))
            rows.append(bench.bare_pynetdicom(series, 8))
            rows.append(bench.through_adapter(series, 1))
            rows.append(bench.through_adapter(series, 8))
            rows.append(bench.through_adapter(series, 8, key="r-a8", unreachable=True))
            rows.append(bench.through_adapter(series, 8, processes=2))
            rows.append(bench.through_adapter(series, 8, fan_out=True))
            rows.append(bench.stow_two_stores(series))
            rows.append(bench.through_adapter(series, 8, deid=True))
            if args.big_mb:
                big = big_instance(cache, args.big_mb)
                single = Series(big.path.parent, [big])
                rows.append(bench.dcmtk_to_dcmtk(single, key="a-big"))
                rows.append(bench.stow_direct(single, "StowClient", 1, key="b-big"))
                rows.append(bench.big_instance_rss(big))
        if args.only in (None, "cloud") and args.rtt_ms > 0:
            bench = ImportBench(workdir / "cloud", args.runs)
            rows += cloud_rows(bench, series, args.rtt_ms / 1000)
        if args.only in (None, "export"):
            export = ExportBench(
                workdir / "export",
                args.runs,
                pacs_fork=not args.pacs_serial,
                profile_dir=OUT if args.profile else None,
            )
            peer = export.seed(series)
            try:
                rows.append(export.by_hand(series, peer))
                rows.append(export.exporter(series, peer))
            finally:
                peer.cleanup()
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    by_key = {m.key: m for m in rows}
    summary = verdicts(by_key) + cloud_verdicts(by_key)
    info["loadavg_at_end"] = os.getloadavg()
    print()
    print(
        f"dicom-adapter benchmarks, {started:%Y-%m-%d %H:%M %Z}; {info['nproc']} CPUs "
        f"{info['cpu_model']}, {info['memory_gib']} GiB; {info['dcmtk']}; {info['orthanc']} + "
        f"DICOMweb {info['orthanc_dicomweb']}; TCP_NODELAY=1 for dcmtk; medians of {args.runs}"
    )
    print(table(rows))
    for line in summary:
        print("  " + line)
    for line in cpu_lines(rows):
        print("  " + line)
    for m in rows:
        for r in m.runs:
            prof = r.extra.get("profile")
            if isinstance(prof, dict) and prof.get("self_percent"):
                print(f"\n  py-spy, {m.key} ({prof['samples']} samples), self time:")
                for name, pct in prof["self_percent"][:12]:
                    print(f"    {pct:5.1f}%  {name}")
    result = {
        "started": started.isoformat(),
        "machine": info,
        "parameters": {
            "instances": args.instances,
            "big_mb": args.big_mb,
            "runs": args.runs,
            "only": args.only,
            "stow_batch": 20,
            "rtt_ms": args.rtt_ms,
        },
        "rows": [m.as_json() for m in rows],
        "summary": summary + cpu_lines(rows),
    }
    path = OUT / f"results-{started:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    shutil.copyfile(path, OUT / "latest.json")
    print(f"\nJSON: {path}")
    return (
        1
        if any(
            m.error
            and not m.runs
            and "not written yet" not in m.error
            and "NotImplementedError" not in m.error
            for m in rows
        )
        else 0
    )


if __name__ == "__main__":
    sys.exit(main())
