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
