"""C-FIND matching as a PACS user sees it with dcmtk findscu (PS3.4 C.2.2.2, C.4.1): wildcards and
person names reach the store and match there (Orthanc 1.10's QIDO-RS, which neither decodes
``%2A`` nor matches ``^``), PATIENT level answers with the patient-level counts, and the
``return_keys`` switch answers with the requested keys or everything the store returned (as the
Java adapter did).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import count_find_responses, findscu
from tests.peers.dicomweb_proxy import DicomwebProxy
from tests.peers.orthanc import OrthancPeer

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"


@pytest.fixture(scope="module")
def family(orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three patients with a family name no other test uses: SURNAME^John (2 studies, one of
    2 instances), SURNAME^Jane (1 study), OTHER^John (1 study)."""
    surname = "Fam" + secrets.token_hex(3)
    other = "Oth" + secrets.token_hex(3)
    people = [
        (f"{surname}^John", "PJOHN" + surname, 2),
        (f"{surname}^John", "PJOHN" + surname, 1),
        (f"{surname}^Jane", "PJANE" + surname, 1),
        (f"{other}^John", "POTHER" + surname, 1),
    ]
    out = tmp_path_factory.mktemp("family")
    for i, (name, pid, count) in enumerate(people):
        study = generate_uid()
        for path in make_ct_series(out / str(i), count, rows=8, cols=8):
            ds = pydicom.dcmread(path)
            ds.PatientName, ds.PatientID, ds.StudyInstanceUID = name, pid, study
            ds.save_as(path)
            orthanc.upload_file(path)
    return {"surname": surname, "other": other}


@pytest.fixture(scope="module")
def proxy(orthanc: OrthancPeer) -> Iterator[DicomwebProxy]:
    with DicomwebProxy(orthanc.dicomweb_url) as p:
        yield p


def _adapter(url: str, tmp: Path, name: str, **query: Any) -> AdapterProcess:
    config = {
        "dicomweb": {"url": url, "auth": {"kind": "none"}},
        "importer": {"dimse": {"ae_title": AET}, "query": query},
    }
    return AdapterProcess(config, tmp, name=name).start()


@pytest.fixture(scope="module")
def adapter(
    proxy: DicomwebProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdapterProcess]:
    """return_keys: requested (the default), behind the recording proxy."""
    proc = _adapter(proxy.url, tmp_path_factory.mktemp("find"), "find")
    try:
        yield proc
    finally:
        proc.terminate()


def names(adapter: AdapterProcess, pattern: str, tmp_path: Path, level: str = "STUDY") -> set[str]:
    out = tmp_path / f"rsp-{secrets.token_hex(3)}"
    result = findscu(
        adapter.port,
        {"PatientName": pattern, "StudyInstanceUID": ""},
        level=level,
        called_aet=AET,
        output_dir=out,
    )
    assert result.ok, result.output
    found = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert len(found) == count_find_responses(result)
    return {str(ds.PatientName) for ds in found}


def test_findscu_wildcard_reaches_the_store_unencoded(
    adapter: AdapterProcess, family: dict[str, Any], proxy: DicomwebProxy, tmp_path: Path
) -> None:
    surname = family["surname"]
    assert names(adapter, f"{surname}*", tmp_path) == {f"{surname}^John", f"{surname}^Jane"}
    assert any(f"PatientName={surname}*" in line for line in proxy.seen), proxy.seen[-3:]
    assert names(adapter, f"{surname[:-1]}?*", tmp_path) == {f"{surname}^John", f"{surname}^Jane"}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("{s}^John", {"{s}^John"}),
        ("{s}^J*", {"{s}^John", "{s}^Jane"}),
        ("{s}^Ja?e", {"{s}^Jane"}),
        ("{S}^JANE", {"{s}^Jane"}),  # PN matching is case-insensitive
        ("*^John", None),  # every John: at least ours and the other family's
    ],
)
def test_findscu_person_name_with_components_matches(
    adapter: AdapterProcess,
    family: dict[str, Any],
    tmp_path: Path,
    pattern: str,
    expected: set[str] | None,
) -> None:
    s = family["surname"]
    found = names(adapter, pattern.format(s=s, S=s.upper()), tmp_path)
    if expected is None:
        assert {f"{s}^John", f"{family['other']}^John"} <= found
        assert all(n.endswith("^John") for n in found), found
    else:
        assert found == {e.format(s=s) for e in expected}


def test_patient_level_answers_with_the_patient_level_counts(
    adapter: AdapterProcess, family: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "patients"
    result = findscu(
        adapter.port,
        {
            "PatientName": f"{family['surname']}*",
            "PatientID": "",
            "NumberOfPatientRelatedStudies": "",
            "NumberOfPatientRelatedSeries": "",
            "NumberOfPatientRelatedInstances": "",
        },
        level="PATIENT",
        model="patient",
        called_aet=AET,
        output_dir=out,
    )
    assert result.ok, result.output
    answers = {str(ds.PatientName): ds for ds in map(pydicom.dcmread, out.glob("rsp*.dcm"))}
    john, jane = answers[f"{family['surname']}^John"], answers[f"{family['surname']}^Jane"]
    assert len(answers) == 2 and john.QueryRetrieveLevel == "PATIENT"
    counts = (
        john.NumberOfPatientRelatedStudies,
        john.NumberOfPatientRelatedSeries,
        john.NumberOfPatientRelatedInstances,
    )
    assert counts == (2, 2, 3)
    assert (jane.NumberOfPatientRelatedStudies, jane.NumberOfPatientRelatedInstances) == (1, 1)
    assert "StudyInstanceUID" not in john  # a patient-level answer


def test_return_keys_store_answers_with_everything_the_store_returned(
    orthanc: OrthancPeer, family: dict[str, Any], tmp_path: Path
) -> None:
    proc = _adapter(orthanc.dicomweb_url, tmp_path, "store-keys", return_keys="store")
    try:
        [study] = orthanc.qido("/studies", {"PatientID": "PJANE" + family["surname"]})
        study_uid = study["0020000D"]["Value"][0]
        [instance] = orthanc.qido(f"/studies/{study_uid}/instances")
        out = tmp_path / "rsp"
        result = findscu(
            proc.port,
            {"StudyInstanceUID": study_uid},  # only the level and a unique key
            level="IMAGE",
            called_aet=AET,
            output_dir=out,
        )
        assert result.ok, result.output
        [answer] = [pydicom.dcmread(p) for p in out.glob("rsp*.dcm")]
        tags = {f"{int(e.tag):08X}" for e in answer}
        assert set(instance) <= tags, sorted(set(instance) - tags)
        assert answer.QueryRetrieveLevel == "IMAGE" and len(tags) > 10
    finally:
        proc.terminate()


def test_fuzzy_matching_asks_qido_rs_for_it(
    proxy: DicomwebProxy, family: dict[str, Any], tmp_path: Path
) -> None:
    proc = _adapter(proxy.url, tmp_path, "fuzzy", fuzzy_matching=True)
    try:
        found = names(proc, f"{family['surname']}*", tmp_path)
        assert f"{family['surname']}^John" in found
        assert any("fuzzymatching=true" in line for line in proxy.seen), proxy.seen[-3:]
    finally:
        proc.terminate()
