"""Transcoding figures: JPEG 2000 lossless instances/s and CPU seconds per instance through the
transcode stage (its worker processes), and the memory a very large multi-frame instance costs
(peak RSS, VmHWM, of the parent and of each worker).

    python -m benchmarks.transcodebench rate --instances 100          # 512x512 CT -> J2K
    python -m benchmarks.transcodebench rss --mb 1024                 # 1 GiB multi-frame
    python -m benchmarks.transcodebench rss --mb 256 --json           # what the CI test runs

Runs in a fresh process so VmHWM is the transcoding's own. Scratch files go to --workdir (a
temporary folder by default, removed afterwards; generated inputs are cached there when given).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests.peers makes the inputs
    sys.path.insert(0, str(REPO))


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _codec_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pydicom", "pylibjpeg", "pylibjpeg-openjpeg", "pyjpegls", "pylibjpeg-rle"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def rss(workdir: Path, mb: int, target: str, workers: int) -> dict[str, Any]:
    """One ``mb`` MiB multi-frame (512x512, 16-bit) transcoded to ``target``."""
    from adapter.stages.transcoder import TranscodeOptions, Transcoder
    from tests.peers.datasets import make_multiframe

    cache = workdir / f"mf-{mb}MiB"
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("mf-*.dcm"))
    src = found[0] if found else make_multiframe(cache, mb << 20)
    out = workdir / "out.dcm"
    transcoder = Transcoder(workers).acquire()
    try:
        pids = transcoder.worker_pids()
        cpu0 = sum(_cpu(p) for p in pids) + _cpu(os.getpid())
        t0 = time.monotonic()
        meta = transcoder.transcode(src, out, TranscodeOptions(target))
        wall = time.monotonic() - t0
        cpu = sum(_cpu(p) for p in pids) + _cpu(os.getpid()) - cpu0
        workers_kib = [_status_kib(p, "VmHWM") for p in pids]
    finally:
        transcoder.release()
    result = {
        "row": "transcode-rss",
        "target": target,
        "source_bytes": src.stat().st_size,
        "output_bytes": out.stat().st_size,
        "transfer_syntax": meta.transfer_syntax_uid,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "parent_vmhwm_mib": round(_status_kib(os.getpid(), "VmHWM") / 1024, 1),
        "worker_vmhwm_mib": [round(k / 1024, 1) for k in workers_kib],
        "workers": workers,
        "codecs": _codec_versions(),
    }
    result["sampled_frames_equal"] = _same_frames(src, out)
    out.unlink()
    return result


def _same_frames(src: Path, out: Path) -> bool:
    """The first, middle and last frames decode equal (read one at a time, outside the
    measured span)."""
    import numpy as np
    from pydicom import dcmread
    from pydicom.pixels.utils import iter_pixels

    frames = int(dcmread(src, stop_before_pixels=True).get("NumberOfFrames", 1))
    indices = sorted({0, frames // 2, frames - 1})
    pairs = zip(iter_pixels(src, indices=indices), iter_pixels(out, indices=indices), strict=True)
    return all(np.array_equal(a, b) for a, b in pairs)


def rate(workdir: Path, instances: int, target: str, workers: int, threads: int) -> dict[str, Any]:
    """``instances`` CT instances (512x512, 12 of 16 bits) through the transcode stage from
    ``threads`` threads (the importer routes from 2)."""
    from adapter.pipeline.instance import Instance
    from adapter.spool_files import read_spool_meta
    from adapter.stages.transcode import TranscodeStage
    from adapter.stages.transcode_config import TranscodeStageConfig
    from tests.peers.datasets import make_ct_series

    cache = workdir / f"ct-{instances}"
    paths = sorted(cache.glob("*.dcm")) if cache.exists() else []
    if len(paths) != instances:
        shutil.rmtree(cache, ignore_errors=True)
        paths = make_ct_series(cache, instances)
    items = [Instance(p, read_spool_meta(p)) for p in paths]
    out_dir = workdir / "rate-out"
    out_dir.mkdir(exist_ok=True)
    cfg = TranscodeStageConfig(transfer_syntax=target, workers=workers)
    stage = TranscodeStage("bench", cfg)
    sizes: list[int] = []
    lock = threading.Lock()

    def one(instance: Instance) -> None:
        result = stage.process(instance, out_dir)
        assert isinstance(result, Instance) and result.path != instance.path
        with lock:
            sizes.append(result.path.stat().st_size)
        result.path.unlink()

    try:
        pids = stage.transcoder.worker_pids()
        cpu0 = sum(_cpu(p) for p in pids) + _cpu(os.getpid())
        t0 = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, items))
        wall = time.monotonic() - t0
        cpu = sum(_cpu(p) for p in pids) + _cpu(os.getpid()) - cpu0
    finally:
        stage.close()
    source = sum(p.stat().st_size for p in paths)
    return {
        "row": "transcode-rate",
        "target": target,
        "instances": instances,
        "instances_per_s": round(instances / wall, 1),
        "cpu_s_per_instance": round(cpu / instances, 4),
        "wall_s": round(wall, 2),
        "compression_ratio": round(source / sum(sizes), 2),
        "workers": workers,
        "threads": threads,
        "load_average": os.getloadavg(),
        "codecs": _codec_versions(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["rate", "rss"])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--target", default="1.2.840.10008.1.2.4.90")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON line only")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="transcodebench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.what == "rss":
            result = rss(workdir, args.mb, args.target, args.workers)
        else:
            result = rate(workdir, args.instances, args.target, args.workers, args.threads)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
