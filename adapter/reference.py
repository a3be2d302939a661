"""Files generated from the typed config: the site JSON Schema, the chart's values schema.

``python scripts/gen-config-doc.py`` writes them all (``--check`` fails when one is stale); the
tests compare the checked-in files with these functions, so a new key cannot go undocumented.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

__all__ = [
    "SITE_PREFIX",
    "chart_values_schema",
    "config_notes",
    "dump_json",
    "generated_files",
]

SITE_PREFIX = "site"
"""Definitions of the embedded site schema are ``#/definitions/site`` and ``site.<Model>``."""


_INLINE_SECRETS = ("credentials", "password", "private_key", "secret", "token")


def dump_json(data: Any) -> str:
    """The one JSON layout of every generated file (sorted keys, 2-space indent, final newline)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _rewrite_refs(node: Any) -> Any:
    """Point pydantic's ``#/$defs/X`` references at ``#/definitions/site.X``."""
    if isinstance(node, dict):
        return {k: _rewrite_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    if isinstance(node, str) and node.startswith("#/$defs/"):
        return f"#/definitions/{SITE_PREFIX}.{node.removeprefix('#/$defs/')}"
    return node


def chart_values_schema(current: dict[str, Any], site: dict[str, Any]) -> dict[str, Any]:
    """The chart's values.schema.json with ``config:`` checked by the whole site schema.

    ``current`` is the checked-in file: its chart keys and the chart's own extra rules for
    ``config:`` (the overlay: e.g. health must stay enabled) are kept; the site definitions are
    replaced, so running this again after a config change is all it takes.
    """
    schema = copy.deepcopy(current)
    definitions = {
        k: v
        for k, v in schema.get("definitions", {}).items()
        if k != SITE_PREFIX and not k.startswith(f"{SITE_PREFIX}.")
    }
    site = _rewrite_refs(copy.deepcopy(site))
    for name, sub in site.pop("$defs", {}).items():
        definitions[f"{SITE_PREFIX}.{name}"] = sub
    site.pop("$schema", None)
    definitions[SITE_PREFIX] = site
    auth = definitions.get(f"{SITE_PREFIX}.AuthConfig")
    if auth is not None:  # let the chart's template refuse inline secrets with its own message
        for key in _INLINE_SECRETS:
            auth["properties"][key] = {"description": "refused: put secrets in existingSecret"}
    schema["definitions"] = definitions
    config = schema["properties"]["config"]
    overlay = config["allOf"][1] if "allOf" in config else config
    overlay = {k: v for k, v in overlay.items() if k != "description"}
    schema["properties"]["config"] = {
        "description": "The adapter's site YAML, checked with the adapter's own schema "
        "(docs/configuration.md) plus the chart's rules for Kubernetes.",
        "allOf": [{"$ref": f"#/definitions/{SITE_PREFIX}"}, overlay],
    }
    return schema


def config_notes(repo: Path) -> dict[str, str]:
    """docs/configuration-keys.yaml: key descriptions the models do not carry."""
    import yaml

    data = yaml.safe_load((repo / "docs" / "configuration-keys.yaml").read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in (data or {}).items()}


def generated_files(repo: Path) -> dict[Path, str]:
    """Every generated file of the repository and its current content."""
    from adapter.cli import site_schema
    from adapter.config_doc import config_markdown

    site = site_schema()
    values_path = repo / "charts" / "dicom-adapter" / "values.schema.json"
    current = json.loads(values_path.read_text(encoding="utf-8"))
    return {
        repo / "configs" / "site.schema.json": json.dumps(site, indent=2, sort_keys=True) + "\n",
        values_path: dump_json(chart_values_schema(current, site)),
        repo / "docs" / "configuration.md": config_markdown(site, config_notes(repo)),
    }
