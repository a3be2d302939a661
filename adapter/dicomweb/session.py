"""The one pooled, authenticated ``requests.Session`` every DICOMweb client shares, and the
HTTP-answer -> TransientError/PermanentError mapping with operator-readable messages.

Auth kinds: ``google`` (Application Default Credentials), ``bearer`` (token from an env var or a
file re-read per request, so rotated tokens are picked up), ``basic``, ``none``; ``auto`` picks
google for healthcare.googleapis.com and none otherwise. google.auth is imported only when used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth

from adapter.dicomweb.multipart import MultipartRelatedBody
from adapter.errors import AdapterError, ConfigError, PermanentError, TransientError
from adapter.retry import parse_retry_after

__all__ = [
    "GOOGLE_HEALTHCARE_HOST",
    "AuthSettings",
    "BearerTokenAuth",
    "SessionSettings",
    "body_excerpt",
    "build_session",
    "error_for_response",
    "is_google_healthcare",
    "iter_body",
    "send",
    "transport_error",
    "user_agent",
]

log = logging.getLogger(__name__)

GOOGLE_HEALTHCARE_HOST = "healthcare.googleapis.com"
_EXCERPT_CHARS = 300


@dataclass(frozen=True)
class AuthSettings:
    """How to authenticate to the DICOMweb store (plain data, built by the config layer)."""

    kind: Literal["auto", "none", "google", "bearer", "basic"] = "auto"
    scopes: tuple[str, ...] = ("https://www.googleapis.com/auth/cloud-healthcare",)
    token_env: str | None = None
    token_file: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class SessionSettings:
    """Where the store is and how to talk to it."""

    base_url: str
    auth: AuthSettings = AuthSettings()
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    pool_size: int = 16
    verify: bool | str = True  # CA bundle path allowed


def is_google_healthcare(url: str) -> bool:
    """True if ``url`` points at the Cloud Healthcare API (host healthcare.googleapis.com)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host == GOOGLE_HEALTHCARE_HOST


def user_agent() -> str:
    """``dicom-adapter/<installed version>``."""
    try:
        version = metadata.version("dicom-adapter")
    except metadata.PackageNotFoundError:  # pragma: no cover - always installed in practice
        version = "0+unknown"
    return f"dicom-adapter/{version}"


# --------------------------------------------------------------------------- auth helpers
def _read_secret(env: str | None, file: str | None, what: str) -> str:
    """A secret from an env var or a file (stripped); ConfigError naming the source if missing."""
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {what} file {file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{what} file {file} is empty")
        return value
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(f"{what} environment variable {env} is unset or empty")
        return value
    raise ConfigError(f"{what}: set an environment variable or a file to read it from")


class BearerTokenAuth(AuthBase):
    """``Authorization: Bearer <token>``; a token file is re-read on every request because
    tokens rotate (e.g. a sidecar rewrites it)."""

    def __init__(self, token_env: str | None = None, token_file: str | None = None) -> None:
        if not token_env and not token_file:
            raise ConfigError("auth.kind=bearer needs token_env or token_file")
        self._env = token_env
        self._file = token_file
        _read_secret(token_env, token_file, "bearer token")  # fail at startup, not mid-upload

    def token(self) -> str:
        """The current token; TransientError if the file vanished mid-rotation."""
        try:
            return _read_secret(self._env, self._file, "bearer token")
        except ConfigError as exc:
            raise TransientError(str(exc)) from None

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token()}"
        return r

    def __repr__(self) -> str:
        source = f"file={self._file!r}" if self._file else f"env={self._env!r}"
        return f"BearerTokenAuth({source})"


class _RedactedBasicAuth(HTTPBasicAuth):
    """HTTPBasicAuth whose repr never shows the password."""

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r})"


