"""StoreScu against an in-process pynetdicom Storage SCP on loopback: statuses, association pool,
transfer syntax fallback and conversion, failures mapped to Transient/PermanentError."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.dsutils import split_dataset

from adapter.dimse.client import StoreScu, classify_store_status
from adapter.errors import PermanentError, TransientError
from tests.peers.datasets import compress, make_ct_series, make_mr_instance
from tests.peers.ports import free_port


@dataclass
class Scp:
    """A Storage SCP that records what it gets and answers ``status``."""

    port: int
    status: int | Callable[[Any], int] = 0x0000
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    accepted: int = 0
    server: Any = None

    def on_store(self, event: Any) -> int:
        try:  # the importer's DIMSE server module may have turned on chunked receiving
            path = event.dataset_path
        except AttributeError:
            path = None
        raw = dataset_bytes(Path(path)) if path else event.request.DataSet.getvalue()
        ds = event.dataset
        self.received.append((str(ds.SOPInstanceUID), str(event.context.transfer_syntax), raw))
        return self.status(event) if callable(self.status) else self.status

    def on_accepted(self, event: Any) -> None:
        self.accepted += 1


@pytest.fixture
def start_scp() -> Iterator[Callable[..., Scp]]:
    servers: list[Any] = []

    def start(
        syntaxes: Sequence[str] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless),
        sop_classes: Sequence[str] = (CTImageStorage,),
        status: int | Callable[[Any], int] = 0x0000,
        configure: Callable[[AE], None] | None = None,
    ) -> Scp:
        scp = Scp(free_port(), status)
        ae = AE(ae_title="SCP")
        for sop_class in sop_classes:
            ae.add_supported_context(sop_class, list(syntaxes))
        if configure is not None:
            configure(ae)
        scp.server = ae.start_server(
            ("127.0.0.1", scp.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, scp.on_store), (evt.EVT_ACCEPTED, scp.on_accepted)],
        )
        servers.append(scp.server)
        return scp

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def ct(tmp_path: Path) -> list[Path]:
    return make_ct_series(tmp_path / "ct", 6, rows=16, cols=16)


def scu_for(scp: Scp, **kwargs: Any) -> StoreScu:
    options: dict[str, Any] = {
        "pool_size": 2,
        "acse_timeout": 5,
        "dimse_timeout": 5,
        "network_timeout": 5,
        **kwargs,
    }
    return StoreScu("SCP", "127.0.0.1", scp.port, **options)


def dataset_bytes(path: Path) -> bytes:
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def test_instances_are_sent_byte_exact_over_one_kept_open_association(
    start_scp: Callable[..., Scp], ct: list[Path]
) -> None:
    scp = start_scp()
    scu = scu_for(scp)
    try:
        assert [scu.send_file(p) for p in ct] == [0] * len(ct)
    finally:
        scu.close()
    assert scp.accepted == 1
    assert [raw for _, _, raw in scp.received] == [dataset_bytes(p) for p in ct]


def test_parallel_sends_use_at_most_pool_size_associations(
    start_scp: Callable[..., Scp], tmp_path: Path
) -> None:
    scp = start_scp()
    files = make_ct_series(tmp_path / "many", 24, rows=8, cols=8)
    scu = scu_for(scp, pool_size=3)
    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(scu.send_file, files))
    finally:
        scu.close()
    assert statuses == [0] * len(files)
    assert 1 <= scp.accepted <= 3
    assert len({uid for uid, _, _ in scp.received}) == len(files)


def test_scu_socket_sets_tcp_nodelay(start_scp: Callable[..., Scp], ct: list[Path]) -> None:
    scp = start_scp()
    scu = scu_for(scp)
    try:
        scu.send_file(ct[0])
        assoc = scu._idle[0].assoc  # the kept-open association
        assert assoc is not None
        sock = assoc.sock
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        scu.close()


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, "success"),
        (0xB000, "warning"),
        (0xB007, "warning"),
        (0x0001, "warning"),
        (0xA700, "transient"),
        (0xA7FF, "transient"),
        (0x0110, "transient"),
        (0xA900, "permanent"),
        (0xC000, "permanent"),
        (0xC123, "permanent"),
        (0x0122, "permanent"),
        (0x0124, "permanent"),
    ],
)
def test_store_statuses_are_classified(status: int, outcome: str) -> None:
    assert classify_store_status(status) == outcome


def test_warning_status_is_delivered(start_scp: Callable[..., Scp], ct: list[Path]) -> None:
    scu = scu_for(start_scp(status=0xB000))
    try:
        assert scu.send_file(ct[0]) == 0xB000
    finally:
        scu.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [(0xA700, TransientError), (0xC000, PermanentError), (0xA900, PermanentError)],
)
def test_failure_statuses_raise_by_class(
    start_scp: Callable[..., Scp], ct: list[Path], status: int, error: type[Exception]
) -> None:
    scu = scu_for(start_scp(status=status))
    try:
        with pytest.raises(error, match=f"0x{status:04X}"):
            scu.send_file(ct[0])
        with pytest.raises(error):  # the association stays usable
            scu.send_file(ct[1])
    finally:
        scu.close()


def test_unsupported_sop_class_is_permanent_0x0122(
    start_scp: Callable[..., Scp], tmp_path: Path
) -> None:
    scu = scu_for(start_scp(sop_classes=(CTImageStorage,)))
    try:
        with pytest.raises(PermanentError, match="no presentation context for MR Image") as info:
            scu.send_file(make_mr_instance(tmp_path))
    finally:
        scu.close()
    assert info.value.failure_reason == 0x0122


def test_nothing_listening_is_transient(ct: list[Path]) -> None:
    scu = StoreScu("SCP", "127.0.0.1", free_port(), acse_timeout=2, connection_timeout=2)
    with pytest.raises(TransientError, match="cannot connect"):
        scu.send_file(ct[0])


def test_unknown_called_ae_is_a_permanent_rejection(
    start_scp: Callable[..., Scp], ct: list[Path]
) -> None:
    scp = start_scp(configure=lambda ae: setattr(ae, "require_called_aet", True))
    scu = StoreScu("WRONG", "127.0.0.1", scp.port, acse_timeout=5)
    with pytest.raises(PermanentError, match=r"(?i)called AE title not recogni[sz]ed"):
        scu.send_file(ct[0])


def test_busy_scp_rejecting_transiently_is_transient(
    start_scp: Callable[..., Scp], ct: list[Path]
) -> None:
    scp = start_scp(configure=lambda ae: setattr(ae, "maximum_associations", 1))
    holder = AE()
    holder.add_requested_context(CTImageStorage)
    held = holder.associate("127.0.0.1", scp.port, ae_title="SCP")
    assert held.is_established
    try:
        scu = scu_for(scp)
        with pytest.raises(TransientError, match="rejected"):
            scu.send_file(ct[0])
    finally:
        held.release()


def test_no_answer_within_dimse_timeout_is_transient(
    start_scp: Callable[..., Scp], ct: list[Path]
) -> None:
    def slow(event: Any) -> int:
        time.sleep(1.5)
        return 0

    scu = scu_for(start_scp(status=slow), dimse_timeout=0.5)
    try:
        with pytest.raises(TransientError, match="no response"):
            scu.send_file(ct[0])
    finally:
        scu.close()


def test_association_aborted_by_the_pacs_is_reopened(
    start_scp: Callable[..., Scp], ct: list[Path]
) -> None:
    scp = start_scp()
    scu = scu_for(scp, pool_size=1)
    try:
        assert scu.send_file(ct[0]) == 0
        for assoc in scp.server.active_associations:
            assoc.abort()
        deadline = time.monotonic() + 5
        while scp.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scu.send_file(ct[1]) == 0
    finally:
        scu.close()
    assert scp.accepted == 2


def test_compressed_instance_is_decoded_for_a_pacs_taking_only_uncompressed(
    start_scp: Callable[..., Scp], ct: list[Path], tmp_path: Path
) -> None:
    rle = tmp_path / "rle.dcm"
    compress(ct[0], rle, "rle")
    scp = start_scp(syntaxes=(ExplicitVRLittleEndian,))
    scu = scu_for(scp)
    try:
        assert scu.send_file(rle) == 0
    finally:
        scu.close()
    [(uid, syntax, raw)] = scp.received
    assert syntax == ExplicitVRLittleEndian
    assert uid == pydicom.dcmread(rle).SOPInstanceUID  # never a new UID
    original = pydicom.dcmread(ct[0]).pixel_array
    got = pydicom.dcmread(io.BytesIO(raw), force=True)
    got.file_meta = pydicom.dataset.FileMetaDataset()
    got.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert np.array_equal(got.pixel_array, original)


def test_compressed_instance_is_kept_compressed_when_the_pacs_takes_it(
    start_scp: Callable[..., Scp], ct: list[Path], tmp_path: Path
) -> None:
    rle = tmp_path / "rle.dcm"
    compress(ct[0], rle, "rle")
    scp = start_scp()
    scu = scu_for(scp)
    try:
        scu.send_file(rle)
    finally:
        scu.close()
    assert scp.received[0][1:] == (RLELossless, dataset_bytes(rle))


def test_no_decoder_for_a_needed_conversion_is_permanent_and_says_so(
    start_scp: Callable[..., Scp], ct: list[Path], tmp_path: Path
) -> None:
    ds = pydicom.dcmread(ct[0])
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])  # not a real codestream
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    j2k = tmp_path / "j2k.dcm"
    ds.save_as(j2k, enforce_file_format=True)
    scu = scu_for(start_scp(syntaxes=(ExplicitVRLittleEndian,)))
    try:
        with pytest.raises(PermanentError, match="cannot decompress JPEG 2000"):
            scu.send_file(j2k)
    finally:
        scu.close()


def test_closing_releases_kept_open_associations(
    start_scp: Callable[..., Scp], ct: list[Path]
) -> None:
    scp = start_scp()
    scu = scu_for(scp)
    scu.send_file(ct[0])
    scu.close()
    deadline = time.monotonic() + 5
    while scp.server.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert scp.server.active_associations == []
    with pytest.raises(TransientError, match="shutting down"):
        scu.send_file(ct[1])
