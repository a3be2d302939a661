"""Import measurements: (a) dcmtk -> dcmtk, (b) STOW-RS straight into Orthanc, (c) storescu ->
dicom-adapter -> Orthanc until queryable, (d) the adapter's peak RSS with one big instance."""

from __future__ import annotations

import hashlib
import resource
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from benchmarks.data import Instance, Series
from benchmarks.measure import Measurement, Timed, measure, say
from benchmarks.procs import (
    LOOPBACK,
    AdapterProcess,
    OrthancPeer,
    ProxyProcess,
    RssSampler,
    StoreScp,
    cpu_seconds,
    free_port,
    fresh_dir,
    fresh_orthanc,
    own_cpu_seconds,
    pin_tasks,
    poll,
    run_storescu,
    run_storescu_groups,
)
from benchmarks.profiling import PySpy, summarise
from benchmarks.stow import STOW_VARIANTS, stow_client_available
from tests.peers.ports import is_listening
from tests.peers.wait import describe_exit, spawn, stop_process, tail

__all__ = ["ImportBench", "importer_available"]

ADAPTER_AET = "IMPORTADAPTER"
BATCH = 20


def importer_available() -> str | None:
    """None if the importer plugin builds services, else why it cannot run yet."""
    root = Path(__file__).resolve().parent.parent
    wanted = ("adapter/delivery.py", "importer/store_scp.py")
    missing = [p for p in wanted if not (root / p).exists()]
    if missing:
        return f"importer not written yet ({', '.join(missing)} missing)"
    if "raise NotImplementedError" in (root / "importer/plugin.py").read_text():
        return "importer.plugin.ImporterPlugin.build still raises NotImplementedError"
    return None


def qido_instances(dicomweb: str, study: str, series: str) -> int:
    """How many instances QIDO-RS finds in the series."""
    r = requests.get(
        f"{dicomweb}/studies/{study}/series/{series}/instances",
        params={"includefield": "00080018"},
        headers={"Accept": "application/dicom+json"},
        timeout=30,
    )
    if r.status_code == 204 or not r.content.strip():
        return 0
    r.raise_for_status()
    return len(r.json())


def java_uid(uid: str) -> str:
    """The de-identified UID (the Java adapter's rule: 2.25. + the name-based UUID)."""
    b = bytearray(hashlib.md5(uid.encode()).digest())
    b[6], b[8] = (b[6] & 0x0F) | 0x30, (b[8] & 0x3F) | 0x80
    return f"2.25.{int.from_bytes(b, 'big')}"


def wait_queryable(peer: OrthancPeer, series: Series, timeout: float, deid: bool = False) -> float:
    """Poll Orthanc's /statistics every 10 ms until it counts every instance, then check that
    QIDO finds them all; returns the monotonic time at which the count was first complete (the
    QIDO query itself, 50-100 ms for 300 instances, is not the adapter's time; ``deid``: look
    them up under their de-identified UIDs)."""
    expected = len(series.instances)
    study, series_uid = series.study_uid, series.series_uid
    if deid:
        study, series_uid = java_uid(study), java_uid(series_uid)
    counted: list[float] = []
    seen = {"count": 0, "qido": 0}

    def done() -> float:  # 0.0 = not yet
        seen["count"] = peer.instance_count()
        if seen["count"] < expected:
            return 0.0
        counted.append(time.monotonic())
        seen["qido"] = qido_instances(peer.dicomweb_url, study, series_uid)
        return counted[0] if seen["qido"] >= expected else 0.0

    try:
        return poll(done, timeout, f"{expected} instances queryable in Orthanc", interval=0.01)
    except TimeoutError as exc:
        raise TimeoutError(
            f"{exc} (Orthanc counted {seen['count']}, QIDO found {seen['qido']})"
        ) from None


