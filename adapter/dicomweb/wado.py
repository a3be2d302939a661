"""WADO-RS retrieve of one instance (PS3.18 10.4) streamed to disk: ``dest.part`` is written,
fsynced and renamed, so ``dest`` is either absent or complete.

Accept (PS3.18 8.7.3.5.2): ``multipart/related; type="application/dicom"; transfer-syntax=*``.
Observed on Orthanc 1.10 + DICOMweb 1.7: that Accept works (200, one part with the stored file,
byte-identical, gzip Content-Encoding on the whole answer); so do the same without
transfer-syntax, an explicit UID it holds, ``*/*`` and no Accept at all. A transfer syntax it
cannot transcode to (e.g. JPEG baseline of 16-bit CT) gives 500; a bare ``application/dicom``
Accept gives 400 ("cannot generate the following content type"); an unknown instance gives 404.
Some stores answer 400/406 to ``transfer-syntax=*``: then we retry once without the parameter
and remember that for this client. A single-part ``application/dicom`` answer is accepted too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import BinaryIO

import requests

from adapter.dicomweb.json_model import validate_uid
from adapter.dicomweb.multipart import iter_multipart_parts, parse_content_type
from adapter.dicomweb.session import error_for_response, iter_body, send
from adapter.errors import PermanentError

__all__ = ["WadoClient"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _accept(transfer_syntax: str | None) -> str:
    value = 'multipart/related; type="application/dicom"'
    if transfer_syntax is not None:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


class WadoClient:
    """WADO-RS instance retrieval to files."""

    def __init__(self, session: requests.Session, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._transfer_syntax_param = True

    def retrieve_instance(
        self, study: str, series: str, instance: str, dest: Path, transfer_syntax: str = "*"
    ) -> Path:
        """Download one instance to ``dest`` (atomically: complete or absent); returns ``dest``.
        Not fsynced: every caller holds it as a scratch copy of what the store keeps.

        404 -> PermanentError; 408/429/5xx, timeouts and cut transfers -> TransientError.
        """
        if transfer_syntax != "*":
            validate_uid(transfer_syntax, "Transfer Syntax UID")
        url = "/".join(
            [
                self._base,
                "studies",
                validate_uid(study, "Study Instance UID"),
                "series",
                validate_uid(series, "Series Instance UID"),
                "instances",
                validate_uid(instance, "SOP Instance UID"),
            ]
        )
        what = f"WADO-RS {url}"
        use_param = self._transfer_syntax_param or transfer_syntax != "*"
        response = self._get(url, what, transfer_syntax if use_param else None)
        if response.status_code in (400, 406) and use_param and transfer_syntax == "*":
            response.close()
            log.info("%s: store refused transfer-syntax=*; retrying without it", what)
            response = self._get(url, what, None)
            if response.status_code == 200:
                self._transfer_syntax_param = False
        with response:
            if response.status_code != 200:
                raise error_for_response(response, what)
            return self._save(response, Path(dest), what)

    def _get(self, url: str, what: str, transfer_syntax: str | None) -> requests.Response:
        headers = {"Accept": _accept(transfer_syntax)}
        return send(self._session, "GET", url, what, headers=headers, stream=True)

    def _save(self, response: requests.Response, dest: Path, what: str) -> Path:
        partial = dest.with_name(dest.name + ".part")
        try:
            try:
                out = open(partial, "w+b")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                dest.parent.mkdir(parents=True, exist_ok=True)
                out = open(partial, "w+b")  # noqa: SIM115
            with out:
                self._write_body(response, out, what)
                _check_part10(out, what)
            os.replace(partial, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        return dest

    @staticmethod
    def _write_body(response: requests.Response, out: BinaryIO, what: str) -> None:
        media_type, _ = parse_content_type(response.headers.get("Content-Type", ""))
        if media_type == "application/dicom":
            for chunk in iter_body(response, _CHUNK, what):
                out.write(chunk)
            return
        if not media_type.startswith("multipart/"):
            raise PermanentError(f"{what}: unexpected Content-Type {media_type or '-'}")
        count = 0
        for part in iter_multipart_parts(response, _CHUNK):
            count += 1
            if count > 1:
                raise PermanentError(f"{what}: answer has more than one part for one instance")
            if part.content_type not in ("", "application/dicom"):
                raise PermanentError(f"{what}: part has Content-Type {part.content_type}")
            part.copy_to(out)
        if count == 0:
            raise PermanentError(f"{what}: multipart answer has no part")


def _check_part10(handle: BinaryIO, what: str) -> None:
    """A Part-10 file has 'DICM' at offset 128 (PS3.10 7.1); anything else is not an instance."""
    handle.seek(128)
    if handle.read(4) != b"DICM":
        raise PermanentError(f"{what}: retrieved data is not a DICOM Part-10 file")
