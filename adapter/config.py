"""The site configuration: one YAML file parsed once into frozen, typed objects.

Errors name the key path, what was expected and what was found, e.g.
``importer.dimse.port: expected an integer 1-65535, got 'abc'``. Plugins own their section's model
(``importer:``, ``exporter:``); this module owns the shared blocks and the loader, and learns the
plugin sections through :mod:`adapter.plugin`, never by importing a plugin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from adapter.config_types import (
    GOOGLE_HEALTHCARE_SCOPE,
    AeTitle,
    AuthConfig,
    ConfigModel,
    DicomwebConfig,
    DicomwebUrl,
    DimseServerConfig,
    HealthConfig,
    LogConfig,
    Port,
    RetryConfig,
    TlsConfig,
)
from adapter.destinations.config import DestinationConfig
from adapter.errors import ConfigError
from adapter.stages.config import StageConfig

__all__ = [
    "GOOGLE_HEALTHCARE_SCOPE",
    "AeTitle",
    "AuthConfig",
    "ConfigModel",
    "CoreConfig",
    "DestinationName",
    "DicomwebConfig",
    "DicomwebUrl",
    "DimseServerConfig",
    "HealthConfig",
    "LogConfig",
    "Port",
    "RetryConfig",
    "SiteConfig",
    "TlsConfig",
    "format_validation_error",
    "load_config",
    "load_config_data",
    "load_config_text",
]


def _destination_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value in (".", ".."):
        raise PydanticCustomError(
            "destination_name", "expected a name of 1-64 letters, digits, '.', '_' or '-'"
        )
    return value


_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: A destination's name: its metrics label and its outbox folder.
DestinationName = Annotated[str, BeforeValidator(_destination_name)]


class CoreConfig(ConfigModel):
    """The keys every site file may have besides the plugin sections."""

    site: str = "local"
    log: LogConfig = LogConfig()
    health: HealthConfig = HealthConfig()
    dicomweb: DicomwebConfig | None = None
    retry: RetryConfig = RetryConfig()
    state_dir: Path = Path("/var/lib/dicom-adapter/state")  # provenance log (echo guard)
    #: Named destinations the plugins' routing rules send to (besides their defaults).
    destinations: dict[DestinationName, DestinationConfig] = Field(default_factory=dict)
    #: Named processing stages (de-identify, transcode) that routing rules apply, in order.
    stages: dict[DestinationName, StageConfig] = Field(default_factory=dict)


class SiteConfig(ConfigModel):
    """Everything one adapter process needs; built once at the edge (YAML or legacy flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    core: CoreConfig
    plugins: Mapping[str, BaseModel] = Field(default_factory=dict)
    source: str = "<config>"

    @property
    def site(self) -> str:
        return self.core.site

    @property
    def dicomweb(self) -> DicomwebConfig | None:
        return self.core.dicomweb

    def enabled_plugins(self) -> list[str]:
        """Plugin names whose section says ``enabled: true`` (the default when present)."""
        return [name for name, cfg in self.plugins.items() if getattr(cfg, "enabled", True)]


def _render(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-") or part in ("constrained-str", "lax-or-strict"):
            continue
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "<top>"


def format_validation_error(
    error: ValidationError,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    extra_keys: tuple[str, ...] = (),
) -> list[str]:
    """One line per problem: ``key.path: expected ..., got ...``; an unknown key of ``model``
    gets a did-you-mean (``extra_keys``: more valid top-level names, e.g. the plugin sections)."""
    from adapter.suggest import suggest_key

    lines: list[str] = []
    for item in error.errors(include_url=False):
        where = _loc(prefix, tuple(item["loc"]))
        kind = item["type"]
        if kind == "missing":
            lines.append(f"{where}{_MISSING}")
        elif kind == "extra_forbidden":
            hint = suggest_key(model, tuple(item["loc"]), extra_keys)
            lines.append(f"{where}: unknown key{hint}")
        else:
            msg = item["msg"].replace("Input should be ", "expected ")
            msg = msg.replace("Value error, ", "")
            if msg and msg[0].isupper() and not msg.startswith("TLS"):
                msg = msg[0].lower() + msg[1:]
            shown = item.get("input")
            if isinstance(shown, Mapping) or kind in ("inline_secret", "auth", "tls"):
                lines.append(f"{where}: {msg}")
            else:
                lines.append(f"{where}: {msg}, got {_render(shown)}")
    return lines


_MISSING = ": required key is missing"


def _disabled(section: Any) -> bool:
    return isinstance(section, Mapping) and section.get("enabled") is False


def load_config_data(data: Any, source: str = "<config>") -> SiteConfig:
    """Validate an already-parsed mapping (from YAML or from legacy flags) into a SiteConfig."""
    from adapter.plugin import discover_plugins  # the registry, not a plugin

    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_render(data)}")
    plugins = discover_plugins()
    problems: list[str] = []
    core_data = {k: v for k, v in data.items() if k not in plugins}
    core: CoreConfig | None = None
    try:
        core = CoreConfig.model_validate(core_data)
    except ValidationError as exc:
        problems += format_validation_error(exc, model=CoreConfig, extra_keys=tuple(plugins))
    plugin_configs: dict[str, BaseModel] = {}
    for name, plugin in plugins.items():
        if name not in data:
            continue
        section = data[name] if data[name] is not None else {}
        try:
            plugin_configs[name] = plugin.config_model.model_validate(section)
        except ValidationError as exc:
            found = format_validation_error(exc, prefix=name, model=plugin.config_model)
            if _disabled(section):  # needs none of its keys; typos and wrong types still count
                found = [p for p in found if not p.endswith(_MISSING)]
                plugin_configs[name] = plugin.config_model.model_construct(**section)
            problems += found
    if not problems and core is not None:
        for name, cfg in plugin_configs.items():
            if getattr(cfg, "enabled", True):
                problems += [f"{name}.{p}" for p in plugins[name].check(core, cfg)]
    if problems or core is None:
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(problems))
    return SiteConfig(core=core, plugins=plugin_configs, source=source)


def load_config_text(text: str, source: str = "<config>") -> SiteConfig:
    """Parse YAML text; syntax errors report line and column."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(f"{source}: YAML syntax error at {where}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML error: {exc}") from exc
    return load_config_data(data, source)


def load_config(path: str | Path) -> SiteConfig:
    """Read and validate a site YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from exc
    return load_config_text(text, str(p))
