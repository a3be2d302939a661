"""Peer processes for the benchmarks: dcmtk storescp/storescu, Orthanc, dicom-adapter, and a
/proc-based RSS sampler. Every process is started here and stopped by its own PID, every wait
has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.peers.orthanc import OrthancPeer  # noqa: E402
from tests.peers.ports import LOOPBACK, free_port, is_listening  # noqa: E402
from tests.peers.wait import describe_exit, spawn, stop_process, tail, wait_until  # noqa: E402

__all__ = [
    "LOOPBACK",
    "AdapterProcess",
    "OrthancPeer",
    "ProxyProcess",
    "RssSampler",
    "StoreScp",
    "cpu_seconds",
    "dcmtk_env",
    "free_port",
    "fresh_orthanc",
    "own_cpu_seconds",
    "poll",
    "run_storescu",
    "run_storescu_groups",
    "stop_process",
]

T = TypeVar("T")
DCMTK_BIN = Path(os.environ.get("DCMTK_BIN_DIR", "/usr/bin"))
ADAPTER_BIN = Path(sys.executable).parent / "dicom-adapter"
_STORE_OK = re.compile(r"Received Store Response \((?:Success|Warning)")


def dcmtk_env() -> dict[str, str]:
    """Our environment plus TCP_NODELAY=1: without it dcmtk stalls ~40 ms per DIMSE message
    on loopback (Nagle + delayed ACK, see /work/shared/PERFORMANCE-NOTES.md)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def poll(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """``predicate()`` every ``interval`` s until truthy; TimeoutError after ``timeout`` s."""
    return wait_until(predicate, timeout=timeout, interval=interval, what=what)


# ------------------------------------------------------------------------------------ dcmtk
@dataclass
class StoreScp:
    """dcmtk ``storescp`` on 127.0.0.1: ``--ignore`` (receive, store nothing) or into a dir.

    Without ``fork`` storescp serves one association at a time (others wait unanswered in the
    listen backlog); with ``fork`` (``--fork``) one child process per association, like a PACS
    that accepts concurrent associations. Children share storescp's process group.
    """

    workdir: Path
    ignore: bool = False
    fork: bool = False
    aet: str = "STORESCP"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def output_dir(self) -> Path:
        return self.workdir / "received"

    def cpu_seconds(self) -> float:
        """storescp's CPU seconds so far, its live and its finished (--fork) children's included."""
        return cpu_seconds(self.proc.pid, reaped=True) if self.proc is not None else 0.0

    def start(self) -> StoreScp:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self.port = free_port()
            cmd = [str(DCMTK_BIN / "storescp"), "-aet", self.aet, "+xa", "-dhl"]
            if self.fork:
                cmd.append("--fork")
            if self.ignore:
                cmd.append("--ignore")
            else:
                cmd += ["-od", str(self.output_dir), "+B", "-fe", ".dcm"]
            cmd.append(str(self.port))
            self.proc = spawn(cmd, self.workdir / "storescp.log", env=dcmtk_env())
            with contextlib.suppress(TimeoutError):
                wait_until(
                    lambda: is_listening(self.port) or describe_exit(self.proc),
                    timeout=15,
                    interval=0.05,
                    what=f"storescp on {self.port}",
                )
                if self.proc.poll() is None:
                    return self
            stop_process(self.proc, timeout=2)
        raise RuntimeError(f"storescp did not start: {tail(self.workdir / 'storescp.log')}")

    def received(self) -> int:
        """Files completely written so far (storescp writes to the final name when done)."""
        with os.scandir(self.output_dir) as it:
            return sum(1 for e in it if e.name.endswith(".dcm"))

    def clear(self) -> None:
        for p in self.output_dir.iterdir():
            p.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        pid = self.proc.pid
        stop_process(self.proc, timeout=5)
        if self.fork:  # association children left behind: the group we created, by its id
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)


def _storescu_cmd(port: int, files: Sequence[Path], called: str) -> list[str]:
    return [
        str(DCMTK_BIN / "storescu"),
        "-v",
        "-aet",
        "BENCHSCU",
        "-aec",
        called,
        "-to",
        "60",
        LOOPBACK,
        str(port),
        *map(str, files),
    ]


def run_storescu_groups(
    port: int, groups: Sequence[Sequence[Path]], called: str, timeout: float
) -> int:
    """One ``storescu`` process (one association) per group, all at once; returns the number of
    instances acknowledged with Success or Warning. Raises if any exits non-zero."""
    with tempfile.TemporaryDirectory(prefix="bench-scu-") as tmp:
        procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        try:
            for i, group in enumerate(g for g in groups if g):
                log = Path(tmp) / f"scu{i}.log"
                with open(log, "wb") as out:
                    procs.append(
                        (
                            subprocess.Popen(
                                _storescu_cmd(port, group, called),
                                stdout=out,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env=dcmtk_env(),
                            ),
                            log,
                        )
                    )
            deadline = time.monotonic() + timeout
            ok = 0
            for proc, log in procs:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                text = log.read_text(errors="replace")
                if code != 0:
                    raise RuntimeError(f"storescu exited {code}: {text[-2000:]}")
                ok += len(_STORE_OK.findall(text))
            return ok
        finally:
            for proc, _log in procs:
                stop_process(proc, timeout=2)


def run_storescu(port: int, files: Sequence[Path], called: str, timeout: float) -> int:
    return run_storescu_groups(port, [files], called, timeout)


