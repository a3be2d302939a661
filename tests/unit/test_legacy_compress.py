"""--store_compress_to_transfer_syntax: a ``legacy-compress`` transcode stage on every import
route, after the de-identification stage (``legacy-redact``) when there is one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapter.config import load_config_data
from adapter.errors import ConfigError
from adapter.legacy_flags import translate
from adapter.legacy_routing import COMPRESS_STAGE, append_stage, compress_stage
from adapter.stages.config import TranscodeStageConfig
from importer.config import ImporterConfig

HCAPI = "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s"
GUIDE_ARGS = ["--dimse_aet=IMPORTADAPTER", "--dimse_port=2575", f"--dicomweb_address={HCAPI}"]
J2K = "--store_compress_to_transfer_syntax=1.2.840.10008.1.2.4.90"


def test_compression_flag_builds_a_transcode_stage_on_the_default_route() -> None:
    data, _ = translate([*GUIDE_ARGS, J2K], "import")
    site = load_config_data(data, "import flags")
    stage = site.core.stages[COMPRESS_STAGE]
    assert isinstance(stage, TranscodeStageConfig)
    assert stage.transfer_syntax == "1.2.840.10008.1.2.4.90" and stage.lossy is None
    cfg = site.plugins["importer"]
    assert isinstance(cfg, ImporterConfig)
    assert cfg.routing.default_stages == (COMPRESS_STAGE,)


def test_compression_flag_goes_on_every_legacy_rule_but_drop_rules() -> None:
    routes = [
        {"filter": "Modality=CT", "dicomweb_destination": "http://a/dicomWeb"},
        {"filter": "Modality=MR", "dicomweb_destination": "http://b/dicomWeb"},
    ]
    data, _ = translate(
        [*GUIDE_ARGS, f"--destination_config_inline={json.dumps(routes)}", J2K], "import"
    )
    site = load_config_data(data, "import flags")
    cfg = site.plugins["importer"]
    assert isinstance(cfg, ImporterConfig)
    assert [r.stages for r in cfg.routing.rules] == [(COMPRESS_STAGE,), (COMPRESS_STAGE,)]
    assert cfg.routing.default_stages == (COMPRESS_STAGE,)


def test_compression_runs_after_the_redaction_stage() -> None:
    """The de-identification translation puts ``legacy-redact`` on the routes first."""
    data: dict[str, Any] = {
        "importer": {"routing": {"rules": [{"name": "r", "destinations": ["x"]}]}}
    }
    append_stage(data, "legacy-redact")
    compress_stage(data, {"compress_to": "1.2.840.10008.1.2.5"})
    routing = data["importer"]["routing"]
    assert routing["default_stages"] == ["legacy-redact", COMPRESS_STAGE]
    assert routing["rules"][0]["stages"] == ["legacy-redact", COMPRESS_STAGE]
    assert data["stages"][COMPRESS_STAGE] == {
        "kind": "transcode",
        "transfer_syntax": "1.2.840.10008.1.2.5",
    }


def test_empty_value_is_the_java_default_no_transcoding() -> None:
    data, _ = translate([*GUIDE_ARGS, "--store_compress_to_transfer_syntax="], "import")
    assert "stages" not in data


@pytest.mark.parametrize(
    ("uid", "why"),
    [
        ("1.2.840.10008.1.2.4.50", "cannot be written"),
        ("1.2.840.10008.1.2.4.91", "is lossy: set its quality in a site YAML"),
    ],
)
def test_unwritable_or_lossy_targets_are_refused_by_name(uid: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"--store_compress_to_transfer_syntax: {uid} {why}"):
        translate([*GUIDE_ARGS, f"--store_compress_to_transfer_syntax={uid}"], "import")
