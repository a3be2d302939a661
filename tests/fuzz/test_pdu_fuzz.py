"""PDU fuzzing of the running importer with Orthanc behind it (issue #14 item 6, the PDU half).

Every case is one conversation on a raw socket (tests/fuzz/pdus.py: A-ASSOCIATE-RQ, a C-STORE
in fragments, a C-ECHO, an A-RELEASE-RQ) with one PDU mutated; the valid PDUs before it wait
for their answers, from the mutated one on every answer gets a short deadline, after which the
rest is sent, the socket half-closed and drained until the adapter closes (or the case's
deadline passes), then closed. On three paths: the native storage acceptor, pynetdicom
(``native_storage: false``) and pynetdicom over TLS. Afterwards the checks of
tests/fuzz/checks.py, and: everything the store gained was acknowledged, reads with pydicom and
has valid UIDs.

``DICOM_ADAPTER_FUZZ_PDU_COUNT`` (cases per path, default 150) and
``DICOM_ADAPTER_FUZZ_PDU_SEED`` (default 14) make long runs:
``DICOM_ADAPTER_FUZZ_PDU_COUNT=10000 pytest tests/fuzz/test_pdu_fuzz.py``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from adapter.dimse.command_set import decode_elements, decode_response
from tests.fuzz.checks import (
    check_after,
    check_new_instances,
    check_resources,
    orthanc_instance_ids,
    resources,
    spool_empty,
)
from tests.fuzz.pdus import KINDS, Conversation, make_conversation
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import LOOPBACK
from tests.peers.tls import self_signed
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
COUNT = int(os.environ.get("DICOM_ADAPTER_FUZZ_PDU_COUNT", "150"))
SEED = int(os.environ.get("DICOM_ADAPTER_FUZZ_PDU_SEED", "14"))
SUCCESS = {0x0000, 0xB000, 0xB006, 0xB007}
VALID_WAIT = 10.0  # an answer to a valid PDU before the mutated one
MUTATED_WAIT = 0.5  # an answer from the mutated PDU on
ACSE_TIMEOUT = 5  # the adapter's ARTIM deadline in these runs
# The whole case, once half-closed: an adapter that sent an A-ABORT may keep the connection until
# its ARTIM timer expires (PS3.8 9.2.3, AA-8 then Sta13: the peer is to close first), so the
# deadline is ARTIM plus a margin for a loaded machine (the long run saw 1 in 10,000 cross 5 s).
CASE_DEADLINE = ACSE_TIMEOUT + 3.0
TLS_ECHO = ("+tla", "-ic")


class Peer:
    """The adapter under test and how to reach it."""

    def __init__(self, proc: AdapterProcess, tls: ssl.SSLContext | None) -> None:
        self.proc, self.tls = proc, tls

    def connect(self) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, self.proc.port), timeout=VALID_WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            return self.tls.wrap_socket(sock)
        return sock

    @property
    def echo_args(self) -> tuple[str, ...]:
        return TLS_ECHO if self.tls is not None else ()


@pytest.fixture(scope="module", params=["native", "pynetdicom", "tls"])
def peer(
    request: pytest.FixtureRequest, orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Peer]:
    path = str(request.param)
    workdir = tmp_path_factory.mktemp(f"pdufuzz-{path}")
    dimse: dict[str, Any] = {
        "ae_title": AET,
        "acse_timeout": ACSE_TIMEOUT,
        "dimse_timeout": 10,
        "network_timeout": 10,
        "native_storage": path == "native",
    }
    context = None
    if path == "tls":
        cert, key = self_signed(workdir)
        dimse["tls"] = {"enabled": True, "cert_file": str(cert), "key_file": str(key)}
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    config = {
        "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
        "retry": {"initial_delay": 0.1, "max_delay": 0.5},
        "importer": {"dimse": dimse},
    }
    proc = AdapterProcess(config, workdir, name=f"pdufuzz-{path}").start()
    try:
        yield Peer(proc, context)
    finally:
        proc.terminate()


class Reader:
    """PDUs off a socket, each within a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer, self.eof = sock, b"", False

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.eof:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except (OSError, ssl.SSLError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def pdu(self, timeout: float) -> tuple[int, bytes] | None:
        """The next PDU, or None at EOF or when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 6:
                kind, _, length = struct.unpack_from(">BBL", self.buffer)
                if len(self.buffer) >= 6 + length:
                    body, self.buffer = self.buffer[6 : 6 + length], self.buffer[6 + length :]
                    return kind, body
            if not self._fill(deadline):
                return None


def _send(sock: socket.socket, pdu: bytes, chunks: int) -> bool:
    size = max(1, -(-len(pdu) // chunks))
    try:
        for i in range(0, len(pdu), size):
            sock.sendall(pdu[i : i + size])
    except (OSError, ssl.SSLError):
        return False
    return True


def _answer(kind: int, body: bytes, conv: Conversation, acked: set[str]) -> str:
    """Name an answer; record an acknowledged C-STORE's SOP Instance UIDs in ``acked``."""
    names = {0x02: "AC", 0x03: "RJ", 0x06: "RP", 0x07: "ABORT"}
    if kind != 0x04:
        return names.get(kind, f"PDU 0x{kind:02x}")
    try:
        response = decode_response(body[6:])
        echoed = decode_elements(body[6:]).get(0x1000, b"")
    except Exception as exc:
        return f"unreadable P-DATA ({type(exc).__name__})"
    if response.command_field == 0x8001:
        if response.status in SUCCESS:
            acked.add(conv.sop_instance_uid)
            acked.add(echoed.rstrip(b"\x00 ").decode("ascii", "replace"))
            return "store-ok"
        return f"store-0x{response.status:04x}"
    return "echo-ok" if response.status == 0 else f"echo-0x{response.status:04x}"


def run_case(peer: Peer, conv: Conversation, acked: set[str]) -> str:
    """Send one conversation; the outcome: the last answer, then how the connection ended."""
    answers: list[str] = []
    try:
        sock = peer.connect()
    except (OSError, ssl.SSLError) as exc:
        return f"connect failed ({type(exc).__name__})"
    with sock:
        reader = Reader(sock)
        stalled = False
        for i, step in enumerate(conv.steps):
            if not _send(sock, step.pdu, step.chunks):
                break
            if stalled or not step.reply:
                continue
            wait = VALID_WAIT if conv.mutated < 0 or i < conv.mutated else MUTATED_WAIT
            got = reader.pdu(wait)
            if got is None:
                if reader.eof:
                    break
                stalled = True  # send the rest unanswered, then half-close
                continue
            answers.append(_answer(*got, conv, acked))
            if got[0] in (0x03, 0x07):
                break
        with contextlib.suppress(OSError, ssl.SSLError):
            sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + CASE_DEADLINE
        while not reader.eof and time.monotonic() < deadline:
            got = reader.pdu(deadline - time.monotonic())
            if got is not None:
                answers.append(_answer(*got, conv, acked))
        end = "closed" if reader.eof else "still open at the deadline"
    return f"{answers[-1] if answers else 'nothing'}, {end}"


def test_fuzzed_pdus_are_answered_or_dropped_and_leave_nothing_behind(
    peer: Peer, orthanc: OrthancPeer, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(SEED)
    acked: set[str] = set()
    for _ in range(3):  # warm up: the baseline includes pools and caches
        conv = make_conversation(rng, "none")
        assert run_case(peer, conv, acked) == "RP, closed", conv
    pid = peer.proc.pid
    assert pid is not None
    wait_until(lambda: spool_empty(peer.proc), 30, what="warm-up delivered")
    baseline = resources(pid)
    before = orthanc_instance_ids(orthanc)
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    cases: dict[str, str] = {}  # SOP Instance UID -> the case that sent it
    cut_off: set[str] = set()  # the association ended before any answer to its C-STORE
    started = time.monotonic()
    for _ in range(COUNT):
        conv = make_conversation(rng)
        outcome = run_case(peer, conv, acked)
        outcomes[(conv.mutation, outcome)] += 1
        cases[conv.sop_instance_uid] = f"({conv.mutation}: {conv.detail} -> {outcome})"
        if outcome.split(",")[0] in ("AC", "ABORT", "nothing"):
            cut_off.add(conv.sop_instance_uid)  # no answer to its C-STORE, nor after it
        if conv.mutation in ("none", "fragmentation"):
            assert outcome == "RP, closed", (conv.mutation, conv.detail, outcome)
            assert conv.sop_instance_uid in acked
    elapsed = time.monotonic() - started
    path = request.node.callspec.params["peer"]
    print(f"\npdu fuzz [{path}]: {COUNT} cases in {elapsed:.1f}s, seed {SEED}")
    for (mutation, outcome), n in sorted(outcomes.items()):
        print(f"  {mutation:18} {outcome:40} {n}")
    acked.discard("")
    check_after(peer.proc, orthanc, acked, called_aet=AET, echo_args=peer.echo_args)
    stored = check_new_instances(orthanc, before, acked, cases, cut_off)
    print(f"  {len(acked)} acknowledged, {stored} new instances in the store, all well formed")
    check_resources(peer.proc, baseline)
    assert not [o for (_, o) in outcomes if o.endswith("still open at the deadline")], outcomes
    assert set(KINDS) <= {m for m, _ in outcomes} or COUNT < 100