def _children_cpu_seconds() -> float:
    """User + system CPU of this process's waited-for children (the storescu senders)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _groups(paths: list[Path], n: int) -> list[list[Path]]:
    return [paths[i::n] for i in range(n)]


@dataclass
class ImportBench:
    """Owns a work dir; every measurement starts its peers fresh and stops them in finally."""

    workdir: Path
    runs: int
    profile_dir: Path | None = None
    store_cpus: set[int] | None = None  # pin the stores (Orthanc) there: their own cores
    store_root: Path | None = None  # the stores' storage there (e.g. a tmpfs): their own disk

    def _store(self, workdir: Path) -> OrthancPeer:
        """A fresh Orthanc, placed on its own CPUs and storage when the bench says so."""
        if self.store_root is not None:
            workdir = fresh_dir(self.store_root / f"{workdir.parent.name}-{workdir.name}")
        peer = fresh_orthanc(workdir)
        if self.store_cpus is not None and peer.pid is not None:
            pin_tasks(peer.pid, self.store_cpus)
        return peer

    def _drop_store(self, peer: OrthancPeer) -> None:
        peer.cleanup()
        if self.store_root is not None:
            shutil.rmtree(peer.workdir, ignore_errors=True)

    def _tmp(self, name: str) -> Path:
        return fresh_dir(self.workdir / name)

    # ---------------------------------------------------------------- (a)
    def dcmtk_to_dcmtk(self, series: Series, key: str = "a") -> Measurement:
        scp = StoreScp(self._tmp(f"scp-ignore-{key}"), ignore=True)
        n = len(series.instances)
        mb = series.total_bytes / 1e6

        def once(_i: int) -> Timed:
            t0 = time.monotonic()
            ok = run_storescu(scp.port, series.paths, scp.aet, timeout=60 + n + mb)
            elapsed = time.monotonic() - t0
            if ok != n:
                raise RuntimeError(f"storescu: {ok} of {n} acknowledged")
            return Timed(elapsed)

        try:
            scp.start()
            return measure(
                key,
                "storescu -> storescp --ignore (1 assoc)",
                n,
                series.total_bytes,
                self.runs,
                once,
            )
        finally:
            scp.stop()

    # ---------------------------------------------------------------- (p)
    def bare_pynetdicom(self, series: Series, associations: int) -> Measurement:
        """storescu -> a pynetdicom SCP that answers Success without spooling (bare_scp.py)."""
        n = len(series.instances)
        key = f"p-a{associations}"
        tmp = self._tmp(key)
        port = free_port()
        proc = spawn(
            [sys.executable, "-m", "benchmarks.bare_scp", str(port)],
            tmp / "bare_scp.log",
            cwd=Path(__file__).resolve().parent.parent,
        )
        groups = _groups(series.paths, associations)

        def once(_i: int) -> Timed:
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.monotonic()
            ok = run_storescu_groups(port, groups, "BARESCP", timeout=120 + n)
            elapsed = time.monotonic() - t0
            if ok != n:
                raise RuntimeError(f"storescu: {ok} of {n} acknowledged")
            return Timed(elapsed, {"scp_cpu_s": cpu_seconds(proc.pid) - cpu0})

        try:
            poll(lambda: is_listening(port) or describe_exit(proc), 30, "bare pynetdicom SCP")
            if proc.poll() is not None:
                raise RuntimeError(f"bare_scp exited: {tail(tmp / 'bare_scp.log')}")
            return measure(
                key,
                f"storescu x{associations} -> bare pynetdicom SCP (no spool)",
                n,
                series.total_bytes,
                self.runs,
                once,
            )
        except Exception as exc:  # a setup failure is a failed row, not a crash
            return Measurement(key, "bare pynetdicom SCP", n, series.total_bytes, error=str(exc))
        finally:
            stop_process(proc, timeout=10)

    # ---------------------------------------------------------------- (b)
    def stow_direct(
        self,
        series: Series,
        variant: str,
        concurrency: int,
        key: str | None = None,
        rtt: float | None = None,
        batch: int = BATCH,
    ) -> Measurement:
        """``rtt``: through a DelayProxy adding that round trip to every request."""
        n = len(series.instances)
        key = key or f"b-{variant}-c{concurrency}"
        label = (
            f"STOW-RS -> {'+' + format(rtt * 1000, '.0f') + ' ms proxy -> ' if rtt else ''}"
            f"Orthanc, {variant}, batch {min(batch, n)}, concurrency {concurrency}"
        )
        why_not = stow_client_available() if variant == "StowClient" else None
        if why_not:
            return Measurement(key, label, n, series.total_bytes, error=why_not)
        post = STOW_VARIANTS[variant]

        def once(i: int) -> Timed:
            tmp = self._tmp(f"orthanc-{key}-{i}")
            peer = self._store(tmp)
            proxy: ProxyProcess | None = None
            try:
                url = peer.dicomweb_url
                if rtt is not None:
                    proxy = ProxyProcess(url, rtt, tmp / "proxy.log").start()
                    url = proxy.url
                assert peer.pid is not None
                cpu0, own0 = cpu_seconds(peer.pid), own_cpu_seconds()
                t0 = time.monotonic()
                stored = post(url, series.instances, batch, concurrency)
                elapsed = time.monotonic() - t0
                cpu = {
                    "orthanc_cpu_s": cpu_seconds(peer.pid) - cpu0,
                    "client_cpu_s": own_cpu_seconds() - own0,
                }
                count = peer.instance_count()
                if stored != n or count != n:
                    raise RuntimeError(
                        f"{stored} stored by the answers, {count} in Orthanc, expected {n}"
                    )
                return Timed(elapsed, cpu)
            finally:
                if proxy is not None:
                    proxy.stop()
                self._drop_store(peer)

        return measure(key, label, n, series.total_bytes, self.runs, once)

    def stow_two_stores(self, series: Series, concurrency: int = 4) -> Measurement:
        """The fan-out row's own limit: StowClient into two Orthancs at once (each with
        ``concurrency`` requests in flight), on the same cores as everything else."""
        n = len(series.instances)
        key = "b-two-stores"
        label = (
            f"STOW-RS -> 2 Orthancs at once, StowClient, batch {min(BATCH, n)}, "
            f"concurrency {concurrency} each"
        )
        why_not = stow_client_available()
        if why_not:
            return Measurement(key, label, n, series.total_bytes, error=why_not)
        post = STOW_VARIANTS["StowClient"]

        def once(i: int) -> Timed:
            peers = [fresh_orthanc(self._tmp(f"orthanc-{key}-{i}-{j}")) for j in range(2)]
            try:
                stored: list[int] = []
                threads = [
                    threading.Thread(
                        target=lambda url=p.dicomweb_url: stored.append(
                            post(url, series.instances, BATCH, concurrency)
                        )
                    )
                    for p in peers
                ]
                t0 = time.monotonic()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.monotonic() - t0
                if stored != [n, n]:
                    raise RuntimeError(f"stored {stored}, expected {n} in each")
                return Timed(elapsed, {})
            finally:
                for p in peers:
                    p.cleanup()

        return measure(key, label, n, series.total_bytes, self.runs, once)

    # ---------------------------------------------------------------- (c), (d)
    def _adapter(
        self,
        workdir: Path,
        peer: OrthancPeer,
        workers: int,
        processes: int = 1,
        second: OrthancPeer | None = None,
        ack: str = "after-spool",
        url: str | None = None,
        deid: bool = False,
    ) -> AdapterProcess:
        """The importer as the brief's site YAML describes it, on free ports; ``processes`` >
        1: that many receiving processes (importer.dimse.processes); ``second``: fan every
        instance out to that store too (a second DICOMweb destination with its own outbox);
        ``deid``: the default route de-identifies (PS3.15 basic profile) before upload."""
        dimse_port = free_port()
        dimse: dict[str, Any] = {"ae_title": ADAPTER_AET, "bind": LOOPBACK, "port": dimse_port}
        if processes > 1:
            dimse["processes"] = processes
        config: dict[str, Any] = {
            "site": "bench",
            "log": {"format": "json", "level": "WARNING"},
            "health": {"enabled": True, "bind": LOOPBACK, "port": free_port()},
            "dicomweb": {"url": url or peer.dicomweb_url, "auth": {"kind": "none"}},
            "state_dir": str(workdir / "state"),
            "importer": {
                "dimse": dimse,
                "ack": ack,
                "spool": {"path": str(workdir / "spool")},
                "upload": {"workers": workers, "batch_max_instances": BATCH},
            },
        }
        if second is not None:
            config["destinations"] = {
                "second": {
                    "kind": "dicomweb",
                    "url": second.dicomweb_url,
                    "auth": {"kind": "none"},
                    "delivery": {"workers": workers, "batch_max_instances": BATCH},
                }
            }
            config["importer"]["routing"] = {"default": ["store", "second"]}
        if deid:
            config["stages"] = {"research": {"kind": "deidentify"}}
            config["importer"]["routing"] = {"default_stages": ["research"]}
        return AdapterProcess(
            workdir / "adapter", config, dimse_port=dimse_port, name=f"adapter-{workdir.name}"
        ).start()

    def through_adapter(
        self,
        series: Series,
        associations: int,
        workers: int = 4,
        processes: int = 1,
        fan_out: bool = False,
        ack: str = "after-spool",
        rtt: float | None = None,
        key: str | None = None,
        unreachable: bool = False,
        deid: bool = False,
    ) -> Measurement:
        """``rtt``: the store behind a DelayProxy adding that round trip; ``unreachable``:
        the store accepts connections and never reads (receive, make durable and route only:
        timed until storescu has every acknowledgement)."""
        n = len(series.instances)
        default_key = f"c-a{associations}" + (f"-p{processes}" if processes > 1 else "")
        key = key or default_key
        label = f"storescu x{associations} -> dicom-adapter -> Orthanc, until QIDO finds all"
        if ack != "after-spool" or rtt is not None:
            label = (
                f"storescu x{associations} -> dicom-adapter ({ack}) -> "
                f"{'+' + format(rtt * 1000, '.0f') + ' ms proxy -> ' if rtt else ''}"
                "Orthanc, until QIDO finds all"
            )
        if unreachable:
            label = (
                f"storescu x{associations} -> dicom-adapter, store never answers: "
                "receive only, until all acked"
            )
        if processes > 1:
            label += f" ({processes} receiving processes)"
        if fan_out:
            key += "-fan2"
            label = (
                f"storescu x{associations} -> dicom-adapter -> 2 Orthancs (fan-out), "
                "until QIDO finds all in both"
            )
        if deid:
            key += "-deid"
            label = (
                f"storescu x{associations} -> dicom-adapter (de-identify, PS3.15 basic "
                "profile) -> Orthanc, until QIDO finds all"
            )
        why_not = importer_available()
        if why_not:
            return Measurement(key, label, n, series.total_bytes, error=why_not)
        groups = _groups(series.paths, associations)

        def once(i: int) -> Timed:
            tmp = self._tmp(f"{key}-{i}")
            say(f"{key}: starting Orthanc and dicom-adapter")
            peer = self._store(tmp / "orthanc")
            second = self._store(tmp / "orthanc2") if fan_out else None
            adapter: AdapterProcess | None = None
            spy: PySpy | None = None
            proxy: ProxyProcess | None = None
            hole: socket.socket | None = None
            try:
                url = None
                if unreachable:  # accepts connections, never reads: uploads hang, cost nothing
                    hole = socket.create_server((LOOPBACK, 0), backlog=64)
                    url = f"http://{LOOPBACK}:{hole.getsockname()[1]}/dicom-web"
                if rtt is not None:
                    proxy = ProxyProcess(peer.dicomweb_url, rtt, tmp / "proxy.log").start()
                    url = proxy.url
                adapter = self._adapter(
                    tmp, peer, workers, processes, second, ack=ack, url=url, deid=deid
                )
                say(f"{key}: sending {n} instances over {associations} association(s)")
                if self.profile_dir is not None and i == 0:
                    spy = PySpy(adapter.pid, self.profile_dir / f"profile-{key}.txt").start()
                assert peer.pid is not None
                cpu0 = (cpu_seconds(adapter.pid), cpu_seconds(peer.pid))
                senders0 = _children_cpu_seconds()
                t0 = time.monotonic()
                ok = run_storescu_groups(
                    adapter.dimse_port or 0, groups, ADAPTER_AET, timeout=120 + n
                )
                acked = time.monotonic()
                sender_cpu = _children_cpu_seconds() - senders0
                if ok != n:
                    raise RuntimeError(
                        f"storescu: {ok} of {n} acknowledged; adapter log: {adapter.log_tail()}"
                    )
                cpu_acked = cpu_seconds(adapter.pid) - cpu0[0]
                if unreachable:
                    return Timed(
                        acked - t0,
                        {
                            "ack_seconds": acked - t0,
                            "adapter_cpu_s": cpu_acked,
                            "adapter_cpu_acked_s": cpu_acked,
                        },
                    )
                done = wait_queryable(peer, series, timeout=120 + n, deid=deid)
                if second is not None:
                    done = max(done, wait_queryable(second, series, timeout=120 + n))
                extra: dict[str, Any] = {
                    "ack_seconds": acked - t0,
                    "adapter_cpu_acked_s": cpu_acked,
                    "adapter_cpu_s": cpu_seconds(adapter.pid) - cpu0[0],
                    "orthanc_cpu_s": cpu_seconds(peer.pid) - cpu0[1],
                    "storescu_cpu_s": sender_cpu,
                }
                if spy is not None:
                    spy.stop()
                    extra["profile"] = summarise(spy.out)
                return Timed(done - t0, extra)
            finally:
                say(f"{key}: stopping peers")
                if spy is not None:
                    spy.stop()
                if adapter is not None:
                    adapter.stop()
                if proxy is not None:
                    proxy.stop()
                if hole is not None:
                    hole.close()
                self._drop_store(peer)
                if second is not None:
                    self._drop_store(second)
                shutil.rmtree(tmp, ignore_errors=True)

        return measure(key, label, n, series.total_bytes, self.runs, once)

    def big_instance_rss(self, big: Instance) -> Measurement:
        mb = big.size / 1e6
        key = "d"
        label = f"1 instance of {mb:.0f} MB through dicom-adapter: peak RSS"
        why_not = importer_available()
        if why_not:
            return Measurement(key, label, 1, big.size, error=why_not)
        single = Series(big.path.parent, [big])

        def once(i: int) -> Timed:
            tmp = self._tmp(f"d-{i}")
            peer = fresh_orthanc(tmp / "orthanc")
            adapter: AdapterProcess | None = None
            try:
                adapter = self._adapter(tmp, peer, workers=4)
                assert peer.pid is not None
                cpu0 = (cpu_seconds(adapter.pid), cpu_seconds(peer.pid))
                with RssSampler(adapter.pid) as rss:
                    t0 = time.monotonic()
                    ok = run_storescu(
                        adapter.dimse_port or 0, [big.path], ADAPTER_AET, timeout=120 + mb
                    )
                    acked = time.monotonic()
                    if ok != 1:
                        raise RuntimeError(f"storescu: not acknowledged; {adapter.log_tail()}")
                    done = wait_queryable(peer, single, timeout=120 + mb)
                kib = 1024 / 1e6  # KiB -> MB
                return Timed(
                    done - t0,
                    {
                        "ack_seconds": acked - t0,
                        "adapter_cpu_s": cpu_seconds(adapter.pid) - cpu0[0],
                        "orthanc_cpu_s": cpu_seconds(peer.pid) - cpu0[1],
                        "baseline_rss_mb": rss.baseline_kib * kib,
                        "peak_rss_mb": rss.peak_rss_kib * kib,
                        "vmhwm_mb": rss.hwm_kib * kib,
                        "rss_samples": rss.samples,
                    },
                )
            finally:
                if adapter is not None:
                    adapter.stop()
                peer.cleanup()
                shutil.rmtree(tmp, ignore_errors=True)

        say(f"d: {big.path} ({mb:.0f} MB)")
        return measure(key, label, 1, big.size, self.runs, once)
