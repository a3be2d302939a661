"""The Java adapter's processing flags as ``stages:`` entries on every route.

``--redact_remove_list`` / ``--redact_keep_list`` / ``--redact_filter_profile`` (exactly one,
as in the Java adapter; an empty value counts as absent) become the ``legacy-redact`` stage
(``kind: deidentify, profile: redact``), put FIRST on the default route and on every legacy
rule: de-identify, then transcode, as the Java adapter chained them. Only
:mod:`adapter.legacy_flags` uses this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapter.errors import ConfigError
from adapter.stages.deidentify_config import parse_tag

__all__ = ["REDACT_FLAGS", "REDACT_STAGE", "add_stage_to_every_route", "redaction"]

REDACT_STAGE = "legacy-redact"
REDACT_FLAGS = ("redact_remove_list", "redact_keep_list", "redact_filter_profile")
#: TagFilterProfile.valueOf in the Java adapter: both names load the CHC_BASIC list.
_PROFILES = {"CHC_BASIC": "CHC_BASIC", "TAG_FILTER_PROFILE_UNSPECIFIED": "CHC_BASIC"}


def _tag_list(flag: str, value: str, warnings: list[str]) -> list[str]:
    """Java's ``split(",")`` (trailing empty items dropped); each a keyword or hex tag."""
    items = value.split(",")
    while items and items[-1] == "":
        items.pop()
    tags: list[str] = []
    for item in items:
        name = item.strip()
        if name != item:
            warnings.append(
                f"--{flag}: {item!r} read as {name!r} (the Java adapter refused the space)"
            )
        try:
            parse_tag(name)
        except ValueError:
            raise ConfigError(f"--{flag}: failed to recognize DICOM tag: {item!r}") from None
        tags.append(name)
    return tags


def add_stage_to_every_route(data: dict[str, Any], stage: str, first: bool) -> None:
    """Put ``stage`` on the default route and on every rule of ``importer.routing``."""
    routing = data.setdefault("importer", {}).setdefault("routing", {})
    routes = [routing, *routing.get("rules", [])]
    for i, route in enumerate(routes):
        key = "default_stages" if i == 0 else "stages"
        if route.get("drop"):
            continue
        names = [n for n in route.get(key, []) if n != stage]
        route[key] = [stage, *names] if first else [*names, stage]


def redaction(data: dict[str, Any], legacy: Mapping[str, Any], warnings: list[str]) -> None:
    """The redact flags -> the ``legacy-redact`` stage on every route (none: nothing)."""
    given = {f: legacy[f] for f in REDACT_FLAGS if legacy.get(f)}
    if not given:
        return
    if len(given) > 1:
        raise ConfigError(
            "Only one of 'redact' flags may be present: "
            + ", ".join(f"--{f}" for f in REDACT_FLAGS if f in given)
        )
    [(flag, value)] = given.items()
    stage: dict[str, Any] = {"kind": "deidentify", "profile": "redact", "burned_in": "pass"}
    if flag == "redact_filter_profile":
        if value not in _PROFILES:
            raise ConfigError(
                f"--redact_filter_profile: unknown profile {value!r} (values: CHC_BASIC)"
            )
        stage["filter_profile"] = _PROFILES[value]
    else:
        key = "remove_list" if flag == "redact_remove_list" else "keep_list"
        stage[key] = _tag_list(flag, value, warnings)
    data.setdefault("stages", {})[REDACT_STAGE] = stage
    add_stage_to_every_route(data, REDACT_STAGE, first=True)
