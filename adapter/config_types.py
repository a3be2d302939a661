"""Building blocks of the site configuration: the frozen base model and the typed blocks that
several sections share (AE titles, ports, DICOMweb services, retry, TLS, the DIMSE listener).

Errors raised here name what was expected; :mod:`adapter.config` adds the key path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "GOOGLE_HEALTHCARE_SCOPE",
    "AeTitle",
    "AuthConfig",
    "ConfigModel",
    "DicomwebConfig",
    "DicomwebUrl",
    "DimseServerConfig",
    "HealthConfig",
    "LogConfig",
    "Port",
    "RetryConfig",
    "TlsConfig",
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


def _dicomweb_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        raise PydanticCustomError(
            "url",
            "expected an http(s) URL up to the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web",
        )
    return value.rstrip("/")


DicomwebUrl = Annotated[str, BeforeValidator(_dicomweb_url)]


class DicomwebConfig(ConfigModel):
    """A DICOMweb service (PS3.18): base URL up to the DICOMweb root, auth, timeouts, pool."""

    url: DicomwebUrl
    auth: AuthConfig = AuthConfig()
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(300.0, gt=0)
    pool_size: int = Field(16, ge=1, le=256)
    verify: bool | Path = True


class RetryConfig(ConfigModel):
    """Backoff for transient failures (network, 408, 429, 5xx, busy PACS); shared by all paths.
    The budget is time: ``max_elapsed`` seconds since the first attempt (0 = forever)."""

    max_elapsed: float = Field(86400.0, ge=0)  # 0 = forever
    max_attempts: int = Field(0, ge=0)  # 0 = no count limit (the legacy retry-amount flag)
    poison_attempts: int = Field(3, ge=0)  # requests broken mid-flight, then dead letter
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
    #: Refuse an association whose Called AE Title is not ``ae_title`` (A-ASSOCIATE-RJ
    #: permanent, service user, "called AE title not recognized", PS3.8 9.3.4), as Orthanc's
    #: DicomCheckCalledAet does; false accepts any called AE title.
    check_called_aet: bool = True
    max_associations: int = Field(32, ge=1, le=1024)
    maximum_pdu_size: int = Field(262144, ge=0)  # what we receive (PS3.8 D.1); 0 = unlimited
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
