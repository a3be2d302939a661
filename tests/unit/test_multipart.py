"""multipart/related bodies: exact length, streaming with flat memory, re-readable; and the
streaming parser for multipart answers."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from adapter.dicomweb.multipart import (
    MultipartRelatedBody,
    iter_multipart_parts,
    parse_content_type,
)
from adapter.dicomweb.session import SessionSettings, build_session
from adapter.errors import PermanentError, TransientError
from tests.peers.http_stub import HttpStub, StubResponse


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


def _files(tmp_path: Path, *contents: bytes) -> list[Path]:
    paths = []
    for i, data in enumerate(contents):
        path = tmp_path / f"f{i}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _multipart(
    boundary: str,
    parts: list[tuple[dict[str, str], bytes]],
    preamble: bytes = b"",
    epilogue: bytes = b"",
) -> bytes:
    out = bytearray(preamble)
    for headers, body in parts:
        out += f"--{boundary}\r\n".encode()
        for name, value in headers.items():
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + body + b"\r\n"
    out += f"--{boundary}--\r\n".encode() + epilogue
    return bytes(out)


# --------------------------------------------------------------------------- parse_content_type
def test_parse_content_type_lowercases_type_and_unquotes_parameters() -> None:
    media, params = parse_content_type(
        'Multipart/Related; type="application/dicom"; Boundary="a;b=c"; transfer-syntax=*'
    )
    assert media == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "a;b=c", "transfer-syntax": "*"}


def test_parse_content_type_of_empty_value_is_empty() -> None:
    assert parse_content_type("") == ("", {})


# --------------------------------------------------------------------------- request body
def test_body_length_matches_bytes_read_and_parts_round_trip(tmp_path: Path) -> None:
    paths = _files(tmp_path, b"A" * 10, b"", b"\r\n--not-a-boundary\r\n" * 3)
    body = MultipartRelatedBody(paths, boundary="BOUNDARY123")
    data = body.read()
    assert len(data) == len(body)
    assert body.content_type_header == (
        'multipart/related; type="application/dicom"; boundary=BOUNDARY123'
    )
    expected = _multipart(
        "BOUNDARY123",
        [({"Content-Type": "application/dicom"}, p.read_bytes()) for p in paths],
    )
    assert data == expected


def test_read_never_returns_more_than_asked(tmp_path: Path) -> None:
    paths = _files(tmp_path, os.urandom(5000), os.urandom(3))
    body = MultipartRelatedBody(paths, chunk_size=1024)
    pieces = []
    while piece := body.read(700):
        assert len(piece) <= 700
        pieces.append(piece)
    assert sum(map(len, pieces)) == len(body)
    assert body.read(10) == b""


def test_reset_rewinds_so_a_retry_sends_identical_bytes(tmp_path: Path) -> None:
    body = MultipartRelatedBody(_files(tmp_path, os.urandom(3000)), chunk_size=512)
    first = body.read()
    assert body.read() == b""
    body.reset()
    assert body.tell() == 0
    assert body.read() == first


def test_file_that_grew_after_sizing_is_detected(tmp_path: Path) -> None:
    (path,) = _files(tmp_path, b"x" * 100)
    body = MultipartRelatedBody([path])
    path.write_bytes(b"x" * 200)
    with pytest.raises(TransientError, match="grew"):
        body.read()


def test_file_that_shrank_after_sizing_is_detected(tmp_path: Path) -> None:
    (path,) = _files(tmp_path, b"x" * 100)
    body = MultipartRelatedBody([path])
    path.write_bytes(b"x" * 10)
    with pytest.raises(TransientError, match="shrank"):
        body.read()


def test_invalid_boundary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        MultipartRelatedBody(_files(tmp_path, b"x"), boundary="bad\r\nboundary")


def test_requests_sends_body_with_content_length_not_chunked(
    tmp_path: Path, stub: HttpStub
) -> None:
    paths = _files(tmp_path, os.urandom(70_000), os.urandom(12_345))
    body = MultipartRelatedBody(paths)
    expected = body.read()
    body.reset()
    stub.default = StubResponse(200)
    session = build_session(SessionSettings(stub.url))
    session.post(
        stub.url + "/studies", data=body, headers={"Content-Type": body.content_type_header}
    )
    (seen,) = stub.requests
    assert seen.header("Content-Length") == str(len(expected))
    assert seen.header("Transfer-Encoding") is None
    assert seen.body == expected


def test_session_rewinds_a_used_body_before_resending(tmp_path: Path, stub: HttpStub) -> None:
    body = MultipartRelatedBody(_files(tmp_path, os.urandom(50_000)))
    stub.default = StubResponse(200)
    session = build_session(SessionSettings(stub.url))
    for _ in range(2):
        session.post(
            stub.url + "/studies", data=body, headers={"Content-Type": body.content_type_header}
        )
    first, second = stub.requests
    assert first.body_size == second.body_size == len(body)
    assert first.body_sha256 == second.body_sha256


def test_sending_200_mb_keeps_peak_memory_flat(tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        path = tmp_path / f"big{i}.dcm"
        with open(path, "wb") as handle:
            handle.truncate(40 << 20)  # sparse: 40 MiB of zeros without using the disk
        paths.append(path)
    with HttpStub(keep_bodies=False) as server:
        server.default = StubResponse(200)
        session = build_session(SessionSettings(server.url))
        body = MultipartRelatedBody(paths)
        tracemalloc.start()
        try:
            response = session.post(
                server.url + "/studies",
                data=body,
                headers={"Content-Type": body.content_type_header},
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 200
        (seen,) = server.requests
    assert seen.body_size == len(body) > 200 << 20
    assert peak < 16 << 20, f"peak traced memory {peak / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- response parser
def _get(stub: HttpStub, body: bytes, content_type: str, chunks: int = 1) -> requests.Response:
    stub.enqueue(StubResponse(200, {"Content-Type": content_type}, body, chunks=chunks))
    return requests.get(stub.url + "/wado", stream=True, timeout=10)


def test_parser_yields_each_part_with_headers_and_exact_body(stub: HttpStub) -> None:
    payloads = [os.urandom(1000), b"", b"\r\n--boundar\r\n"]
    raw = _multipart(
        "boundary",
        [({"Content-Type": "application/dicom", "X-N": str(i)}, p) for i, p in enumerate(payloads)],
        preamble=b"ignored preamble\r\n",
        epilogue=b"ignored epilogue",
    )
    response = _get(stub, raw, 'multipart/related; type="application/dicom"; boundary=boundary')
    parts = [
        (part.headers["x-n"], part.content_type, part.read())
        for part in iter_multipart_parts(response, chunk_size=7)
    ]
    assert parts == [(str(i), "application/dicom", p) for i, p in enumerate(payloads)]


def test_parser_handles_boundary_split_across_network_chunks(stub: HttpStub) -> None:
    payloads = [os.urandom(333) for _ in range(4)]
    raw = _multipart("b0undary", [({"Content-Type": "application/dicom"}, p) for p in payloads])
    response = _get(stub, raw, "multipart/related; boundary=b0undary", chunks=97)
    got = [part.read() for part in iter_multipart_parts(response, chunk_size=3)]
    assert got == payloads


def test_parser_accepts_a_part_without_headers(stub: HttpStub) -> None:
    raw = b"--b\r\n\r\nhello\r\n--b--\r\n"
    response = _get(stub, raw, "multipart/related; boundary=b")
    (only,) = [(dict(p.headers), p.read()) for p in iter_multipart_parts(response)]
    assert only == ({}, b"hello")


def test_parser_skips_unread_part_bodies(stub: HttpStub) -> None:
    raw = _multipart("b", [({"N": "1"}, b"x" * 5000), ({"N": "2"}, b"second")])
    response = _get(stub, raw, "multipart/related; boundary=b")
    headers = [p.headers["N"] for p in iter_multipart_parts(response, chunk_size=100)]
    assert headers == ["1", "2"]


def test_truncated_multipart_answer_is_transient(stub: HttpStub) -> None:
    raw = _multipart("b", [({}, b"y" * 1000)])[:500]
    response = _get(stub, raw, "multipart/related; boundary=b")
    with pytest.raises(TransientError, match="truncated"):
        for part in iter_multipart_parts(response):
            part.read()


def test_non_multipart_answer_is_refused(stub: HttpStub) -> None:
    response = _get(stub, b"{}", "application/json")
    with pytest.raises(PermanentError, match="multipart"):
        list(iter_multipart_parts(response))


def test_large_part_streams_to_file_with_flat_memory(stub: HttpStub, tmp_path: Path) -> None:
    payload = os.urandom(1 << 20) * 64  # 64 MiB, allocated before tracing
    raw = _multipart("b", [({"Content-Type": "application/dicom"}, payload)])
    digest = hashlib.sha256(payload).hexdigest()
    del payload
    response = _get(stub, raw, "multipart/related; boundary=b", chunks=256)
    out_path = tmp_path / "out.bin"
    tracemalloc.start()
    try:
        with open(out_path, "wb") as out:
            for part in iter_multipart_parts(response, chunk_size=1 << 20):
                part.copy_to(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hashlib.sha256(out_path.read_bytes()).hexdigest() == digest
    assert peak < 12 << 20, f"peak traced memory {peak / 2**20:.1f} MiB"
