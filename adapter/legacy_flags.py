"""The Java adapter's command-line flags, translated into the same data a site YAML holds.

This is the only place those flags exist. Both ``--flag=value`` and ``--flag value`` work, as with
JCommander. Flags of features not built yet are refused by name, never silently ignored.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword

from adapter import lenient_json
from adapter.errors import ConfigError

__all__ = ["EXPORT_FLAGS", "IMPORT_FLAGS", "is_legacy_import_invocation", "translate"]

log = logging.getLogger(__name__)

Setter = Callable[[dict[str, Any], str], None]


@dataclass(frozen=True)
class Flag:
    """One legacy flag: whether it takes a value, and how it lands in the config data."""

    name: str
    help: str
    apply: Setter | None  # None = refused: "not supported yet"
    boolean: bool = False


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def _to(path: str, convert: Callable[[str], Any] = str) -> Setter:
    return lambda data, value: _set(data, path, convert(value))


def _int(flag: str) -> Callable[[str], int]:
    def convert(value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"--{flag}: expected an integer, got {value!r}") from None

    return convert


def _bool(flag: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("", "true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConfigError(f"--{flag}: expected true or false, got {value!r}")


def _scopes(data: dict[str, Any], value: str) -> None:
    scopes = [s.strip() for s in value.split(",") if s.strip()]
    data.setdefault("_legacy", {})["oauth_scopes"] = scopes


def _ms(path: str, flag: str) -> Setter:
    return lambda data, value: _set(data, path, _int(flag)(value) / 1000.0)


def _codes(data: dict[str, Any], value: str) -> None:
    codes = data.setdefault("retry", {}).setdefault("extra_http_statuses", [])
    for part in value.replace("[", "").replace("]", "").split(","):
        if part.strip():
            codes.append(_int("http_error_codes_to_retry")(part.strip()))


def _retry_amount(data: dict[str, Any], value: str) -> None:
    data.setdefault("_legacy", {})["retry_amount"] = _int("persistent_file_upload_retry_amount")(
        value
    )


def _storage(data: dict[str, Any], value: str) -> None:
    if value.startswith("gs://"):  # a bucket copy of a local working spool (no volume)
        bucket, _, folder = value[len("gs://") :].partition("/")
        data.setdefault("_legacy", {})["gcs_backup"] = (bucket, folder.strip("/"))
        value = str(Path(tempfile.gettempdir()) / "dicom-adapter" / "spool")
    _set(data, "importer.spool.path", value)
    data.setdefault("_legacy", {})["persistent"] = True


def _gcs_backup(data: dict[str, Any], legacy: dict[str, Any]) -> list[str]:
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
    _set(data, "importer.spool.backup", {"bucket": bucket, "prefix": folder, "project": project})
    return []


def _keep(key: str) -> Setter:
    """Keep the raw value for translate(), which resolves flags that depend on each other."""
    return lambda data, value: data.setdefault("_legacy", {}).__setitem__(key, value)


def _warn(flag: str, why: str) -> Setter:
    def apply(data: dict[str, Any], value: str) -> None:
        data.setdefault("_legacy", {}).setdefault("warnings", []).append(f"--{flag}: {why}")

    return apply


def _flag(name: str, help: str, apply: Setter | None, boolean: bool = False) -> Flag:
    return Flag(name, help, apply, boolean)


def _flag_bool(name: str, help: str, apply: Callable[[dict[str, Any], bool], None]) -> Flag:
    return Flag(name, help, lambda data, value: apply(data, _bool(name, value)), boolean=True)


_NOT_YET = "not supported yet"

IMPORT_FLAGS: dict[str, Flag] = {
    f.name: f
    for f in [
        _flag(
            "dimse_aet", "Title of our DIMSE Application Entity.", _to("importer.dimse.ae_title")
        ),
        _flag(
            "dimse_port", "Port for incoming DIMSE.", _to("importer.dimse.port", _int("dimse_port"))
        ),
        _flag("dicomweb_address", "DICOMweb root (up to /dicomWeb).", _to("dicomweb.url")),
        _flag(
            "dicomweb_addr",
            "Deprecated DICOMweb address (with --dicomweb_stow_path).",
            lambda d, v: d.setdefault("_legacy", {}).__setitem__("dicomweb_addr", v),
        ),
        _flag(
            "dicomweb_stow_path",
            "Deprecated STOW path appended to --dicomweb_addr.",
            lambda d, v: d.setdefault("_legacy", {}).__setitem__("dicomweb_stow_path", v),
        ),
        _flag("oauth_scopes", "Comma-separated OAuth scopes.", _scopes),
        _flag_bool(
            "verbose",
            "Debug logging.",
            lambda d, on: _set(d, "log.level", "DEBUG" if on else "INFO"),
        ),
        _flag(
            "persistent_file_storage_location",
            "Spool directory (local path), or gs://BUCKET/FOLDER: a bucket copy of the spool.",
            _storage,
        ),
        _flag("persistent_file_upload_retry_amount", "Upload retries.", _retry_amount),
        _flag(
            "min_upload_delay",
            "First retry delay (ms).",
            _ms("retry.initial_delay", "min_upload_delay"),
        ),
        _flag(
            "max_waiting_time_between_uploads",
            "Longest retry delay (ms).",
            _ms("retry.max_delay", "max_waiting_time_between_uploads"),
        ),
        _flag(
            "max_waiting_time_btw_uploads",
            "Longest retry delay (ms), older name.",
            _ms("retry.max_delay", "max_waiting_time_btw_uploads"),
        ),
        _flag("http_error_codes_to_retry", "Extra HTTP codes to retry (comma-separated).", _codes),
        _flag_bool(
            "auto_ack_cstore",
            "Answer C-STORE once spooled, before upload.",
            lambda d, on: d.setdefault("_legacy", {}).__setitem__("auto_ack", on),
        ),
        _flag_bool(
            "stow_overwrite",
            "On 409, delete and store again.",
            lambda d, on: _set(d, "importer.upload.on_conflict", "overwrite" if on else "done"),
        ),
        _flag(
            "monitoring_project_id",
            "Stackdriver monitoring (replaced by /metrics).",
            _warn(
                "monitoring_project_id",
                "Stackdriver monitoring is replaced by Prometheus metrics on /metrics",
            ),
        ),
        _flag_bool(
            "stow_http2",
            "HTTP/2 for STOW.",
            lambda d, on: _warn(
                "stow_http2",
                "HTTP/1.1 with pooled keep-alive "
                "connections and concurrent batched uploads is used",
            )(d, ""),
        ),
        _flag(
            "dimse_cmove_aet",
            "Calling AE title of C-MOVE sub-operations (and of C-STOREs to routed PACSs).",
            _keep("cmove_aet"),
        ),
        _flag(
            "aet_dictionary",
            "C-MOVE destinations: JSON file [{name, host, port}] (else env ENV_AETS_JSON).",
            _keep("aet_dictionary"),
        ),
        _flag(
            "aet_dictionary_inline",
            "C-MOVE destinations: JSON [{name, host, port}] (wins over --aet_dictionary).",
            _keep("aet_dictionary_inline"),
        ),
        _flag(
            "destination_config_path",
            "Routing: JSON file [{filter, dicomweb_destination}] (else env "
            "ENV_DESTINATION_CONFIG_JSON).",
            _keep("destination_config_path"),
        ),
        _flag(
            "destination_config_inline",
            "Routing: JSON [{filter, dicomweb_destination}] (wins over the path).",
            _keep("destination_config_inline"),
        ),
        _flag_bool(
            "send_to_all_matching_destinations",
            "Routing: every matching destination, not the first; entries may be PACSs "
            "{filter, name, host, port}.",
            lambda d, on: d.setdefault("_legacy", {}).__setitem__("send_to_all", on),
        ),
        _flag("redact_remove_list", "Redaction.", None),
        _flag("redact_keep_list", "Redaction.", None),
        _flag("redact_filter_profile", "Redaction.", None),
        _flag("store_compress_to_transfer_syntax", "Transcoding before upload.", None),
        _flag("fuzzy_matching", "C-FIND fuzzy person-name matching.", None, boolean=True),
        _flag(
            "gcs_backup_project_id",
            "Project of the gs:// --persistent_file_storage_location.",
            lambda d, v: d.setdefault("_legacy", {}).__setitem__("gcs_project", v),
        ),
    ]
}

EXPORT_FLAGS: dict[str, Flag] = {
    f.name: f
    for f in [
        _flag(
            "peer_dimse_aet",
            "AE title of the PACS to C-STORE to.",
            _to("exporter.destination.ae_title"),
        ),
        _flag("peer_dimse_ip", "Host of the PACS.", _to("exporter.destination.host")),
        _flag(
            "peer_dimse_port",
            "Port of the PACS.",
            _to("exporter.destination.port", _int("peer_dimse_port")),
        ),
        _flag("client_aet", "Our calling AE title.", _to("exporter.destination.calling_ae_title")),
        _flag(
            "peer_dicomweb_address",
            "STOW-RS destination (DICOMweb root).",
            _to("exporter.destination.url"),
        ),
        _flag(
            "peer_dicomweb_addr",
            "Deprecated STOW-RS destination address.",
            lambda d, v: d.setdefault("_legacy", {}).__setitem__("peer_dicomweb_addr", v),
        ),
        _flag(
            "peer_dicomweb_stow_path",
            "Deprecated STOW path for --peer_dicomweb_addr.",
            lambda d, v: d.setdefault("_legacy", {}).__setitem__("peer_dicomweb_stow_path", v),
        ),
        _flag_bool(
            "use_gcp_application_default_credentials",
            "Google credentials for the peer.",
            lambda d, on: d.setdefault("_legacy", {}).__setitem__("peer_google", on),
        ),
        _flag("dicomweb_addr", "DICOMweb API that sources the instances.", _to("dicomweb.url")),
        _flag("project_id", "Pub/Sub project.", _to("exporter.pubsub.project")),
        _flag("subscription_id", "Pub/Sub subscription.", _to("exporter.pubsub.subscription")),
        _flag("oauth_scopes", "Comma-separated OAuth scopes.", _scopes),
        _flag_bool(
            "verbose",
            "Debug logging.",
            lambda d, on: _set(d, "log.level", "DEBUG" if on else "INFO"),
        ),
        _flag(
            "monitoring_project_id",
            "Stackdriver monitoring (replaced by /metrics).",
            _warn(
                "monitoring_project_id",
                "Stackdriver monitoring is replaced by Prometheus metrics on /metrics",
            ),
        ),
    ]
}


def is_legacy_import_invocation(argv: Sequence[str]) -> bool:
    """True when argv starts with a Java import flag (the GKE guide's args, no subcommand)."""
    return bool(argv) and argv[0].startswith("--") and argv[0][2:].split("=")[0] in IMPORT_FLAGS


def _parse(argv: Sequence[str], flags: dict[str, Flag], command: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"{command}: unexpected argument {arg!r} (flags start with --)")
        name, eq, value = arg[2:].partition("=")
        flag = flags.get(name)
        if flag is None:
            raise ConfigError(
                f"{command}: unknown flag --{name}; see 'dicom-adapter {command} --help'"
            )
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if flag.boolean:
                if nxt is not None and nxt.lower() in ("true", "false"):
                    value, i = nxt, i + 1
                else:
                    value = "true"
            elif nxt is None or (nxt.startswith("--") and nxt[2:].split("=")[0] in flags):
                raise ConfigError(f"--{name}: expected a value")
            else:
                value, i = nxt, i + 1
        if flag.apply is None:
            raise ConfigError(
                f"{_NOT_YET}: --{name} ({flag.help.rstrip('.')}); remove it or use a site YAML"
            )
        flag.apply(data, value)
        i += 1
    return data


def _join_stow(addr: str, stow_path: str, flag: str) -> str:
    path = "/" + stow_path.strip("/") if stow_path.strip("/") else ""
    if path and not path.endswith("/studies"):
        raise ConfigError(f"--{flag}: expected a path ending in /studies, got {stow_path!r}")
    return addr.rstrip("/") + path[: -len("/studies")]


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


def _aet_dictionary(
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
    _set(data, "importer.move_destinations", entries)


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


def _destination_config(
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
    _set(data, "importer.routing", {"mode": "all" if send_to_all else "first", "rules": rules})


def translate(
    argv: Sequence[str], command: str, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Turn Java flags (``command`` import or export) into site-config data and warnings;
    ``environ`` (default: the process's) holds ENV_AETS_JSON / ENV_DESTINATION_CONFIG_JSON."""
    environ = os.environ if environ is None else environ
    flags = IMPORT_FLAGS if command == "import" else EXPORT_FLAGS
    data = _parse(argv, flags, command)
    legacy = data.pop("_legacy", {})
    warnings: list[str] = list(legacy.get("warnings", []))
    if legacy.get("oauth_scopes"):
        _set(data, "dicomweb.auth.scopes", legacy["oauth_scopes"])
    if command == "import":
        importer = data.setdefault("importer", {})
        importer["enabled"] = True
        if "dicomweb" not in data and "dicomweb_addr" in legacy:
            _set(
                data,
                "dicomweb.url",
                _join_stow(
                    legacy["dicomweb_addr"],
                    legacy.get("dicomweb_stow_path", ""),
                    "dicomweb_stow_path",
                ),
            )
        if "dicomweb" not in data or "url" not in data["dicomweb"]:
            raise ConfigError("import: --dicomweb_address is required")
        if "ae_title" not in importer.get("dimse", {}):
            raise ConfigError("import: --dimse_aet must be set")
        warnings += _gcs_backup(data, legacy)
        # Java semantics: without a persistent location (or without --auto_ack_cstore) the
        # C-STORE is answered only after the upload, so a pod restart cannot lose an ack'ed image.
        persistent = legacy.get("persistent", False)
        importer["ack"] = "after-spool" if persistent and legacy.get("auto_ack") else "after-upload"
        if legacy.get("auto_ack") and not persistent:
            raise ConfigError(
                "--auto_ack_cstore requires --persistent_file_storage_location (a durable path)"
            )
        if not persistent:
            _set(data, "importer.spool.path", "/tmp/dicom-adapter/spool")
        if "retry_amount" in legacy:
            _set(data, "retry.max_attempts", legacy["retry_amount"] + 1)
        if legacy.get("cmove_aet"):
            _set(data, "importer.query.move_calling_ae_title", legacy["cmove_aet"])
        _aet_dictionary(data, legacy, environ, warnings)
        _destination_config(data, legacy, environ, warnings)
    else:
        exporter = data.setdefault("exporter", {})
        exporter["enabled"] = True
        dest = exporter.setdefault("destination", {})
        if "url" not in dest and "peer_dicomweb_addr" in legacy:
            dest["url"] = _join_stow(
                legacy["peer_dicomweb_addr"],
                legacy.get("peer_dicomweb_stow_path", ""),
                "peer_dicomweb_stow_path",
            )
        if "url" in dest:
            dest["kind"] = "dicomweb"
            if legacy.get("peer_google"):
                dest.setdefault("auth", {})["kind"] = "google"
        else:
            dest["kind"] = "dimse"
    for warning in warnings:
        log.warning("legacy flag accepted with a difference: %s", warning)
    return data, warnings


def flags_help(command: str) -> str:
    """The legacy flags of ``command`` for --help, marking those not supported yet."""
    flags = IMPORT_FLAGS if command == "import" else EXPORT_FLAGS
    lines = []
    for flag in flags.values():
        mark = "" if flag.apply is not None else f"  [{_NOT_YET}]"
        lines.append(f"  --{flag.name}{'' if flag.boolean else '=VALUE'}\n      {flag.help}{mark}")
    return "\n".join(lines)
