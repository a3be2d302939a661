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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from adapter.errors import ConfigError

__all__ = [
    "AeTitle",
    "AuthConfig",
    "ConfigModel",
    "DicomwebConfig",
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

GOOGLE_HEALTHCARE_SCOPE = "https://www.googleapis.com/auth/cloud-healthcare"
_AE_TITLE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 6.2: no backslash, no control


class ConfigModel(BaseModel):
    """Base of every config block: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _port(value: Any) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
    ):
        raise PydanticCustomError("port", "expected an integer 1-65535")
    port = int(value)
    if not 0 <= port <= 65535:  # 0 = pick a free port (tests)
        raise PydanticCustomError("port", "expected an integer 1-65535")
    return port


def _ae_title(value: Any) -> str:
    if not isinstance(value, str) or not _AE_TITLE_RE.match(value) or not value.strip():
        raise PydanticCustomError(
            "ae_title", "expected an AE title: 1-16 printable characters, no backslash"
        )
    return value.strip()


Port = Annotated[
    int, BeforeValidator(_port), WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 65535})
]
AeTitle = Annotated[
    str,
    BeforeValidator(_ae_title),
    WithJsonSchema({"type": "string", "pattern": r"^[\x20-\x5b\x5d-\x7e]{1,16}$"}),
]


class LogConfig(ConfigModel):
    """How the adapter logs: JSON lines for Cloud Logging, text on a terminal (auto)."""

    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class HealthConfig(ConfigModel):
    """The HTTP endpoint for /healthz, /readyz and /metrics (Kubernetes probes, Prometheus)."""

    enabled: bool = True
    bind: str = "0.0.0.0"
    port: Port = 8080


class AuthConfig(ConfigModel):
    """How to authenticate to a DICOMweb server; secrets come from env vars or files only."""

    kind: Literal["auto", "none", "google", "bearer", "basic"] = "auto"
    scopes: tuple[str, ...] = (GOOGLE_HEALTHCARE_SCOPE,)
    token_env: str | None = None
    token_file: Path | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in ("token", "password", "secret", "api_key"):
                if key in data:
                    raise PydanticCustomError(
                        "inline_secret",
                        "secrets never live in the YAML: use {key}_env or {key}_file",
                        {"key": "password" if key == "password" else "token"},
                    )
        return data

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        if self.kind == "bearer" and not (self.token_env or self.token_file):
            raise PydanticCustomError("auth", "kind 'bearer' needs token_env or token_file")
        if self.kind == "basic" and not (
            self.username and (self.password_env or self.password_file)
        ):
            raise PydanticCustomError(
                "auth", "kind 'basic' needs username and password_env or password_file"
            )
        return self


class DicomwebConfig(ConfigModel):
    """A DICOMweb service (PS3.18): base URL up to the DICOMweb root, auth, timeouts, pool."""

    url: str
    auth: AuthConfig = AuthConfig()
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(300.0, gt=0)
    pool_size: int = Field(16, ge=1, le=256)
    verify: bool | Path = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise PydanticCustomError(
                "url",
                "expected an http(s) URL up to the DICOMweb root, e.g. "
                "http://127.0.0.1:8042/dicom-web",
            )
        return value.rstrip("/")


class RetryConfig(ConfigModel):
    """Backoff for transient failures (network, 408, 429, 5xx, busy PACS); shared by all paths."""

    max_attempts: int = Field(10, ge=0)  # 0 = forever
    initial_delay: float = Field(1.0, ge=0)
    max_delay: float = Field(60.0, ge=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: bool = True
    extra_http_statuses: tuple[int, ...] = ()


class TlsConfig(ConfigModel):
    """DIMSE over TLS (PS3.15 B.1): our certificate, and the CA that signs peers' certificates."""

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _files(self) -> TlsConfig:
        if self.enabled and not (self.cert_file and self.key_file):
            raise PydanticCustomError("tls", "TLS enabled needs cert_file and key_file")
        if self.require_client_cert and not self.ca_file:
            raise PydanticCustomError("tls", "require_client_cert needs ca_file")
        return self


class DimseServerConfig(ConfigModel):
    """Our DIMSE listener (PS3.8 association acceptor): AE title, address, allow-list, limits."""

    ae_title: AeTitle = "IMPORTADAPTER"
    bind: str = "0.0.0.0"
    port: Port = 2575
    allowed_calling_aets: tuple[AeTitle, ...] = ()  # empty = any calling AE
    max_associations: int = Field(32, ge=1, le=1024)
    maximum_pdu_size: int = Field(0, ge=0)  # 0 = unlimited
    acse_timeout: float = Field(30.0, gt=0)
    dimse_timeout: float = Field(120.0, gt=0)
    network_timeout: float = Field(120.0, gt=0)
    tls: TlsConfig = TlsConfig()
    #: Receiving processes sharing the port with SO_REUSEPORT (the kernel spreads associations);
    #: 1 = receive in the adapter process itself. Only plugins that support it accept > 1.
    processes: int = Field(1, ge=1, le=64)
    #: Serve associations that propose only Storage and Verification with the adapter's own
    #: lean acceptor (several times pynetdicom's throughput); others always go to pynetdicom.
    #: TLS associations always use pynetdicom.
    native_storage: bool = True


class CoreConfig(ConfigModel):
    """The keys every site file may have besides the plugin sections."""

    site: str = "local"
    log: LogConfig = LogConfig()
    health: HealthConfig = HealthConfig()
    dicomweb: DicomwebConfig | None = None
    retry: RetryConfig = RetryConfig()
    state_dir: Path = Path("/var/lib/dicom-adapter/state")  # provenance log (echo guard)


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
