"""The Java --redact_* flags: exactly one, the legacy-redact stage first on every route."""

from __future__ import annotations

import pytest

from adapter.config import load_config_data
from adapter.errors import ConfigError
from adapter.legacy_flags import translate
from adapter.legacy_stages import REDACT_STAGE, add_stage_to_every_route
from adapter.stages.deidentify_config import DeidentifyStageConfig
from importer.config import ImporterConfig

GUIDE = ["--dimse_aet=IMPORTADAPTER", "--dimse_port=2575", "--dicomweb_address=http://h:1/dw"]
ROUTES = '[{"filter":"Modality=MG","dicomweb_destination":"http://h:2/dw"}]'


def test_remove_list_builds_the_stage_on_the_default_route_and_every_rule() -> None:
    data, _ = translate(
        [
            *GUIDE,
            "--redact_remove_list=ContentTime,ContentDate",
            f"--destination_config_inline={ROUTES}",
        ],
        "import",
    )
    assert data["stages"][REDACT_STAGE] == {
        "kind": "deidentify",
        "profile": "redact",
        "burned_in": "pass",
        "remove_list": ["ContentTime", "ContentDate"],
    }
    routing = data["importer"]["routing"]
    assert routing["default_stages"] == [REDACT_STAGE]
    assert all(rule["stages"] == [REDACT_STAGE] for rule in routing["rules"])
    site = load_config_data(data, "flags")
    cfg = site.plugins["importer"]
    assert isinstance(cfg, ImporterConfig)
    stage = site.core.stages[REDACT_STAGE]  # type: ignore[attr-defined]
    assert isinstance(stage, DeidentifyStageConfig) and stage.remove_list == (
        "ContentTime",
        "ContentDate",
    )


def test_keep_list_and_the_profile() -> None:
    data, _ = translate([*GUIDE, "--redact_keep_list=PatientID,00080016"], "import")
    assert data["stages"][REDACT_STAGE]["keep_list"] == ["PatientID", "00080016"]
    for name in ("CHC_BASIC", "TAG_FILTER_PROFILE_UNSPECIFIED"):
        data, _ = translate([*GUIDE, f"--redact_filter_profile={name}"], "import")
        assert data["stages"][REDACT_STAGE]["filter_profile"] == "CHC_BASIC"
        load_config_data(data, "flags")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--redact_remove_list=PatientName", "--redact_keep_list=PatientID"], "Only one of"),
        (["--redact_filter_profile=STRICT"], "unknown profile 'STRICT'"),
        (["--redact_remove_list=PatientName,NoSuchTag"], "failed to recognize DICOM tag"),
        (["--redact_remove_list=PatientName,,PatientID"], "failed to recognize DICOM tag: ''"),
    ],
)
def test_what_the_java_adapter_refused_is_refused(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        translate([*GUIDE, *flags], "import")


def test_an_empty_value_is_no_redaction_and_spaces_are_warned_about() -> None:
    data, _ = translate([*GUIDE, "--redact_remove_list="], "import")
    assert "stages" not in data
    data, warnings = translate([*GUIDE, "--redact_remove_list=PatientName, PatientID,"], "import")
    assert data["stages"][REDACT_STAGE]["remove_list"] == ["PatientName", "PatientID"]
    assert any("' PatientID'" in w for w in warnings)


def test_the_redact_stage_goes_before_a_stage_already_there() -> None:
    data = {
        "importer": {
            "routing": {
                "default_stages": ["legacy-transcode"],
                "rules": [
                    {"name": "r", "destinations": ["x"], "stages": ["legacy-transcode"]},
                    {"name": "d", "drop": True},
                ],
            }
        }
    }
    add_stage_to_every_route(data, REDACT_STAGE, first=True)
    routing = data["importer"]["routing"]
    assert routing["default_stages"] == [REDACT_STAGE, "legacy-transcode"]
    assert routing["rules"][0]["stages"] == [REDACT_STAGE, "legacy-transcode"]
    assert "stages" not in routing["rules"][1]
