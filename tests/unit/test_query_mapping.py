"""C-FIND identifiers map to QIDO-RS searches and QIDO results back to C-FIND identifiers."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from adapter.errors import PermanentError
from importer.query_mapping import identifier_to_query, result_to_identifier


def identifier(level: str, **elements: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def test_study_level_matching_and_return_keys() -> None:
    q = identifier_to_query(
        identifier(
            "STUDY",
            PatientName="DOE^*",
            StudyDate="20240101-20241231",
            StudyInstanceUID="",
            ModalitiesInStudy="",
        )
    )
    assert q.level == "STUDY"
    assert dict(q.match) == {"PatientName": "DOE^*", "StudyDate": "20240101-20241231"}
    assert set(q.includefield) == {"StudyInstanceUID", "ModalitiesInStudy"}
    assert q.return_keywords[0] == "StudyInstanceUID"


def test_image_level_scopes_by_study_and_series_uid() -> None:
    q = identifier_to_query(
        identifier("IMAGE", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.4", SOPInstanceUID="")
    )
    assert (q.study_instance_uid, q.series_instance_uid) == ("1.2.3", "1.2.4")
    assert "StudyInstanceUID" not in q.match and "SeriesInstanceUID" not in q.match


def test_multi_valued_match_uses_backslash() -> None:
    q = identifier_to_query(identifier("SERIES", Modality=["CT", "MR"]))
    assert q.match["Modality"] == "CT\\MR"


@pytest.mark.parametrize("level", ["", "FRAME", "WORKLIST"])
def test_bad_query_retrieve_level_is_refused(level: str) -> None:
    with pytest.raises(PermanentError, match="QueryRetrieveLevel must be one of"):
        identifier_to_query(identifier(level))


def test_result_holds_only_requested_keys_and_empty_unknowns() -> None:
    q = identifier_to_query(
        identifier("STUDY", PatientID="", StudyInstanceUID="", AccessionNumber="")
    )
    result = {
        "00100020": {"vr": "LO", "Value": ["P1"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
    }
    ds = result_to_identifier(result, q)
    assert ds.PatientID == "P1" and ds.StudyInstanceUID == "1.2.3"
    assert "AccessionNumber" in ds and not ds.AccessionNumber
    assert "Modality" not in ds
    assert ds.QueryRetrieveLevel == "STUDY"


def test_person_name_components_are_matched_exactly_after_a_prefix_search() -> None:
    """Orthanc 1.10's QIDO-RS never matches '^': the store gets the first component plus '*',
    the adapter checks the whole DICOM match (PS3.4 C.2.2.2.1, case-insensitive for PN)."""
    q = identifier_to_query(identifier("STUDY", PatientName="Doe^J?hn", StudyInstanceUID=""))
    assert q.match["PatientName"] == "Doe^J?hn" and q.store_match == {"PatientName": "Doe*"}

    def pn(name: str) -> dict[str, object]:
        return {"00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]}}

    assert q.accepts(pn("DOE^JOHN")) and q.accepts(pn("Doe^John^^"))
    assert not q.accepts(pn("Doe^Jane")) and not q.accepts(pn("Doemann^John"))
    assert not q.accepts({})
    leading = identifier_to_query(identifier("STUDY", PatientName="*^John"))
    assert leading.store_match == {} and leading.accepts(pn("Roe^John"))


def test_plain_wildcards_and_fuzzy_matching_go_to_the_store_unchanged() -> None:
    q = identifier_to_query(identifier("STUDY", PatientName="Doe*", AccessionNumber="A^1"))
    assert q.store_match == {"PatientName": "Doe*", "AccessionNumber": "A^1"}  # not a PN
    fuzzy = identifier_to_query(identifier("STUDY", PatientName="Doe^John"), fuzzy=True)
    assert fuzzy.store_match == {"PatientName": "Doe^John"}
    assert fuzzy.accepts({})  # the store decided


def test_return_keys_store_keeps_every_attribute_of_the_result() -> None:
    q = identifier_to_query(identifier("IMAGE", StudyInstanceUID="1.2.3"))
    result = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "00280010": {"vr": "US", "Value": [32]},
    }
    ds = result_to_identifier(result, q, "store")
    assert ds.Modality == "CT" and ds.Rows == 32 and ds.QueryRetrieveLevel == "IMAGE"
    assert "Modality" not in result_to_identifier(result, q)
