"""Cloud Storage plumbing shared by the ``gcs`` destination and the spool backup: the client,
a streamed upload, and which failures are worth retrying.

Credentials are google-auth's application defaults; with ``STORAGE_EMULATOR_HOST`` set,
google-cloud-storage talks to that emulator with anonymous credentials by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CHUNK_SIZE",
    "SETUP_STATUSES",
    "GcsFailure",
    "classify",
    "make_client",
    "upload_file",
]

#: Resumable-upload chunk: what one upload holds in memory at most (files up to 8 MiB go in
#: one multipart request, larger ones in chunks of this size), whatever the instance's size.
CHUNK_SIZE = 8 * 1024 * 1024

#: Answers that blame the adapter's setup (credentials, bucket name), never one object.
SETUP_STATUSES = frozenset({401, 403, 404})

FailureKind = Literal["transient", "setup", "permanent"]


@dataclass(frozen=True)
class GcsFailure:
    """A Cloud Storage failure, classified: ``transient`` (network, 408, 429, 5xx), ``setup``
    (auth, missing bucket: retried, logged loudly), ``permanent`` (this object is refused)."""

    kind: FailureKind
    detail: str
    http_status: int | None = None


def make_client(project: str | None) -> Any:
    """A storage client (application default credentials, or the emulator's anonymous ones)."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return storage.Client(project=project or "emulator", credentials=anonymous)
    return storage.Client(project=project)


def upload_file(client: Any, bucket: str, name: str, path: Path, timeout: float) -> None:
    """Stream ``path`` to ``gs://bucket/name`` (overwriting), content type application/dicom;
    no library retry: the caller's backoff decides."""
    blob = client.bucket(bucket).blob(name, chunk_size=CHUNK_SIZE)
    with open(path, "rb") as src:
        blob.upload_from_file(
            src,
            size=os.fstat(src.fileno()).st_size,
            content_type="application/dicom",
            retry=None,
            timeout=timeout,
        )


def classify(exc: BaseException) -> GcsFailure:
    """What a failure of a Cloud Storage call means for a retry."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(exc, api.GoogleAPICallError):
        code = exc.code if isinstance(exc.code, int) else None
        text = f"HTTP {code}: {_message(exc)}"
        if code is None or code in (408, 429) or code >= 500:
            return GcsFailure("transient", text, code)
        if code in SETUP_STATUSES:
            return GcsFailure("setup", text, code)
        return GcsFailure("permanent", text, code)
    if isinstance(exc, auth.GoogleAuthError):  # no or bad credentials, token endpoint down
        return GcsFailure("setup", f"credentials: {type(exc).__name__}: {str(exc)[:200]}")
    return GcsFailure("transient", f"{type(exc).__name__}: {str(exc)[:200]}")


def _message(exc: Any) -> str:
    message = str(getattr(exc, "message", "") or exc)
    return message.split("\n", 1)[0][:200]
