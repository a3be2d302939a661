"""The Java adapter's JSON flags and its routing: the AE dictionary and the destination config
(``--destination_config_*``, ``ENV_DESTINATION_CONFIG_JSON``) read as leniently as its org.json
parser read them, the filters turned into routing rules; and the gs:// spool backup. Only
:mod:`adapter.legacy_flags` uses this module."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword

from adapter import lenient_json
from adapter.errors import ConfigError

log = logging.getLogger(__name__)


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


# ------------------------------------------------------------------ JSON flags and routing
ENV_AETS_JSON = "ENV_AETS_JSON"
ENV_DESTINATION_CONFIG_JSON = "ENV_DESTINATION_CONFIG_JSON"
_AE_TITLE_KEY = "AETitle"  # the Java filter's key for the calling AE title


def _json_source(
    legacy: Mapping[str, Any], inline: str, path: str, env_key: str, environ: Mapping[str, str]
) -> tuple[str, str] | None:
    """The JSON text and where it came from, in the Java adapter's order: the inline flag,
    else the file flag, else the environment variable (each only when non-empty/set)."""
    if legacy.get(inline):
        return legacy[inline], f"--{inline}"
    if legacy.get(path):
        try:
            return Path(legacy[path]).read_text(encoding="utf-8"), f"--{path} {legacy[path]}"
        except OSError as exc:
            raise ConfigError(f"--{path}: cannot read {legacy[path]}: {exc.strerror}") from None
    if env_key in environ:
        return environ[env_key], env_key
    return None


def _json_array(text: str, where: str, what: str, warnings: list[str]) -> list[Any]:
    """A lenient JSON array (as the Java adapter's org.json read it)."""
    try:
        value, rest = lenient_json.loads_leading(text)
    except lenient_json.LenientJsonError as exc:
        raise ConfigError(f"{where}: expected a JSON array of {what}: {exc}") from None
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a JSON array of {what}, got {type(value).__name__}")
    if rest:
        shown = rest if len(rest) <= 20 else rest[:17] + "..."
        warnings.append(
            f"{where}: text after the JSON array ignored, as the Java adapter did: {shown!r}"
        )
    return value


def _entry(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object {what}, got {value!r}")
    return value


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    if key not in entry:
        raise ConfigError(f"{where}: mandatory key absent: {key}")
    value = entry[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key}: expected a string, got {value!r}")
    return value


def _java_int(value: Any) -> Any:
    """org.json getInt: a number (truncated) or a numeric string; else left for validation."""
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return int(value)
    return value


def _ae_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """{name, host, port} of an AE entry; other keys are ignored, as the Java adapter did
    (missing ones are reported by the config validation)."""
    out = {k: entry[k] for k in ("name", "host", "port") if k in entry}
    if "port" in out:
        out["port"] = _java_int(out["port"])
    return out


def aet_dictionary(
    data: dict[str, Any], legacy: Mapping[str, Any], environ: Mapping[str, str], warn: list[str]
) -> None:
    source = _json_source(legacy, "aet_dictionary_inline", "aet_dictionary", ENV_AETS_JSON, environ)
    if source is None:
        return
    text, where = source
    what = "{name, host, port}"
    entries = [
        _ae_entry(_entry(e, f"{where}: entry {i}", what))
        for i, e in enumerate(_json_array(text, where, what, warn), 1)
    ]
    set_path(data, "importer.move_destinations", entries)


def _java_split(text: str, sep: str) -> list[str]:
    """Java's String.split: trailing empty strings are dropped."""
    parts = text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def _filter_attribute(key: str, where: str) -> str:
    """dcm4che's TagUtils.forName: hexadecimal digits are a tag, else a PS3.6 keyword."""
    if re.fullmatch(r"[0-9A-Fa-f]{1,8}", key):
        return f"{int(key, 16):08X}"
    if not key or tag_for_keyword(key) is None:
        raise ConfigError(f"{where}: invalid tag in filter string: {key!r}")
    return key


def _value_test(attribute: str, value: str) -> dict[str, Any]:
    """dcm4che's Attributes.matches on one key: backslash-separated values, any may match;
    a value with * or ? is a wildcard; otherwise equal, case-sensitive."""
    values = [v.strip(" ") for v in value.split("\\")]
    plain = [v for v in values if "*" not in v and "?" not in v]
    tests: list[dict[str, Any]] = [
        {"attribute": attribute, "wildcard": v} for v in values if v not in plain
    ]
    if plain:
        tests.insert(0, {"attribute": attribute, "equals": plain if len(plain) > 1 else plain[0]})
    return tests[0] if len(tests) == 1 else {"any": tests}


def filter_condition(text: str, where: str = "filter") -> dict[str, Any]:
    """The Java DestinationFilter ``AETitle=X&Modality=MG`` as a routing-rule condition:
    every ``KEY=VALUE`` must hold; ``AETitle`` is the calling AE title (exact), other keys are
    DICOM keywords or hex tags; an empty filter matches every instance."""
    calling_ae: str | None = None
    keys: dict[str, str] = {}  # a repeated key: the last one counts, as in Java
    for param in _java_split(text, "&") if text else []:
        key_value = _java_split(param, "=")
        if len(key_value) != 2:
            raise ConfigError(f"{where}: invalid filter parameter {param!r} (expected KEY=VALUE)")
        key, value = key_value
        if key == _AE_TITLE_KEY:
            calling_ae = value
        else:
            keys[_filter_attribute(key, where)] = value
    tests = [] if calling_ae is None else [{"attribute": "calling_ae", "equals": calling_ae}]
    tests += [_value_test(attribute, value) for attribute, value in keys.items()]
    if not tests:
        return {}
    return tests[0] if len(tests) == 1 else {"all": tests}


def _dicomweb_root(url: str) -> str:
    """The Java adapter posted to ``<url>/studies`` (or to the url itself if it ends so)."""
    trimmed = url.strip("/")
    return trimmed[: -len("/studies")] if trimmed.endswith("/studies") else trimmed


def destination_config(
    data: dict[str, Any], legacy: Mapping[str, Any], environ: Mapping[str, str], warn: list[str]
) -> None:
    """The Java destination config -> named destinations and ``importer.routing`` rules."""
    source = _json_source(
        legacy,
        "destination_config_inline",
        "destination_config_path",
        ENV_DESTINATION_CONFIG_JSON,
        environ,
    )
    send_to_all = bool(legacy.get("send_to_all"))
    if send_to_all and not legacy.get("persistent"):
        warn.append(
            "--send_to_all_matching_destinations: accepted without "
            "--persistent_file_storage_location (the Java adapter required a backup; every "
            "instance is spooled here before delivery)"
        )
    if source is None:
        return
    text, where = source
    what = "{filter, dicomweb_destination}"
    entries = _json_array(text, where, what, warn)
    auth = copy.deepcopy(data.get("dicomweb", {}).get("auth"))
    overwrite = data.get("importer", {}).get("upload", {}).get("on_conflict") == "overwrite"
    calling_ae = legacy.get("cmove_aet") or data.get("importer", {}).get("dimse", {}).get(
        "ae_title"
    )
    destinations: dict[str, Any] = {}
    rules: list[dict[str, Any]] = []
    filters: set[str] = set()
    for i, raw in enumerate(entries, 1):
        at = f"{where}: entry {i}"
        entry = _entry(raw, at, what)
        text_filter = _text(entry, "filter", at)
        name = f"legacy-{i}"
        if send_to_all:
            text_filter = text_filter.strip("/")  # as the Java multiple-destination mode did
            dimse = entry if "host" in entry else entry.get("dimse_destination")
        else:
            if text_filter in filters:
                raise ConfigError(
                    f"{at}: duplicate filter {text_filter!r} in the destination config; use "
                    "--send_to_all_matching_destinations for multiple destination filtering mode"
                )
            filters.add(text_filter)
            dimse = None
            if "dicomweb_destination" not in entry and (
                "host" in entry or "dimse_destination" in entry
            ):
                raise ConfigError(
                    f"{at}: a PACS destination {{name, host, port}} needs "
                    "--send_to_all_matching_destinations (as in the Java adapter)"
                )
        if dimse is not None:
            pacs = _ae_entry(_entry(dimse, at, "{name, host, port}"))
            destinations[name] = {
                "kind": "dimse",
                "ae_title": pacs.get("name"),
                "host": pacs.get("host"),
                "port": pacs.get("port"),
                **({"calling_ae_title": calling_ae} if calling_ae else {}),
            }
        else:
            url = _dicomweb_root(_text(entry, "dicomweb_destination", at))
            destinations[name] = {
                "kind": "dicomweb",
                "url": url,
                **({"auth": copy.deepcopy(auth)} if auth else {}),
                **({"on_conflict": "overwrite"} if overwrite else {}),
            }
        rules.append(
            {"name": name, "match": filter_condition(text_filter, at), "destinations": [name]}
        )
    data.setdefault("destinations", {}).update(destinations)
    set_path(data, "importer.routing", {"mode": "all" if send_to_all else "first", "rules": rules})


def gcs_backup(data: dict[str, Any], legacy: dict[str, Any]) -> list[str]:
    """The Java GcpBackupUploader's checks: gs://bucket/folder needs --gcs_backup_project_id
    (and the project alone does nothing). Returns warnings."""
    project = legacy.get("gcs_project", "")
    if "gcs_backup" not in legacy:
        return (
            ["--gcs_backup_project_id: ignored without --persistent_file_storage_location=gs://..."]
            if project
            else []
        )
    bucket, folder = legacy["gcs_backup"]
    if not (bucket and folder):
        raise ConfigError("--persistent_file_storage_location: expected gs://BUCKET/FOLDER")
    if not project:
        raise ConfigError(
            "--persistent_file_storage_location=gs://...: needs --gcs_backup_project_id"
        )
    set_path(
        data, "importer.spool.backup", {"bucket": bucket, "prefix": folder, "project": project}
    )
    return []


# ------------------------------------------------------------------ stages
COMPRESS_STAGE = "legacy-compress"


def append_stage(data: dict[str, Any], name: str) -> None:
    """Add stage ``name`` at the end of every import route: the default route and each rule
    (drop rules have no stages)."""
    routing = data.setdefault("importer", {}).setdefault("routing", {})
    routing["default_stages"] = [*routing.get("default_stages", []), name]
    for rule in routing.get("rules", []):
        if not rule.get("drop"):
            rule["stages"] = [*rule.get("stages", []), name]


def compress_stage(data: dict[str, Any], legacy: Mapping[str, Any]) -> None:
    """``--store_compress_to_transfer_syntax=UID``: a transcode stage ``legacy-compress`` on every
    route, after the de-identification stage (call this after the redaction's translation)."""
    from adapter.stages.transcode_config import LOSSLESS_TARGETS, LOSSY_TARGETS

    uid = str(legacy.get("compress_to") or "").strip()
    if not uid:
        return  # the Java default: no transcoding
    if uid not in LOSSLESS_TARGETS:
        have = ", ".join(f"{u} ({n})" for u, n in LOSSLESS_TARGETS.items())
        why = (
            "is lossy: set its quality in a site YAML transcode stage (lossy: ...)"
            if uid in LOSSY_TARGETS
            else "cannot be written"
        )
        raise ConfigError(f"--store_compress_to_transfer_syntax: {uid} {why} (have: {have})")
    data.setdefault("stages", {})[COMPRESS_STAGE] = {"kind": "transcode", "transfer_syntax": uid}
    append_stage(data, COMPRESS_STAGE)
