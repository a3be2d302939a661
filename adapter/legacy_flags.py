"""The Java adapter's command-line flags, translated into the same data a site YAML holds.

This is the only place those flags exist. Both ``--flag=value`` and ``--flag value`` work, as with
JCommander. Flags of features not built yet are refused by name, never silently ignored.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapter.errors import ConfigError
from adapter.legacy_routing import aet_dictionary, compress_stage, destination_config, gcs_backup
from adapter.legacy_routing import set_path as _set
from adapter.legacy_stages import REDACT_FLAGS as R
from adapter.legacy_stages import redaction

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

# ---------------------------------------------------------------- our own flags (legacy mode)
#: Where a legacy-mode process listens and keeps its files: our flags, else these environment
#: variables, else defaults that let an importer and an exporter share a host.
OWN_ENV = {
    "health_port": "DICOM_ADAPTER_HEALTH_PORT",
    "state_dir": "DICOM_ADAPTER_STATE_DIR",
    "spool_dir": "DICOM_ADAPTER_SPOOL_DIR",
    "export_state_dir": "DICOM_ADAPTER_EXPORT_STATE_DIR",
}
_HEALTH_PORT = {"import": 8080, "export": 8081}
_TMP_SPOOL = "/tmp/dicom-adapter/spool"


def _own(name: str) -> Setter:
    return lambda data, value: data.setdefault("_own", {}).__setitem__(name, value)


def _own_flags(command: str) -> list[Flag]:
    flags = [
        _flag(
            "health_port",
            f"[dicom-adapter] /healthz, /readyz, /metrics port (default "
            f"{_HEALTH_PORT[command]}; env {OWN_ENV['health_port']}).",
            _own("health_port"),
        ),
        _flag(
            "state_dir",
            f"[dicom-adapter] State directory, the echo guard's provenance log (env "
            f"{OWN_ENV['state_dir']}; shared by an importer and an exporter on one host).",
            _own("state_dir"),
        ),
    ]
    if command == "import":
        flags.append(
            _flag(
                "spool_dir",
                f"[dicom-adapter] Spool directory when --persistent_file_storage_location is "
                f"not given (default {_TMP_SPOOL}; env {OWN_ENV['spool_dir']}).",
                _own("spool_dir"),
            )
        )
    else:
        flags.append(
            _flag(
                "export_state_dir",
                f"[dicom-adapter] The exporter's working directory (env "
                f"{OWN_ENV['export_state_dir']}).",
                _own("export_state_dir"),
            )
        )
    return flags


def _apply_own(data: dict[str, Any], own: dict[str, str], command: str) -> None:
    """Our flags, else their environment variables, else the legacy-mode defaults."""
    env = os.environ

    def value(name: str) -> str | None:
        return own.get(name) or env.get(OWN_ENV[name]) or None

    port = value("health_port")
    _set(data, "health.port", _int("health_port")(port) if port else _HEALTH_PORT[command])
    if value("state_dir"):
        _set(data, "state_dir", value("state_dir"))
    if command == "import":
        spool = data.get("importer", {}).get("spool", {})
        if "path" not in spool:  # no --persistent_file_storage_location
            _set(data, "importer.spool.path", value("spool_dir") or _TMP_SPOOL)
    elif value("export_state_dir"):
        _set(data, "exporter.state_dir", value("export_state_dir"))


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
        _flag("redact_remove_list", "Tags emptied before upload (comma-separated).", _keep(R[0])),
        _flag("redact_keep_list", "Tags kept, all others emptied (comma-separated).", _keep(R[1])),
        _flag("redact_filter_profile", "Redact by a profile: CHC_BASIC.", _keep(R[2])),
        _flag("store_compress_to_transfer_syntax", "Transcode to UID.", _keep("compress_to")),
        _flag_bool(
            "fuzzy_matching",
            "C-FIND: ask QIDO-RS for fuzzy person-name matching.",
            lambda d, on: _set(d, "importer.query.fuzzy_matching", on),
        ),
        _flag(
            "gcs_backup_project_id",
            "Project of the gs:// --persistent_file_storage_location.",
            lambda d, v: d.setdefault("_legacy", {}).__setitem__("gcs_project", v),
        ),
        *_own_flags("import"),
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
        *_own_flags("export"),
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
        warnings += gcs_backup(data, legacy)
        # Java semantics: without a persistent location (or without --auto_ack_cstore) the
        # C-STORE is answered only after the upload, so a pod restart cannot lose an ack'ed image.
        persistent = legacy.get("persistent", False)
        importer["ack"] = "after-spool" if persistent and legacy.get("auto_ack") else "after-upload"
        if legacy.get("auto_ack") and not persistent:
            raise ConfigError(
                "--auto_ack_cstore requires --persistent_file_storage_location (a durable path)"
            )
        if "retry_amount" in legacy:
            _set(data, "retry.max_attempts", legacy["retry_amount"] + 1)
        if legacy.get("cmove_aet"):
            _set(data, "importer.query.move_calling_ae_title", legacy["cmove_aet"])
        aet_dictionary(data, legacy, environ, warnings)
        destination_config(data, legacy, environ, warnings)
        redaction(data, legacy, warnings)  # before any transcoding stage on every route
        compress_stage(data, legacy)  # after the redaction stage: stages run in list order
        # Java semantics: a C-FIND answer holds every attribute the store's QIDO-RS result held.
        importer.setdefault("query", {}).setdefault("return_keys", "store")
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
    _apply_own(data, data.pop("_own", {}), command)
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
