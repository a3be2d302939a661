"""Export measurements: by hand (WADO-RS each instance to a file, then storescu to storescp)
vs dicom-adapter's exporter (Pub/Sub notification -> WADO-RS -> C-STORE), same instances."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
    StoreScp,
    cpu_seconds,
    free_port,
    fresh_dir,
    fresh_orthanc,
    own_cpu_seconds,
    poll,
    run_storescu_groups,
    stop_process,
)
from benchmarks.profiling import PySpy, summarise
from benchmarks.stow import stow_generator
from tests.peers.ports import is_listening
from tests.peers.wait import spawn, tail

__all__ = ["ExportBench", "exporter_available", "notification_path"]

EMULATOR = Path(
    os.environ.get(
        "PUBSUB_EMULATOR_BIN",
        "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    )
)
PROJECT = "bench-project"
HEALTHCARE_PREFIX = (
    f"projects/{PROJECT}/locations/us-central1/datasets/bench/dicomStores/orthanc/dicomWeb"
)
WORKERS = 16  # exporter.workers: messages handled at once (the config's default)
HAND_WADO = 8  # WADO-RS requests in flight by hand: its best here (16 was slower)
POOL = 4  # exporter.destination.pool_size: associations to the PACS (the config's default)
IDLE_WINDOW = 2.0  # seconds of CPU sampling after an export, associations still pooled
_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def exporter_available() -> str | None:
    root = Path(__file__).resolve().parent.parent
    wanted = ("exporter/notification.py", "exporter/subscriber.py", "adapter/delivery.py")
    missing = [p for p in wanted if not (root / p).exists()]
    if missing:
        return f"exporter not written yet ({', '.join(missing)} missing)"
    if "raise NotImplementedError" in (root / "exporter/plugin.py").read_text():
        return "exporter.plugin.ExporterPlugin.build still raises NotImplementedError"
    return None


def notification_path(i: Instance) -> str:
    """A Cloud Healthcare API DICOM notification's data: the instance's resource name."""
    return (
        f"{HEALTHCARE_PREFIX}/studies/{i.study_uid}/series/{i.series_uid}"
        f"/instances/{i.sop_instance_uid}"
    )


def wado_to_file(session: requests.Session, dicomweb: str, i: Instance, out: Path) -> int:
    """WADO-RS RetrieveInstance (PS3.18 10.4) into ``out``; returns the bytes written."""
    url = f"{dicomweb}/studies/{i.study_uid}/series/{i.series_uid}/instances/{i.sop_instance_uid}"
    r = session.get(url, headers={"Accept": _ACCEPT}, timeout=(10, 300))
    r.raise_for_status()
    ctype = r.headers.get("Content-Type", "")
    boundary = next(
        (
            p.split("=", 1)[1].strip().strip('"')
            for p in ctype.split(";")
            if p.strip().lower().startswith("boundary=")
        ),
        None,
    )
    if boundary is None:
        raise RuntimeError(f"WADO-RS answer is not multipart: {ctype}")
    body = r.content
    delimiter = b"--" + boundary.encode()
    start = body.index(delimiter)
    start = body.index(b"\r\n\r\n", start) + 4
    end = body.index(b"\r\n" + delimiter, start)
    out.write_bytes(body[start:end])
    return end - start


@dataclass
class PubSubEmulator:
    """The Pub/Sub emulator (Java; slow to start) on 127.0.0.1, stopped by its PID."""

    workdir: Path
    startup_timeout: float = 120.0

    def __post_init__(self) -> None:
        self.port = 0
        self.proc: Any = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> PubSubEmulator:
        if not EMULATOR.exists():
            raise RuntimeError(f"Pub/Sub emulator not found at {EMULATOR}")
        self.port = free_port()
        log = self.workdir / "pubsub-emulator.log"
        self.proc = spawn([str(EMULATOR), f"--host={LOOPBACK}", f"--port={self.port}"], log)
        say(f"waiting for the Pub/Sub emulator on {self.host} (up to {self.startup_timeout:.0f}s)")
        deadline = time.monotonic() + self.startup_timeout
        while not is_listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Pub/Sub emulator did not start: {tail(log)}")
            time.sleep(0.25)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)

    def cpu_seconds(self) -> float:
        """The emulator's CPU seconds so far (the JVM and anything it started)."""
        return cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    @contextmanager
    def environment(self) -> Iterator[None]:
        """PUBSUB_EMULATOR_HOST for our clients (and the adapter, which inherits os.environ)."""
        old = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = self.host
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = old


