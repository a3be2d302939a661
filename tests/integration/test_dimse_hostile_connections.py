"""Connections that never finish their association (issue #14), on both acceptor paths: floods
of half A-ASSOCIATE-RQs, half TLS ClientHellos, drip-feeders, half-open connections and an
announced 2 GB A-ASSOCIATE-RQ cost no association slot, bounded threads and CPU, and are closed
within the ARTIM deadline (PS3.8 9.1.5, adapter/dimse/establishment.py); real dcmtk peers are
served meanwhile. Raw sockets for the floods; the adapter is a subprocess, as deployed.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from adapter.dimse.pdu import encode_associate_rq
from tests.peers import dcmtk
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import LOOPBACK
from tests.peers.tls import self_signed

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
ARTIM = 4.0  # acse_timeout of these adapters: the deadline from accept to a whole RQ
SLACK = 2.5  # the gate's one-second select tick, a loaded 2-core machine
CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"


def site(url: str, **dimse: Any) -> dict[str, Any]:
    return {
        "dicomweb": {"url": url, "auth": {"kind": "none"}},
        "retry": {"max_attempts": 0, "initial_delay": 0.1, "max_delay": 0.5},
        "importer": {
            "dimse": {"ae_title": AET, "acse_timeout": ARTIM, "max_associations": 4, **dimse}
        },
    }


@pytest.fixture(scope="module", params=[True, False], ids=["native", "pynetdicom-only"])
def adapter(
    request: pytest.FixtureRequest, orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    config = site(orthanc.dicomweb_url, native_storage=request.param)
    proc = AdapterProcess(config, tmp_path_factory.mktemp("hostile"), name="hostile").start()
    try:
        yield proc
    finally:
        proc.terminate()


# ------------------------------------------------------------------ measuring the adapter
def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS: line")


def a_rq(calling: str = "FLOODSCU", *, abstract: str = VERIFICATION) -> bytes:
    return encode_associate_rq(
        AET,
        calling,
        [(1, abstract, (IMPLICIT,))],
        max_pdu_length=16384,
        implementation_class_uid="1.2.3.4",
        implementation_version_name="RAW",
    )


def open_connections(port: int, count: int, first_bytes: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection((LOOPBACK, port), timeout=5)
        if first_bytes:
            sock.sendall(first_bytes)
        socks.append(sock)
    return socks


def close_times(socks: list[socket.socket], started: float, timeout: float) -> list[float]:
    """Seconds from ``started`` until each socket saw the adapter close it (EOF or reset)."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed: dict[socket.socket, float] = {}
    deadline = time.monotonic() + timeout
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed[sock] = time.monotonic() - started
                selector.unregister(sock)
    selector.close()
    for sock in socks:
        sock.close()
    assert len(closed) == len(socks), f"{len(socks) - len(closed)} still open after {timeout}s"
    return sorted(closed.values())


# ------------------------------------------------------------------ floods
def test_200_half_associate_rqs_hold_no_slot_threads_or_cpu_and_close_at_artim(
    adapter: AdapterProcess,
) -> None:
    pid = adapter.pid
    assert pid is not None
    before = threads(pid)
    started = time.monotonic()
    socks = open_connections(adapter.port, 200, a_rq()[:40])
    cpu_start, t0 = cpu_seconds(pid), time.monotonic()
    found = dcmtk.findscu(adapter.port, {"StudyInstanceUID": generate_uid()}, called_aet=AET)
    echo = dcmtk.echoscu(adapter.port, called_aet=AET)
    held_threads = threads(pid)
    time.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))  # a measuring window, not a wait
    cores = (cpu_seconds(pid) - cpu_start) / (time.monotonic() - t0)
    times = close_times(socks, started, ARTIM + 10)
    assert found.ok, found.output
    assert echo.ok, echo.output
    assert held_threads <= before + 6, f"{before} threads before, {held_threads} with 200 held"
    assert cores < 0.6, f"{cores:.2f} cores busy while holding 200 connections"
    assert times[0] >= ARTIM - 0.5 and times[-1] <= ARTIM + SLACK, (times[0], times[-1])
    print(f"threads {before} -> {held_threads}; {cores:.2f} cores; closed by {times[-1]:.1f}s")


def test_drip_fed_associate_rqs_are_closed_at_artim(adapter: AdapterProcess) -> None:
    rq = a_rq("DRIPSCU")
    socks = open_connections(adapter.port, 20, rq[:1])
    started = time.monotonic()
    sent = 1
    while time.monotonic() - started < ARTIM + 0.5:  # a byte each half second, never the whole
        time.sleep(0.5)  # the drip's pace, the behaviour under test
        sent += 1
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(rq[sent - 1 : sent])
    assert dcmtk.echoscu(adapter.port, called_aet=AET).ok
    times = close_times(socks, started, SLACK + 5)
    assert times[-1] <= ARTIM + SLACK, times[-1]


def test_a_half_associate_rq_then_fin_is_closed_at_once(adapter: AdapterProcess) -> None:
    socks = open_connections(adapter.port, 5, a_rq()[:30])
    started = time.monotonic()
    for sock in socks:
        sock.shutdown(socket.SHUT_WR)
    times = close_times(socks, started, 5)
    assert times[-1] < 1.5, times


def test_an_associate_rq_announcing_2_gb_is_aborted_before_any_memory_is_spent(
    adapter: AdapterProcess,
) -> None:
    pid = adapter.pid
    assert pid is not None
    rss = rss_kib(pid)
    socks = []
    for _ in range(4):
        sock = socket.create_connection((LOOPBACK, adapter.port), timeout=5)
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0x7FFFFFF0))
        with pytest.raises((BlockingIOError, OSError)):
            while True:  # send until the adapter stops reading and closes
                sock.sendall(bytes(1 << 20))
        socks.append(sock)
    for sock in socks:
        sock.close()
    assert rss_kib(pid) < rss + 32 * 1024, f"RSS {rss} KiB -> {rss_kib(pid)} KiB"
    # the A-ABORT itself, on a connection that stops after the header
    with socket.create_connection((LOOPBACK, adapter.port), timeout=5) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0x7FFFFFF0))
        abort = sock.recv(10, socket.MSG_WAITALL)
    assert abort[0] == 0x07 and (abort[8], abort[9]) == (2, 6), abort.hex()
    adapter.wait_for_log(r"A-ASSOCIATE-RQ of 2147483632 bytes, over the 262144-byte bound")


# ------------------------------------------------------------------ TLS
def test_40_half_tls_client_hellos_hold_no_slot_and_close_at_the_deadline(
    orthanc: OrthancPeer, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    tls = {"enabled": True, "cert_file": str(cert), "key_file": str(key)}
    config = site(orthanc.dicomweb_url, tls=tls)
    with AdapterProcess(config, tmp_path, name="tls") as proc:
        pid = proc.pid
        assert pid is not None
        before = threads(pid)
        hello = bytes.fromhex("160301020001") + bytes(40)  # a record header, then too little
        started = time.monotonic()
        socks = open_connections(proc.port, 40, hello)
        echo = dcmtk.echoscu(proc.port, called_aet=AET, extra_args=["+tla", "-ic"])
        held = threads(pid)
        times = close_times(socks, started, ARTIM + 10)
        assert echo.ok, echo.output
        assert held <= before + 6, (before, held)
        assert times[-1] <= ARTIM + SLACK, times[-1]
        assert "no complete TLS handshake within 4s" in proc.log_text()