# ------------------------------------------------------------------------------------ Orthanc
def fresh_dir(path: Path) -> Path:
    """``path`` as a new empty directory (whatever an earlier run left there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def fresh_orthanc(workdir: Path) -> OrthancPeer:
    """A new Orthanc with empty storage (the clean state for one measurement)."""
    peer = OrthancPeer(
        workdir,
        aet="BENCHORTHANC",
        overwrite_instances=True,
        extra_config={"MaximumStorageCacheSize": 128, "HttpRequestTimeout": 600},
        startup_timeout=60,
    )
    return peer.start()


# ------------------------------------------------------------------------------------ proxy
class ProxyProcess:
    """``benchmarks/delay_proxy.py`` as its own process (its CPU is not the benchmark's nor
    the adapter's): ``upstream`` with ``rtt`` seconds added to every HTTP round trip."""

    def __init__(self, upstream: str, rtt: float, log: Path) -> None:
        self.upstream, self.rtt, self.log = upstream, rtt, log
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        from urllib.parse import urlsplit

        return f"http://{LOOPBACK}:{self.port}{urlsplit(self.upstream).path}"

    def start(self) -> ProxyProcess:
        for _attempt in range(3):
            self.port = free_port()
            self.proc = spawn(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.delay_proxy",
                    self.upstream,
                    "--port",
                    str(self.port),
                    "--rtt-ms",
                    str(self.rtt * 1000),
                ],
                self.log,
                cwd=REPO,
            )
            with contextlib.suppress(TimeoutError):
                wait_until(
                    lambda: is_listening(self.port) or describe_exit(self.proc),
                    timeout=15,
                    interval=0.05,
                    what=f"delay proxy on {self.port}",
                )
                if self.proc.poll() is None:
                    return self
            stop_process(self.proc, timeout=2)
        raise RuntimeError(f"delay proxy did not start: {tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=5)


# ------------------------------------------------------------------------------------ RSS
def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 1000:
        p = todo.pop()
        with contextlib.suppress(OSError), os.scandir(f"/proc/{p}/task") as tasks:
            for t in tasks:
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{t.name}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                    out += kids
                    todo += kids
    return out


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in keys:
                values[name] = int(rest.split()[0])
    return values


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU seconds of a live process and its live descendants (/proc/PID/stat);
    ``reaped``: also what its children that have ended and been waited for used (a forking
    server's finished associations)."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
            if reaped:
                total += int(fields[13]) + int(fields[14])  # cutime, cstime (16 and 17)
    return total / _CLK_TCK


def pin_tasks(pid: int, cpus: set[int]) -> None:
    """Restrict every thread of ``pid`` and of its descendants to ``cpus`` (threads they start
    later inherit it)."""
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError), os.scandir(f"/proc/{p}/task") as tasks:
            for t in tasks:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(t.name), cpus)


def own_cpu_seconds() -> float:
    """This process's user + system CPU seconds (all threads)."""
    t = os.times()
    return t.user + t.system


class RssSampler:
    """Samples VmRSS of a process and its descendants (summed) and its VmHWM from /proc."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss_kib = 0
        self.hwm_kib = 0
        self.samples = 0
        self.baseline_kib = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def current(self) -> int:
        return sum(
            _status_kib(p, ("VmRSS",)).get("VmRSS", 0) for p in [self.pid, *_descendants(self.pid)]
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss_kib = max(self.peak_rss_kib, self.current())
            self.hwm_kib = max(self.hwm_kib, _status_kib(self.pid, ("VmHWM",)).get("VmHWM", 0))
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.hwm_kib = max(self.hwm_kib, _status_kib(self.pid, ("VmHWM",)).get("VmHWM", 0))


# ------------------------------------------------------------------------------------ adapter
class AdapterProcess:
    """``dicom-adapter run --config site.yaml`` as a subprocess (the way operators run it).

    ``log_level`` overrides the config's (run.py --adapter-log-level); with ``logs_dir`` set,
    the adapter's log is copied there as ``<name>.log`` when it stops.
    """

    log_level: str | None = None
    logs_dir: Path | None = None

    def __init__(
        self,
        workdir: Path,
        config: Mapping[str, Any],
        *,
        dimse_port: int | None,
        name: str,
        ready_timeout: float = 60.0,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.config = dict(config)
        if self.log_level:
            self.config["log"] = {**self.config.get("log", {}), "level": self.log_level}
        self.dimse_port = dimse_port
        self.ready_timeout = ready_timeout
        self.health_port = int(self.config["health"]["port"])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "adapter.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> AdapterProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "site.yaml"
        cfg_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        if not ADAPTER_BIN.exists():
            raise RuntimeError(f"{ADAPTER_BIN} missing: pip install -e . into the venv")
        self.proc = spawn(
            [str(ADAPTER_BIN), "run", "--config", str(cfg_path)],
            self.log_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

        def ready() -> bool:
            if describe_exit(self.proc):
                raise RuntimeError(f"dicom-adapter exited: {tail(self.log_path, 3000)}")
            if self.dimse_port is not None and not is_listening(self.dimse_port):
                return False
            r = requests.get(f"http://{LOOPBACK}:{self.health_port}/readyz", timeout=2)
            return r.status_code == 200

        try:
            deadline = time.monotonic() + self.ready_timeout
            while not _try(ready):
                if describe_exit(self.proc):
                    raise RuntimeError(f"dicom-adapter exited: {tail(self.log_path, 3000)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"dicom-adapter not ready after {self.ready_timeout:.0f}s:"
                        f" {tail(self.log_path, 3000)}"
                    )
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, timeout=20)
        if self.logs_dir is not None and self.log_path.exists():
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.log_path, self.logs_dir / f"{self.name}.log")

    def log_tail(self) -> str:
        return tail(self.log_path, 3000)


def _try(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except (OSError, requests.RequestException):
        return False
