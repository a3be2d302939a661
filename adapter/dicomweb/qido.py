"""QIDO-RS (PS3.18 10.6): search studies, series and instances, paging with offset/limit so a
result set is never silently truncated.

Paging stops on a short page -- unless the server added the PS3.18 10.6.3.3 ``Warning: 299``
"additional results" header, which means it capped the page below our limit. A hard cap
(``max_results``) raises QidoResultLimitError instead of quietly dropping the rest.
Orthanc 1.10 + DICOMweb 1.7 answers an empty search with 200 and ``[]`` (not 204); both are
handled.

The query string is encoded by hand: the wildcards ``*`` and ``?`` (PS3.18 8.3.4.1, PS3.4
C.2.2.2.4) go as they are -- Orthanc 1.10 does not decode ``%2A``/``%3F`` and would match them
literally -- and everything else is percent-encoded (RFC 3986), which both Orthanc and the
Healthcare API decode. ``fuzzy_matching`` adds ``fuzzymatching=true`` (PS3.18 8.3.4.5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import requests

from adapter.dicomweb.json_model import is_dicom_json_object, validate_uid
from adapter.dicomweb.session import error_for_response, send
from adapter.errors import PermanentError

__all__ = ["QidoClient", "QidoResultLimitError", "query_string"]

_NO_MATCH: Mapping[str, str] = MappingProxyType({})
_RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}
_WILDCARDS = "*?"  # sent unencoded: see the module docstring


class QidoResultLimitError(PermanentError):
    """A search matched more than the configured hard cap; narrow the query or raise the cap."""


class QidoClient:
    """QIDO-RS searches against one DICOMweb base URL, yielding DICOM JSON objects."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        page_size: int = 1000,
        max_results: int | None = None,
        fuzzy_matching: bool = False,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self._session = session
        self._base = base_url.rstrip("/")
        self.page_size = page_size
        self.max_results = max_results
        self.fuzzy_matching = fuzzy_matching

    def search_for_studies(
        self,
        match: Mapping[str, str] = _NO_MATCH,
        includefield: Sequence[str] = (),
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``GET {base}/studies`` with attribute matching (PS3.18 8.3.4)."""
        return self._search("studies", match, includefield, limit)

    def search_for_series(
        self,
        study_instance_uid: str | None = None,
        match: Mapping[str, str] = _NO_MATCH,
        includefield: Sequence[str] = (),
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``GET {base}[/studies/{study}]/series``."""
        path = "series"
        if study_instance_uid is not None:
            path = f"studies/{validate_uid(study_instance_uid, 'Study Instance UID')}/series"
        return self._search(path, match, includefield, limit)

    def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        match: Mapping[str, str] = _NO_MATCH,
        includefield: Sequence[str] = (),
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``GET {base}[/studies/{study}[/series/{series}]]/instances``; a series without a
        study becomes a SeriesInstanceUID match (there is no /series/{uid}/instances resource)."""
        query = dict(match)
        path = "instances"
        if study_instance_uid is not None:
            study = validate_uid(study_instance_uid, "Study Instance UID")
            path = f"studies/{study}/instances"
            if series_instance_uid is not None:
                series = validate_uid(series_instance_uid, "Series Instance UID")
                path = f"studies/{study}/series/{series}/instances"
        elif series_instance_uid is not None:
            query["SeriesInstanceUID"] = validate_uid(series_instance_uid, "Series Instance UID")
        return self._search(path, query, includefield, limit)

    # ------------------------------------------------------------------ paging
    def _search(
        self,
        path: str,
        match: Mapping[str, str],
        includefield: Sequence[str],
        limit: int | None,
    ) -> Iterator[dict[str, Any]]:
        reserved = _RESERVED & {key.lower() for key in match}
        if reserved:
            raise ValueError(f"pass {sorted(reserved)} as arguments, not as match keys")
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        params: list[tuple[str, str]] = [(str(k), str(v)) for k, v in match.items()]
        if includefield:
            params.append(("includefield", ",".join(includefield)))
        if self.fuzzy_matching:
            params.append(("fuzzymatching", "true"))
        return self._pages(f"{self._base}/{path}", params, limit)

    def _pages(
        self, url: str, params: list[tuple[str, str]], limit: int | None
    ) -> Iterator[dict[str, Any]]:
        offset = 0
        yielded = 0
        previous_first: dict[str, Any] | None = None
        while limit is None or yielded < limit:
            want = self.page_size if limit is None else min(self.page_size, limit - yielded)
            paging = [("offset", str(offset)), ("limit", str(want))]
            page, more_hint = self._page(url, [*params, *paging])
            if page and offset > 0 and page[0] == previous_first:
                raise PermanentError(
                    f"QIDO-RS {url}: the server ignores 'offset' (page at offset {offset} repeats "
                    "the previous one); results cannot be paged reliably"
                )
            for result in page:
                if self.max_results is not None and yielded >= self.max_results:
                    raise QidoResultLimitError(
                        f"QIDO-RS {url} matched more than max_results={self.max_results}; "
                        "narrow the query or raise the cap (results are never truncated silently)"
                    )
                yielded += 1
                yield result
                if limit is not None and yielded >= limit:
                    return
            if not page or (len(page) < want and not more_hint):
                return
            previous_first = page[0]
            offset += len(page)

    def _page(self, url: str, params: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], bool]:
        """One page of results, and whether the server said more results exist."""
        what = f"QIDO-RS {url}"
        with send(
            self._session,
            "GET",
            f"{url}?{query_string(params)}",
            what,
            headers={"Accept": "application/dicom+json"},
        ) as response:
            if response.status_code == 204:
                return [], False
            if response.status_code != 200:
                raise error_for_response(response, what)
            warning = response.headers.get("Warning", "").lower()
            more = "299" in warning and ("additional results" in warning or "limit" in warning)
            if not response.content.strip():
                return [], more
            try:
                payload = json.loads(response.content)
            except ValueError:
                raise PermanentError(f"{what}: answer is not JSON") from None
        if not isinstance(payload, list) or not all(is_dicom_json_object(o) for o in payload):
            raise PermanentError(f"{what}: answer is not a DICOM JSON array")
        return payload, more


def query_string(params: Sequence[tuple[str, str]]) -> str:
    """``key=value&...`` with the DICOM wildcards left as they are, all else percent-encoded."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe=_WILDCARDS)}" for k, v in params)