# --------------------------------------------------------------------------- sessions
def _with_default_timeout(
    args: tuple[Any, ...], kwargs: dict[str, Any], default: tuple[float, float]
) -> None:
    """Fill in the timeout unless the caller gave one (positionally it is request()'s 7th extra
    argument); rewind a re-readable body so a re-send never sends a used-up stream."""
    if len(args) < 7 and kwargs.get("timeout") is None:
        kwargs["timeout"] = default
    data = kwargs.get("data", args[1] if len(args) > 1 else None)
    if isinstance(data, MultipartRelatedBody):
        data.reset()


class AdapterSession(requests.Session):
    """A Session with a default (connect, read) timeout on every request."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        _with_default_timeout(args, kwargs, self.default_timeout)
        return super().request(method, url, *args, **kwargs)


def _google_session(settings: SessionSettings, timeout: tuple[float, float]) -> requests.Session:
    """An AuthorizedSession on Application Default Credentials, with the default timeout."""
    import google.auth
    import google.auth.exceptions
    from google.auth.transport.requests import AuthorizedSession

    class GoogleSession(AuthorizedSession):
        """AuthorizedSession whose requests default to the adapter's timeouts (its own default
        would be 120 s for everything). Token refresh-and-retry on 401 also rewinds the body."""

        default_timeout = timeout

        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
            _with_default_timeout(args, kwargs, self.default_timeout)
            response: requests.Response = super().request(  # type: ignore[no-untyped-call]
                method, url, *args, **kwargs
            )
            return response

    try:
        credentials, _project = google.auth.default(scopes=list(settings.auth.scopes))
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise ConfigError(
            "no Google Application Default Credentials: set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service-account key file, run 'gcloud auth application-default login', or run "
            f"with workload identity ({str(exc)[:200]})"
        ) from None
    session: requests.Session = GoogleSession(credentials)  # type: ignore[no-untyped-call]
    return session


class _LargeBlockAdapter(HTTPAdapter):
    """Connections that move request bodies in 1 MiB blocks: urllib3's default 16 KiB means
    ~32 Python-level read/send rounds per 0.5 MB instance of a STOW-RS body."""

    BLOCKSIZE = 1 << 20

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", self.BLOCKSIZE)
        super().init_poolmanager(*args, **kwargs)


def build_session(settings: SessionSettings) -> requests.Session:
    """A pooled session for ``settings.base_url`` with auth, timeouts, TLS verification and a
    ``User-Agent: dicom-adapter/<version>`` header."""
    if not settings.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"DICOMweb base URL must be http(s)://...: {settings.base_url!r}")
    if isinstance(settings.verify, str) and not Path(settings.verify).exists():
        raise ConfigError(f"TLS CA bundle {settings.verify!r} does not exist")
    auth = settings.auth
    kind = auth.kind
    if kind == "auto":
        kind = "google" if is_google_healthcare(settings.base_url) else "none"
    timeout = (settings.connect_timeout, settings.read_timeout)

    session: requests.Session
    if kind == "google":
        session = _google_session(settings, timeout)
    else:
        session = AdapterSession(timeout)
        if kind == "bearer":
            session.auth = BearerTokenAuth(auth.token_env, auth.token_file)
        elif kind == "basic":
            if not auth.username:
                raise ConfigError("auth.kind=basic needs a username")
            password = _read_secret(auth.password_env, auth.password_file, "basic-auth password")
            session.auth = _RedactedBasicAuth(auth.username, password)
        elif kind != "none":
            raise ConfigError(f"unknown auth kind {auth.kind!r}")

    pool = max(1, settings.pool_size)
    adapter = _LargeBlockAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = settings.verify
    session.headers["User-Agent"] = user_agent()
    log.debug("DICOMweb session for %s (auth=%s)", settings.base_url, kind)
    return session


# --------------------------------------------------------------------------- error mapping
def body_excerpt(response: requests.Response, limit: int = _EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of the answer body, whitespace collapsed; never reads more
    than 8 KiB of a streamed body."""
    raw = bytearray()
    try:
        for chunk in response.iter_content(4096):
            raw += chunk
            if len(raw) >= 8192:
                break
    except (requests.RequestException, RuntimeError):
        pass
    text = " ".join(raw.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hint(status: int, body: str, google: bool) -> str:
    """What an operator should probably do about this answer."""
    lowered = body.lower()
    if status == 401:
        if google:
            return (
                "credentials rejected: check the service account key / ADC and that the "
                "account is not disabled"
            )
        return "credentials rejected: check the configured token or username/password"
    if status == 403:
        if "service_disabled" in lowered or "has not been used" in lowered:
            return (
                "the Cloud Healthcare API is not enabled in this project: run "
                "'gcloud services enable healthcare.googleapis.com'"
            )
        if "insufficient authentication scopes" in lowered or "scope_insufficient" in lowered:
            return (
                "the token lacks the OAuth scope: check --oauth_scopes (needs "
                "https://www.googleapis.com/auth/cloud-healthcare or cloud-platform)"
            )
        if "healthcare.dicomstores" in lowered or "permission_denied" in lowered or google:
            return (
                "permission denied: grant roles/healthcare.dicomEditor on the DICOM store to the "
                "adapter's service account"
            )
        return "forbidden: check the store's access rules for this client"
    if status == 404:
        return (
            "not found: check the DICOMweb base URL (project/location/dataset/dicomStore) "
            "or the UIDs"
        )
    if status == 413:
        return "request too large: lower the STOW batch size"
    if status == 415:
        return "the store does not accept this media type"
    return ""


def error_for_response(
    response: requests.Response, what: str, *, failure_reason: int | None = None
) -> AdapterError:
    """The exception for a non-success answer: TransientError for 408/429/5xx (with Retry-After),
    PermanentError otherwise; the message names the status, a hint and a body excerpt."""
    status = response.status_code
    excerpt = body_excerpt(response)
    google = is_google_healthcare(response.url or "")
    hint = _hint(status, excerpt, google)
    message = f"{what}: HTTP {status} {response.reason or ''}".rstrip()
    if hint:
        message += f" -- {hint}"
    if excerpt:
        message += f" [body: {excerpt}]"
    if status in (408, 429) or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return TransientError(message, http_status=status, retry_after=retry_after)
    return PermanentError(message, http_status=status, failure_reason=failure_reason)


def transport_error(exc: requests.RequestException, what: str) -> AdapterError:
    """Connection failures and timeouts are transient; a bad URL or TLS setup is permanent."""
    if isinstance(exc, requests.exceptions.SSLError):
        return PermanentError(f"{what}: TLS error (check verify / CA bundle): {exc}"[:500])
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return PermanentError(f"{what}: invalid URL: {exc}"[:500])
    if isinstance(exc, requests.exceptions.Timeout):
        broke = not isinstance(exc, requests.exceptions.ConnectTimeout)
        return TransientError(f"{what}: timed out: {exc}"[:500], in_flight=broke)
    return TransientError(f"{what}: connection failed: {exc}"[:500], in_flight=_in_flight(exc))


def _in_flight(exc: requests.RequestException) -> bool:
    """The connection was up and broke during the request (reset, closed before the answer),
    as opposed to never being made (refused, unresolvable)."""
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    not_connected = (
        urllib3.exceptions.NewConnectionError,
        urllib3.exceptions.ConnectTimeoutError,
        urllib3.exceptions.NameResolutionError,
    )
    return isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(
        reason, not_connected
    )


def send(
    session: requests.Session, method: str, url: str, what: str, **kwargs: Any
) -> requests.Response:
    """``session.request`` with transport failures mapped to adapter errors."""
    try:
        return session.request(method, url, **kwargs)
    except requests.RequestException as exc:
        raise transport_error(exc, what) from exc


def iter_body(response: requests.Response, chunk_size: int, what: str) -> Iterator[bytes]:
    """``response.iter_content`` with mid-body connection failures mapped to TransientError."""
    try:
        yield from response.iter_content(chunk_size)
    except requests.RequestException as exc:
        raise transport_error(exc, what) from exc
