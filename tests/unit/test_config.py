"""Site YAML validation: errors name the key path, what was expected and what was found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adapter.cli import site_schema
from adapter.config import load_config, load_config_data, load_config_text
from adapter.errors import ConfigError
from importer.config import ImporterConfig

REPO = Path(__file__).resolve().parents[2]
BASE = {"dicomweb": {"url": "http://127.0.0.1:8042/dicom-web"}}


def error_of(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_data(data, source="site.yaml")
    return str(info.value)


def test_non_numeric_port_names_key_expected_and_found() -> None:
    msg = error_of({**BASE, "importer": {"dimse": {"port": "abc"}}})
    assert "importer.dimse.port: expected an integer 1-65535, got 'abc'" in msg
    assert msg.startswith("site.yaml: invalid configuration")


def test_port_out_of_range_is_refused() -> None:
    assert "importer.dimse.port: expected an integer 1-65535, got 70000" in error_of(
        {**BASE, "importer": {"dimse": {"port": 70000}}}
    )


def test_unknown_keys_are_refused_at_every_level() -> None:
    msg = error_of({**BASE, "importr": {}, "importer": {"spool": {"pth": "/x"}}})
    assert "importr: unknown key" in msg
    assert "importer.spool.pth: unknown key" in msg


def test_every_problem_is_reported_at_once() -> None:
    msg = error_of({**BASE, "importer": {"dimse": {"port": "x", "ae_title": "A" * 17}}})
    assert "importer.dimse.port" in msg and "importer.dimse.ae_title" in msg


def test_enum_values_are_listed() -> None:
    msg = error_of({**BASE, "importer": {"ack": "whenever"}})
    assert "importer.ack: expected 'after-spool' or 'after-upload', got 'whenever'" in msg


def test_inline_secret_is_refused_with_the_alternative() -> None:
    msg = error_of(
        {"dicomweb": {"url": "http://x/dicom-web", "auth": {"kind": "bearer", "token": "s3cr3t"}}}
    )
    assert "dicomweb.auth: secrets never live in the YAML: use token_env or token_file" in msg
    assert "s3cr3t" not in msg


def test_bearer_auth_needs_a_token_source() -> None:
    assert "kind 'bearer' needs token_env or token_file" in error_of(
        {"dicomweb": {"url": "http://x/dicom-web", "auth": {"kind": "bearer"}}}
    )


def test_importer_without_a_store_is_refused() -> None:
    assert "importer.dicomweb: required key is missing" in error_of({"importer": {}})


def test_bad_url_is_refused() -> None:
    assert "dicomweb.url: expected an http(s) URL" in error_of({"dicomweb": {"url": "ftp://x"}})


def test_exporter_destination_kind_selects_its_fields() -> None:
    msg = error_of(
        {
            **BASE,
            "exporter": {
                "pubsub": {"project": "p", "subscription": "s"},
                "destination": {"kind": "dimse", "host": "h"},
            },
        }
    )
    assert "exporter.destination.dimse.ae_title: required key is missing" in msg
    assert "exporter.destination.dimse.port: required key is missing" in msg


def test_yaml_syntax_error_reports_line_and_column() -> None:
    with pytest.raises(ConfigError, match=r"YAML syntax error at line 3, column \d+"):
        load_config_text("importer:\n  dimse: {port: 1\n  ack: x\n", "site.yaml")


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config_text("- a\n- b\n", "site.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_sizes_accept_units_and_defaults_fill_in() -> None:
    site = load_config_data({**BASE, "importer": {"spool": {"max_bytes": "2GiB"}}})
    cfg = site.plugins["importer"]
    assert isinstance(cfg, ImporterConfig)
    assert cfg.spool.max_bytes == 2 * 1024**3
    assert cfg.dimse.port == 2575 and cfg.dimse.ae_title == "IMPORTADAPTER"
    assert cfg.ack == "after-spool"
    assert site.enabled_plugins() == ["importer"]


def test_config_objects_are_frozen() -> None:
    site = load_config_data(BASE)
    with pytest.raises(Exception, match="frozen"):
        site.core.retry.max_attempts = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["local.yaml", "gke-healthcare.yaml", "routed-site.yaml"])
def test_shipped_example_configs_are_valid(name: str) -> None:
    site = load_config(REPO / "configs" / name)
    assert "importer" in site.enabled_plugins()


def test_committed_json_schema_matches_the_models() -> None:
    committed = json.loads((REPO / "configs" / "site.schema.json").read_text())
    assert committed == json.loads(json.dumps(site_schema())), (
        "configs/site.schema.json is stale: run `dicom-adapter schema > configs/site.schema.json`"
    )


@pytest.mark.parametrize("name", ["local.yaml", "gke-healthcare.yaml", "routed-site.yaml"])
def test_example_configs_validate_against_the_json_schema(name: str) -> None:
    import jsonschema

    schema = json.loads((REPO / "configs" / "site.schema.json").read_text())
    data = yaml.safe_load((REPO / "configs" / name).read_text())
    jsonschema.validate(data, schema)
