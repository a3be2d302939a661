"""build_session: auth kinds, timeouts, User-Agent, and the HTTP-answer -> error mapping."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from adapter.dicomweb.session import (
    AuthSettings,
    SessionSettings,
    build_session,
    error_for_response,
    is_google_healthcare,
    send,
)
from adapter.errors import ConfigError, PermanentError, TransientError
from tests.peers.http_stub import HttpStub, RecordedRequest, StubResponse

HEALTHCARE = (
    "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb"
)


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        server.default = StubResponse(200, {"Content-Type": "application/json"}, b"[]")
        yield server


def _get(session: requests.Session, stub: HttpStub) -> RecordedRequest:
    session.get(stub.url + "/studies")
    return stub.requests[-1]


# --------------------------------------------------------------------------- selection
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (HEALTHCARE, True),
        ("https://HEALTHCARE.googleapis.com./v1/x", True),
        ("http://127.0.0.1:8042/dicom-web", False),
        ("https://healthcare.googleapis.com.evil.example/v1", False),
        ("https://evil.example/healthcare.googleapis.com", False),
    ],
)
def test_is_google_healthcare_checks_the_host_only(url: str, expected: bool) -> None:
    assert is_google_healthcare(url) is expected


def test_auto_auth_on_non_google_store_sends_no_credentials(stub: HttpStub) -> None:
    seen = _get(build_session(SessionSettings(stub.url)), stub)
    assert seen.header("Authorization") is None
    assert (seen.header("User-Agent") or "").startswith("dicom-adapter/")


def test_non_google_store_never_imports_google_auth(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from adapter.dicomweb.session import AuthSettings, SessionSettings, build_session\n"
        "build_session(SessionSettings('http://127.0.0.1:9/dicom-web'))\n"
        "build_session(SessionSettings('http://127.0.0.1:9/x', AuthSettings(kind='bearer', "
        "token_env='T')))\n"
        "print(any(m.startswith('google.auth') for m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"T": "tok", "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_ca_bundle_path_is_applied_and_must_exist(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert build_session(SessionSettings("https://x", verify=str(bundle))).verify == str(bundle)
    with pytest.raises(ConfigError, match="CA bundle"):
        build_session(SessionSettings("https://x", verify=str(tmp_path / "missing.pem")))


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="http"):
        build_session(SessionSettings("ftp://example/dicom-web"))


# --------------------------------------------------------------------------- bearer / basic
def test_bearer_token_from_env(stub: HttpStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TOKEN", "  env-token\n")
    session = build_session(SessionSettings(stub.url, AuthSettings("bearer", token_env="DW_TOKEN")))
    assert _get(session, stub).header("Authorization") == "Bearer env-token"
    assert "env-token" not in repr(session.auth)


def test_bearer_token_file_is_reread_on_every_request(stub: HttpStub, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    session = build_session(
        SessionSettings(stub.url, AuthSettings("bearer", token_file=str(token_file)))
    )
    assert _get(session, stub).header("Authorization") == "Bearer first"
    token_file.write_text("rotated\n")
    assert _get(session, stub).header("Authorization") == "Bearer rotated"


def test_bearer_token_file_vanishing_mid_rotation_is_transient(
    stub: HttpStub, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t")
    session = build_session(
        SessionSettings(stub.url, AuthSettings("bearer", token_file=str(token_file)))
    )
    token_file.unlink()
    with pytest.raises(TransientError, match="bearer token"):
        session.get(stub.url + "/studies")


def test_missing_bearer_token_fails_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_TOKEN"):
        build_session(
            SessionSettings("http://x", AuthSettings("bearer", token_env="NO_SUCH_TOKEN"))
        )


def test_basic_auth_password_from_file_is_sent_and_not_shown(
    stub: HttpStub, tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    session = build_session(
        SessionSettings(
            stub.url, AuthSettings("basic", username="orthanc", password_file=str(secret))
        )
    )
    expected = "Basic " + base64.b64encode(b"orthanc:s3cret").decode()
    assert _get(session, stub).header("Authorization") == expected
    assert "s3cret" not in repr(session.auth)


def test_basic_auth_without_username_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="username"):
        build_session(SessionSettings("http://x", AuthSettings("basic", password_env="P")))


# --------------------------------------------------------------------------- google
def _fake_service_account(tmp_path: Path, token_uri: str) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "adapter@test-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


def test_google_auth_fetches_token_with_scopes_and_sends_it(
    stub: HttpStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sa = _fake_service_account(tmp_path, stub.url + "/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(sa))
    stub.enqueue(
        StubResponse.json(
            200, {"access_token": "ya29.test", "expires_in": 3600}, content_type="application/json"
        )
    )
    settings = SessionSettings(
        stub.url,
        AuthSettings("google", scopes=("https://www.googleapis.com/auth/cloud-healthcare",)),
    )
    seen = _get(build_session(settings), stub)
    token_request, _ = stub.requests
    assert token_request.path == "/token"
    assertion = dict(kv.split("=", 1) for kv in token_request.body.decode().split("&"))["assertion"]
    claims = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-healthcare"
    assert seen.header("Authorization") == "Bearer ya29.test"
    assert (seen.header("User-Agent") or "").startswith("dicom-adapter/")


def test_auto_auth_on_healthcare_api_uses_google_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.auth.transport.requests import AuthorizedSession

    monkeypatch.setenv(
        "GOOGLE_APPLICATION_CREDENTIALS",
        str(_fake_service_account(tmp_path, "http://127.0.0.1:9/token")),
    )
    session = build_session(SessionSettings(HEALTHCARE, pool_size=4))
    assert isinstance(session, AuthorizedSession)


def test_missing_google_credentials_is_an_actionable_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        build_session(SessionSettings(HEALTHCARE))


# --------------------------------------------------------------------------- timeouts
def test_read_timeout_applies_to_every_request(stub: HttpStub) -> None:
    stub.enqueue(StubResponse(200, delay=2.0))
    session = build_session(SessionSettings(stub.url, read_timeout=0.3))
    with pytest.raises(TransientError, match="timed out"):
        send(session, "GET", stub.url + "/slow", "GET slow")


def test_connection_refused_is_transient() -> None:
    with HttpStub() as gone:
        url = gone.url
    session = build_session(SessionSettings(url, connect_timeout=1))
    with pytest.raises(TransientError, match="connection failed"):
        send(session, "GET", url + "/studies", "QIDO")


# --------------------------------------------------------------------------- error mapping
def _error(stub: HttpStub, answer: StubResponse, url: str | None = None) -> Exception:
    stub.enqueue(answer)
    response = requests.get(url or stub.url + "/studies", timeout=10)
    return error_for_response(response, "STOW-RS")


def test_429_with_retry_after_is_transient_and_carries_the_delay(stub: HttpStub) -> None:
    error = _error(stub, StubResponse(429, {"Retry-After": "17"}, b"slow down"))
    assert isinstance(error, TransientError)
    assert (error.http_status, error.retry_after) == (429, 17)


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_server_errors_and_request_timeout_are_transient(stub: HttpStub, status: int) -> None:
    error = _error(stub, StubResponse(status))
    assert isinstance(error, TransientError)
    assert error.http_status == status


@pytest.mark.parametrize(
    ("body", "advice"),
    [
        (
            '{"error": {"status": "PERMISSION_DENIED", "details": [{"reason": "SERVICE_DISABLED"}],'
            ' "message": "Cloud Healthcare API has not been used in project 1"}}',
            "gcloud services enable healthcare.googleapis.com",
        ),
        (
            '{"error": {"message": "Request had insufficient authentication scopes."}}',
            "--oauth_scopes",
        ),
        (
            '{"error": {"message": "Permission \'healthcare.dicomStores.dicomEditor\' denied",'
            ' "status": "PERMISSION_DENIED"}}',
            "roles/healthcare.dicomEditor",
        ),
    ],
)
def test_google_403_messages_say_what_to_fix(stub: HttpStub, body: str, advice: str) -> None:
    error = _error(stub, StubResponse(403, {"Content-Type": "application/json"}, body.encode()))
    assert isinstance(error, PermanentError)
    assert error.http_status == 403
    assert advice in str(error)
    assert "HTTP 403" in str(error)


def test_error_message_has_status_and_a_short_body_excerpt(stub: HttpStub) -> None:
    error = _error(stub, StubResponse(400, body=b"bad   request\n" + b"x" * 5000))
    message = str(error)
    assert isinstance(error, PermanentError)
    assert "HTTP 400" in message
    assert "bad request" in message
    excerpt = message.split("[body: ", 1)[1]
    assert len(excerpt) <= 301


def test_401_says_credentials_were_rejected(stub: HttpStub) -> None:
    error = _error(stub, StubResponse(401))
    assert isinstance(error, PermanentError)
    assert "credentials rejected" in str(error)
