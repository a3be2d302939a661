"""QIDO-RS paging (never silently truncated) and WADO-RS retrieval to disk, against the stub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from adapter.dicomweb.qido import QidoClient, QidoResultLimitError
from adapter.dicomweb.session import SessionSettings, build_session
from adapter.dicomweb.wado import WadoClient
from adapter.errors import PermanentError, TransientError
from tests.peers.http_stub import HttpStub, RecordedRequest, StubResponse

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
PART10 = b"\0" * 128 + b"DICM" + bytes(range(256)) * 40


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


def _query(request: RecordedRequest) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.path).query)


def _serve_results(stub: HttpStub, total: int, server_cap: int | None = None) -> None:
    """Answer QIDO pages from ``total`` fake studies, honouring offset/limit like a store."""
    results = [{"0020000D": {"vr": "UI", "Value": [f"1.2.{n}"]}} for n in range(total)]

    def handler(request: RecordedRequest) -> StubResponse:
        query = _query(request)
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["1000000"])[0])
        headers = {}
        if server_cap is not None and limit > server_cap:
            limit = server_cap
            headers["Warning"] = (
                '299 store: "The number of results exceeded the maximum '
                'supported by the server. Additional results can be requested."'
            )
        page = results[offset : offset + limit]
        return StubResponse.json(200, page, headers)

    stub.handler = handler


def _qido(stub: HttpStub, **kwargs: Any) -> QidoClient:
    return QidoClient(build_session(SessionSettings(stub.url)), stub.url + "/dw", **kwargs)


def _study_uids(results: Iterator[dict[str, Any]]) -> list[str]:
    return [r["0020000D"]["Value"][0] for r in results]


# --------------------------------------------------------------------------- QIDO
def test_paging_across_short_last_page_returns_everything(stub: HttpStub) -> None:
    _serve_results(stub, 5)
    assert _study_uids(_qido(stub, page_size=2).search_for_studies()) == [
        f"1.2.{n}" for n in range(5)
    ]
    pages = [(_query(r)["offset"], _query(r)["limit"]) for r in stub.requests]
    assert pages == [(["0"], ["2"]), (["2"], ["2"]), (["4"], ["2"])]


def test_paging_with_exact_multiple_asks_once_more_and_stops_on_empty_page(
    stub: HttpStub,
) -> None:
    _serve_results(stub, 4)
    assert len(list(_qido(stub, page_size=2).search_for_studies())) == 4
    assert len(stub.requests) == 3


def test_server_capped_page_with_warning_299_keeps_paging(stub: HttpStub) -> None:
    _serve_results(stub, 7, server_cap=3)
    assert len(list(_qido(stub, page_size=100).search_for_studies())) == 7


def test_204_no_content_is_an_empty_result(stub: HttpStub) -> None:
    stub.enqueue(StubResponse(204))
    assert list(_qido(stub).search_for_studies()) == []


def test_caller_limit_stops_early_without_over_fetching(stub: HttpStub) -> None:
    _serve_results(stub, 50)
    assert len(list(_qido(stub, page_size=4).search_for_studies(limit=6))) == 6
    assert [_query(r)["limit"] for r in stub.requests] == [["4"], ["2"]]


def test_exceeding_max_results_raises_instead_of_truncating(stub: HttpStub) -> None:
    _serve_results(stub, 10)
    seen: list[dict[str, Any]] = []
    with pytest.raises(QidoResultLimitError, match="max_results=5"):
        for result in _qido(stub, page_size=3, max_results=5).search_for_studies():
            seen.append(result)
    assert len(seen) == 5


def test_server_ignoring_offset_is_detected(stub: HttpStub) -> None:
    page = [{"0020000D": {"vr": "UI", "Value": [f"9.{n}"]}} for n in range(2)]
    stub.handler = lambda request: StubResponse.json(200, page)
    with pytest.raises(PermanentError, match="ignores 'offset'"):
        list(_qido(stub, page_size=2).search_for_studies())


def test_match_and_includefield_become_query_parameters(stub: HttpStub) -> None:
    stub.enqueue(StubResponse.json(200, []))
    list(
        _qido(stub).search_for_series(
            STUDY, match={"Modality": "CT"}, includefield=["00080021", "SeriesDescription"]
        )
    )
    (seen,) = stub.requests
    assert urlsplit(seen.path).path == f"/dw/studies/{STUDY}/series"
    assert _query(seen)["Modality"] == ["CT"]
    assert _query(seen)["includefield"] == ["00080021,SeriesDescription"]
    assert seen.header("Accept") == "application/dicom+json"


def test_instances_of_a_series_without_study_match_on_series_uid(stub: HttpStub) -> None:
    stub.enqueue(StubResponse.json(200, []))
    list(_qido(stub).search_for_instances(series_instance_uid=SERIES))
    (seen,) = stub.requests
    assert urlsplit(seen.path).path == "/dw/instances"
    assert _query(seen)["SeriesInstanceUID"] == [SERIES]


def test_instances_of_study_and_series_use_the_nested_resource(stub: HttpStub) -> None:
    stub.enqueue(StubResponse.json(200, []))
    list(_qido(stub).search_for_instances(STUDY, SERIES))
    assert urlsplit(stub.requests[0].path).path == f"/dw/studies/{STUDY}/series/{SERIES}/instances"


def test_hostile_uid_in_search_never_reaches_the_url(stub: HttpStub) -> None:
    with pytest.raises(PermanentError, match="invalid Study Instance UID"):
        list(_qido(stub).search_for_series("1.2.3/../../studies?x"))
    assert stub.requests == []


def test_qido_server_error_is_transient(stub: HttpStub) -> None:
    stub.enqueue(StubResponse(502, body=b"bad gateway"))
    with pytest.raises(TransientError, match="HTTP 502"):
        list(_qido(stub).search_for_studies())


def test_qido_answer_that_is_not_a_dicom_json_array_is_permanent(stub: HttpStub) -> None:
    stub.enqueue(StubResponse.json(200, {"not": "a list"}))
    with pytest.raises(PermanentError, match="DICOM JSON array"):
        list(_qido(stub).search_for_studies())


# --------------------------------------------------------------------------- WADO
def _wado(stub: HttpStub) -> WadoClient:
    return WadoClient(build_session(SessionSettings(stub.url, read_timeout=5)), stub.url + "/dw")


def _multipart_answer(*payloads: bytes, boundary: str = "xyz") -> StubResponse:
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
        for p in payloads
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return StubResponse(200, {"Content-Type": content_type}, body, chunks=5)


def test_retrieve_streams_the_single_part_to_dest(stub: HttpStub, tmp_path: Path) -> None:
    stub.enqueue(_multipart_answer(PART10))
    dest = tmp_path / "out" / "i.dcm"
    assert _wado(stub).retrieve_instance(STUDY, SERIES, SOP, dest) == dest
    assert dest.read_bytes() == PART10
    assert list(dest.parent.iterdir()) == [dest]
    (seen,) = stub.requests
    assert seen.path == f"/dw/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
    assert seen.header("Accept") == (
        'multipart/related; type="application/dicom"; transfer-syntax=*'
    )


def test_retrieve_accepts_a_bare_application_dicom_answer(stub: HttpStub, tmp_path: Path) -> None:
    stub.enqueue(StubResponse(200, {"Content-Type": "application/dicom"}, PART10))
    dest = _wado(stub).retrieve_instance(STUDY, SERIES, SOP, tmp_path / "i.dcm")
    assert dest.read_bytes() == PART10


def test_store_refusing_transfer_syntax_star_gets_a_retry_without_it(
    stub: HttpStub, tmp_path: Path
) -> None:
    stub.enqueue(StubResponse(406), _multipart_answer(PART10), _multipart_answer(PART10))
    client = _wado(stub)
    client.retrieve_instance(STUDY, SERIES, SOP, tmp_path / "a.dcm")
    client.retrieve_instance(STUDY, SERIES, SOP, tmp_path / "b.dcm")
    accepts = [r.header("Accept") for r in stub.requests]
    assert accepts == [
        'multipart/related; type="application/dicom"; transfer-syntax=*',
        'multipart/related; type="application/dicom"',
        'multipart/related; type="application/dicom"',
    ]
    assert (tmp_path / "b.dcm").read_bytes() == PART10


def test_missing_instance_is_permanent_and_leaves_no_file(stub: HttpStub, tmp_path: Path) -> None:
    stub.enqueue(StubResponse(404, body=b"Accessing an inexistent instance"))
    with pytest.raises(PermanentError, match="HTTP 404"):
        _wado(stub).retrieve_instance(STUDY, SERIES, SOP, tmp_path / "i.dcm")
    assert list(tmp_path.iterdir()) == []


def test_wado_server_error_is_transient(stub: HttpStub, tmp_path: Path) -> None:
    stub.enqueue(StubResponse(503, {"Retry-After": "3"}))
    with pytest.raises(TransientError) as caught:
        _wado(stub).retrieve_instance(STUDY, SERIES, SOP, tmp_path / "i.dcm")
    assert caught.value.retry_after == 3


def test_cut_transfer_is_transient_and_leaves_no_partial_file(
    stub: HttpStub, tmp_path: Path
) -> None:
    answer = _multipart_answer(PART10)
    answer.headers = {**answer.headers, "Content-Length": str(len(answer.body))}
    answer.body = answer.body[: len(answer.body) // 2]
    answer.close = True
    stub.enqueue(answer)
    with pytest.raises(TransientError):
        _wado(stub).retrieve_instance(STUDY, SERIES, SOP, tmp_path / "i.dcm")
    assert list(tmp_path.iterdir()) == []


def test_slow_answer_times_out_as_transient(stub: HttpStub, tmp_path: Path) -> None:
    stub.enqueue(StubResponse(200, delay=2))
    client = WadoClient(build_session(SessionSettings(stub.url, read_timeout=0.3)), stub.url)
    with pytest.raises(TransientError, match="timed out"):
        client.retrieve_instance(STUDY, SERIES, SOP, tmp_path / "i.dcm")


def test_non_dicom_payload_is_refused(stub: HttpStub, tmp_path: Path) -> None:
    stub.enqueue(_multipart_answer(b"<html>login page</html>"))
    with pytest.raises(PermanentError, match="not a DICOM Part-10"):
        _wado(stub).retrieve_instance(STUDY, SERIES, SOP, tmp_path / "i.dcm")
    assert list(tmp_path.iterdir()) == []


def test_more_than_one_part_for_one_instance_is_refused(stub: HttpStub, tmp_path: Path) -> None:
    stub.enqueue(_multipart_answer(PART10, PART10))
    with pytest.raises(PermanentError, match="more than one part"):
        _wado(stub).retrieve_instance(STUDY, SERIES, SOP, tmp_path / "i.dcm")


@pytest.mark.parametrize("bad", ["1.2.3/../../x", "1.2.3?x=1", "", "1." + "2" * 70, "1..2"])
def test_hostile_uids_never_reach_the_url(stub: HttpStub, tmp_path: Path, bad: str) -> None:
    with pytest.raises(PermanentError, match="invalid"):
        _wado(stub).retrieve_instance(STUDY, bad, SOP, tmp_path / "i.dcm")
    assert stub.requests == []


def test_dicom_json_helpers_are_tolerant_of_missing_values() -> None:
    from adapter.dicomweb.json_model import get_int, get_str, sequence_items

    obj = json.loads(
        '{"00081198": {"vr": "SQ"}, "00100010": {"vr": "PN", "Value": '
        '[{"Alphabetic": "Doe^J"}]}, "00081197": {"vr": "US", "Value": [272]}}'
    )
    assert sequence_items(obj, "00081198") == []
    assert get_str(obj, "00100010") == "Doe^J"
    assert get_int(obj, "00081197") == 272
    assert get_str(obj, "00080018") is None


def test_wildcards_reach_the_store_unencoded_and_the_rest_is_percent_encoded(
    stub: HttpStub,
) -> None:
    stub.enqueue(StubResponse.json(200, []))
    list(_qido(stub).search_for_studies(match={"PatientName": "Doe* J?n&x=1", "StudyID": "a/b"}))
    (seen,) = stub.requests
    raw = urlsplit(seen.path).query
    assert "PatientName=Doe*%20J?n%26x%3D1" in raw and "StudyID=a%2Fb" in raw
    assert _query(seen)["PatientName"] == ["Doe* J?n&x=1"]


def test_fuzzy_matching_is_asked_for(stub: HttpStub) -> None:
    stub.enqueue(StubResponse.json(200, []))
    list(_qido(stub, fuzzy_matching=True).search_for_studies(match={"PatientName": "Doe"}))
    assert _query(stub.requests[0])["fuzzymatching"] == ["true"]