@dataclass
class ExportBench:
    """Export rows; ``pacs_fork`` False models a PACS serving one association at a time."""

    workdir: Path
    runs: int
    pacs_fork: bool = True
    profile_dir: Path | None = None

    def _tmp(self, name: str) -> Path:
        return fresh_dir(self.workdir / name)

    @property
    def _pacs(self) -> str:
        return "storescp --fork" if self.pacs_fork else "storescp (1 association at a time)"

    def seed(self, series: Series) -> OrthancPeer:
        """An Orthanc holding the series (the source both export paths read)."""
        peer = fresh_orthanc(self._tmp("orthanc-export"))
        try:
            stored = stow_generator(peer.dicomweb_url, series.instances, 20, 4)
            if stored != len(series.instances) or peer.instance_count() != stored:
                raise RuntimeError(f"seeding Orthanc: {stored} stored")
        except BaseException:
            peer.cleanup()
            raise
        return peer

    def by_hand(self, series: Series, peer: OrthancPeer) -> Measurement:
        n = len(series.instances)
        scp = StoreScp(self._tmp("scp-hand"), fork=self.pacs_fork)
        files = self._tmp("wado-files")

        def once(_i: int) -> Timed:
            scp.clear()
            for p in files.iterdir():
                p.unlink()
            assert peer.pid is not None
            cpu0 = (own_cpu_seconds(), cpu_seconds(peer.pid), scp.cpu_seconds())
            t0 = time.monotonic()
            with requests.Session() as session, ThreadPoolExecutor(HAND_WADO) as pool:
                paths = [files / f"{k:05d}.dcm" for k in range(n)]
                list(
                    pool.map(
                        lambda a: wado_to_file(session, peer.dicomweb_url, *a),
                        zip(series.instances, paths, strict=True),
                    )
                )
            fetched = time.monotonic()
            ok = run_storescu_groups(
                scp.port, [paths[k::POOL] for k in range(POOL)], scp.aet, timeout=120 + n
            )
            poll(lambda: scp.received() >= n, 60, f"{n} files in storescp")
            elapsed = time.monotonic() - t0
            if ok != n:
                raise RuntimeError(f"storescu: {ok} of {n} acknowledged")
            return Timed(
                elapsed,
                {
                    "wado_seconds": fetched - t0,
                    "client_cpu_s": own_cpu_seconds() - cpu0[0],
                    "orthanc_cpu_s": cpu_seconds(peer.pid) - cpu0[1],
                    "pacs_cpu_s": scp.cpu_seconds() - cpu0[2],
                },
            )

        try:
            scp.start()
            return measure(
                "e-hand",
                f"by hand: WADO-RS x{HAND_WADO} to files, then storescu x{POOL} -> {self._pacs}",
                n,
                series.total_bytes,
                self.runs,
                once,
            )
        finally:
            scp.stop()

    def exporter(self, series: Series, peer: OrthancPeer) -> Measurement:
        n = len(series.instances)
        label = (
            f"Pub/Sub -> dicom-adapter exporter (workers {WORKERS}, pool {POOL}) -> {self._pacs}"
        )
        why_not = exporter_available()
        if why_not:
            return Measurement("e-adapter", label, n, series.total_bytes, error=why_not)
        from google.cloud import pubsub_v1

        emulator = PubSubEmulator(self._tmp("pubsub"))
        scp = StoreScp(self._tmp("scp-export"), fork=self.pacs_fork)

        def once(i: int) -> Timed:
            scp.clear()
            publisher = pubsub_v1.PublisherClient()
            subscriber = pubsub_v1.SubscriberClient()
            run_id = f"{i}-{uuid.uuid4().hex[:8]}"
            topic = publisher.topic_path(PROJECT, f"dicom-{run_id}")
            sub_name = f"export-{run_id}"
            subscription = subscriber.subscription_path(PROJECT, sub_name)
            publisher.create_topic(name=topic, timeout=30)
            subscriber.create_subscription(
                name=subscription, topic=topic, ack_deadline_seconds=60, timeout=30
            )
            tmp = self._tmp(f"exporter-{i}")
            adapter: AdapterProcess | None = None
            spy: PySpy | None = None
            try:
                adapter = AdapterProcess(
                    tmp,
                    {
                        "site": "bench",
                        "log": {"format": "json", "level": "WARNING"},
                        "health": {"enabled": True, "bind": LOOPBACK, "port": free_port()},
                        "dicomweb": {"url": peer.dicomweb_url, "auth": {"kind": "none"}},
                        "state_dir": str(tmp / "state"),
                        "exporter": {
                            "pubsub": {"project": PROJECT, "subscription": sub_name},
                            "destination": {
                                "kind": "dimse",
                                "ae_title": scp.aet,
                                "host": LOOPBACK,
                                "port": scp.port,
                                "pool_size": POOL,
                            },
                            "state_dir": str(tmp / "export"),
                            "workers": WORKERS,
                        },
                    },
                    dimse_port=None,
                    name=f"adapter-e-{i}",
                ).start()
                if self.profile_dir is not None and i == 0:
                    spy = PySpy(adapter.pid, self.profile_dir / "profile-e-adapter.txt").start()
                assert peer.pid is not None
                idle0 = cpu_seconds(adapter.pid)
                time.sleep(IDLE_WINDOW)  # subscribed, no association open yet
                idle_before = (cpu_seconds(adapter.pid) - idle0) / IDLE_WINDOW
                cpu0 = (
                    cpu_seconds(adapter.pid),
                    cpu_seconds(peer.pid),
                    scp.cpu_seconds(),
                    emulator.cpu_seconds(),
                )
                t0 = time.monotonic()
                futures = [
                    publisher.publish(topic, notification_path(x).encode(), action="create")
                    for x in series.instances
                ]
                for f in futures:
                    f.result(timeout=60)
                published = time.monotonic()
                first: list[float] = []

                def all_there() -> bool:
                    count = scp.received()
                    if count and not first:
                        first.append(time.monotonic())
                    return count >= n

                poll(all_there, 120 + n, f"{n} files exported to storescp")
                extra: dict[str, Any] = {
                    "publish_seconds": published - t0,
                    "first_file_seconds": first[0] - t0 if first else None,
                }
                elapsed = time.monotonic() - t0
                extra["adapter_cpu_s"] = cpu_seconds(adapter.pid) - cpu0[0]
                extra["orthanc_cpu_s"] = cpu_seconds(peer.pid) - cpu0[1]
                extra["pacs_cpu_s"] = scp.cpu_seconds() - cpu0[2]
                extra["emulator_cpu_s"] = emulator.cpu_seconds() - cpu0[3]
                # Nothing left to do, pooled associations still open: what does idling cost?
                idle0 = cpu_seconds(adapter.pid)
                time.sleep(IDLE_WINDOW)
                extra["adapter_idle_cores_pool_open"] = (
                    cpu_seconds(adapter.pid) - idle0
                ) / IDLE_WINDOW
                extra["adapter_idle_cores_before"] = idle_before
                if spy is not None:
                    spy.stop()
                    extra["profile"] = summarise(spy.out)
                return Timed(elapsed, extra)
            finally:
                if spy is not None:
                    spy.stop()
                if adapter is not None:
                    adapter.stop()
                subscriber.delete_subscription(subscription=subscription, timeout=30)
                publisher.delete_topic(topic=topic, timeout=30)
                publisher.stop()
                subscriber.close()
                shutil.rmtree(tmp, ignore_errors=True)

        try:
            emulator.start()
            scp.start()
            with emulator.environment():
                return measure("e-adapter", label, n, series.total_bytes, self.runs, once)
        finally:
            scp.stop()
            emulator.stop()
