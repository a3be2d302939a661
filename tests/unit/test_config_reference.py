"""Files generated from the typed config stay current: the site schema, the chart's values schema
and docs/configuration.md (regenerate all with `python scripts/gen-config-doc.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.cli import site_schema
from adapter.config_doc import blocks, undocumented_keys
from adapter.reference import SITE_PREFIX, config_notes, generated_files

REPO = Path(__file__).resolve().parents[2]
GENERATED = generated_files(REPO)


@pytest.mark.parametrize("path", sorted(GENERATED), ids=lambda p: str(p.relative_to(REPO)))
def test_generated_file_is_current(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == GENERATED[path], (
        f"{path.relative_to(REPO)} is stale: run `python scripts/gen-config-doc.py`"
    )


def test_every_key_has_a_description() -> None:
    missing = undocumented_keys(site_schema(), config_notes(REPO))
    assert missing == [], (
        f"describe {missing} with Field(description=...) or in docs/configuration-keys.yaml"
    )


def test_reference_lists_every_key_with_type_and_default() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    found = blocks(site_schema(), config_notes(REPO))
    assert sum(len(b.keys) for b in found) >= 100
    for block in found:
        assert (f"## `{block.path}`" if block.path else "## Top level") in text
        for key in block.keys:
            assert key.type and key.default
            assert f"| `{key.path}` | {key.type} | {key.default} |" in text
    for needle in ("move_destinations", "tls", "max_associations", "filters", "emulator_host"):
        assert f"`{needle}`" in text


def test_chart_values_schema_embeds_the_site_schema() -> None:
    chart = json.loads((REPO / "charts/dicom-adapter/values.schema.json").read_text())
    config = chart["properties"]["config"]
    assert config["allOf"][0] == {"$ref": f"#/definitions/{SITE_PREFIX}"}
    site = site_schema()
    assert set(chart["definitions"][SITE_PREFIX]["properties"]) == set(site["properties"])
    for name in site["$defs"]:
        assert f"{SITE_PREFIX}.{name}" in chart["definitions"]
    assert "$defs" not in json.dumps(chart)


def test_gen_config_doc_check_passes_on_the_checked_in_files() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen-config-doc.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_local_yaml_says_where_the_other_keys_are() -> None:
    local = (REPO / "configs" / "local.yaml").read_text()
    assert "docs/configuration.md" in local
    readme = (REPO / "README.md").read_text()
    assert "every key commented" not in readme
    assert "docs/configuration.md" in readme
