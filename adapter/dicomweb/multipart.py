"""multipart/related (RFC 2387, PS3.18 8.6.1.2) bodies without holding instances in memory.

``MultipartRelatedBody`` is a re-readable file-like request body with an exact ``len()``, so
requests sends a Content-Length and streams it in small reads; ``iter_multipart_parts`` parses a
streamed WADO-RS answer part by part.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import requests
from requests.structures import CaseInsensitiveDict

from adapter.errors import PermanentError, TransientError

__all__ = ["MultipartRelatedBody", "Part", "iter_multipart_parts", "parse_content_type"]

DEFAULT_CHUNK = 1 << 20
_MAX_HEADER_BLOCK = 64 * 1024
_MAX_PREAMBLE = 1 << 20
# RFC 2046 5.1.1 bchars, 1..70 characters, not ending in a space.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into its lower-cased media type and parameters (names lower-cased,
    quoted values unquoted; a ';' inside quotes does not split)."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == ";" and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    media_type = pieces[0].strip().lower()
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, raw = piece.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
    return media_type, params


class MultipartRelatedBody:
    """A streaming multipart/related request body made of whole files, one part per file.

    ``len()`` is exact and computed from file sizes; ``read(n)`` returns at most ``n`` bytes and
    never holds more than one chunk of a file; ``reset()`` rewinds it for a re-send.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        content_type: str = "application/dicom",
        boundary: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        if not paths:
            raise ValueError("a multipart body needs at least one file")
        self._paths = [Path(p) for p in paths]
        self._length = 0
        self.boundary = boundary or f"dicom-adapter-{secrets.token_hex(24)}"
        if not _BOUNDARY_RE.fullmatch(self.boundary):
            raise ValueError(f"invalid multipart boundary {self.boundary!r}")
        if any(c in content_type for c in '"\r\n'):
            raise ValueError(f"invalid part content type {content_type!r}")
        self.content_type = content_type
        self.content_type_header = (
            f'multipart/related; type="{content_type}"; boundary={self.boundary}'
        )
        self.chunk_size = max(1, chunk_size)
        self._sizes = [p.stat().st_size for p in self._paths]
        self._head = f"--{self.boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")
        self._tail = f"--{self.boundary}--\r\n".encode("ascii")
        # Segments: bytes to send as-is, or an index into _paths.
        self._segments: list[bytes | int] = []
        for index in range(len(self._paths)):
            self._segments += [self._head, index, b"\r\n"]
        self._segments.append(self._tail)
        self._length = sum(
            len(s) if isinstance(s, bytes) else self._sizes[s] for s in self._segments
        )
        self._segment = 0
        self._offset = 0
        self._file: BinaryIO | None = None
        self._position = 0

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return f"MultipartRelatedBody({len(self._paths)} files, {self._length} bytes)"

    def tell(self) -> int:
        """Bytes handed out since the last reset."""
        return self._position

    def reset(self) -> None:
        """Rewind to the first byte (requests never re-sends a consumed body on its own)."""
        self.close()
        self._segment = 0
        self._offset = 0
        self._position = 0

    def close(self) -> None:
        """Close the file currently being read, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all remaining if ``n`` < 0); ``b""`` only at the end. A sized read
        stops at the end of a segment (a short read, as file objects may return): joining a
        part header to 1 MiB of file would copy the MiB once more."""
        whole = n is None or n < 0
        remaining = self._length - self._position if whole else n
        pieces: list[bytes] = []
        while remaining > 0 and self._segment < len(self._segments):
            piece = self._read_segment(remaining)
            if piece:
                pieces.append(piece)
                remaining -= len(piece)
                if not whole:
                    break
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._position += len(data)
        return data

    def _read_segment(self, limit: int) -> bytes:
        segment = self._segments[self._segment]
        if isinstance(segment, bytes):
            piece = segment[self._offset : self._offset + limit]
            self._offset += len(piece)
            if self._offset >= len(segment):
                self._next_segment()
            return piece
        path, size = self._paths[segment], self._sizes[segment]
        if self._file is None:
            try:
                self._file = path.open("rb")
            except OSError as exc:
                raise PermanentError(f"cannot read {path} for upload: {exc.strerror}") from None
        want = min(limit, self.chunk_size, size - self._offset)
        piece = self._file.read(want) if want > 0 else b""
        self._offset += len(piece)
        if want > 0 and not piece:
            raise TransientError(f"{path} shrank while being uploaded (expected {size} bytes)")
        if self._offset >= size:
            if self._file.read(1):
                raise TransientError(f"{path} grew while being uploaded (expected {size} bytes)")
            self._next_segment()
        return piece

    def _next_segment(self) -> None:
        self.close()
        self._segment += 1
        self._offset = 0


class Part:
    """One part of a streamed multipart answer: its headers, and its body read in chunks.

    The body must be consumed before the next part is requested (the iterator drains it if not).
    """

    def __init__(self, headers: CaseInsensitiveDict[str], reader: _MultipartReader) -> None:
        self.headers = headers
        self._reader = reader
        self._done = False

    @property
    def content_type(self) -> str:
        """The part's media type, lower-cased, without parameters ('' if none)."""
        return parse_content_type(self.headers.get("Content-Type", ""))[0]

    def iter_content(self) -> Iterator[bytes]:
        """The body in chunks of at most about the reader's chunk size."""
        while not self._done:
            chunk = self._reader.next_body_chunk()
            if chunk is None:
                self._done = True
                return
            if chunk:
                yield chunk

    def read(self) -> bytes:
        """The whole remaining body (only for small parts)."""
        return b"".join(self.iter_content())

    def copy_to(self, out: BinaryIO) -> int:
        """Write the body to ``out`` chunk by chunk; returns the number of bytes written."""
        total = 0
        for chunk in self.iter_content():
            out.write(chunk)
            total += len(chunk)
        return total

    def drain(self) -> None:
        """Skip whatever is left of the body."""
        for _ in self.iter_content():
            pass


class _MultipartReader:
    """Incremental RFC 2046 parser over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes], boundary: str) -> None:
        self._chunks = chunks
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        # A leading CRLF lets the first boundary line match the same delimiter as later ones.
        self._buf = bytearray(b"\r\n")
        self._in_body = False

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buf += chunk
                return True
        return False

    def skip_preamble(self) -> None:
        """Discard everything up to and including the first delimiter."""
        skipped = 0
        while True:
            index = self._buf.find(self._delimiter)
            if index >= 0:
                del self._buf[: index + len(self._delimiter)]
                return
            keep = len(self._delimiter) - 1
            if len(self._buf) > keep:
                skipped += len(self._buf) - keep
                del self._buf[:-keep]
            if skipped > _MAX_PREAMBLE or not self._fill():
                raise PermanentError("multipart answer has no part with the announced boundary")

    def next_headers(self) -> CaseInsensitiveDict[str] | None:
        """Headers of the next part, or None after the closing delimiter (or a clean EOF)."""
        while len(self._buf) < 2:
            if not self._fill():
                return None
        if self._buf.startswith(b"--"):
            return None
        while True:
            line_end = self._buf.find(b"\r\n")
            if line_end >= 0:
                break
            if len(self._buf) > _MAX_HEADER_BLOCK or not self._fill():
                raise TransientError("multipart answer ended inside a boundary line")
        del self._buf[: line_end + 2]  # transport padding after the boundary, then CRLF
        if self._buf.startswith(b"\r\n"):
            del self._buf[:2]
            block = b""
        else:
            while (end := self._buf.find(b"\r\n\r\n")) < 0:
                if len(self._buf) > _MAX_HEADER_BLOCK:
                    raise PermanentError("multipart part headers exceed 64 KiB")
                if not self._fill():
                    raise TransientError("multipart answer ended inside part headers")
            block = bytes(self._buf[:end])
            del self._buf[: end + 4]
        self._in_body = True
        return _parse_headers(block)

    def _take(self, n: int) -> bytes:
        """The first ``n`` buffered bytes, copied once (a bytearray slice would copy twice)."""
        with memoryview(self._buf) as view:
            data = bytes(view[:n])
        del self._buf[:n]
        return data

    def next_body_chunk(self) -> bytes | None:
        """The next piece of the current part's body; None once its delimiter is reached."""
        if not self._in_body:
            return None
        while True:
            index = self._buf.find(self._delimiter)
            if index >= 0:
                data = self._take(index)
                del self._buf[: len(self._delimiter)]
                self._in_body = False
                return data
            safe = len(self._buf) - (len(self._delimiter) - 1)
            if safe > 0:
                return self._take(safe)
            if not self._fill():
                raise TransientError("multipart answer ended inside a part (truncated transfer)")


def _parse_headers(block: bytes) -> CaseInsensitiveDict[str]:
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    last: str | None = None
    for line in block.decode("latin-1").split("\r\n"):
        if line[:1] in (" ", "\t") and last is not None:
            headers[last] = f"{headers[last]} {line.strip()}"
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip():
            last = name.strip()
            headers[last] = value.strip()
    return headers


def iter_multipart_parts(
    response: requests.Response, chunk_size: int = DEFAULT_CHUNK
) -> Iterator[Part]:
    """Parts of a streamed multipart answer (``stream=True``), one at a time, each body read in
    chunks of ``chunk_size`` so memory stays flat; TransientError if the transfer is cut short."""
    media_type, params = parse_content_type(response.headers.get("Content-Type", ""))
    boundary = params.get("boundary")
    if not media_type.startswith("multipart/") or not boundary:
        raise PermanentError(
            f"expected a multipart answer with a boundary, got Content-Type {media_type or '-'}"
        )

    def chunks() -> Iterator[bytes]:
        try:
            yield from response.iter_content(chunk_size)
        except requests.RequestException as exc:
            raise TransientError(f"multipart answer interrupted: {exc}"[:300]) from exc

    reader = _MultipartReader(chunks(), boundary)
    reader.skip_preamble()
    while (headers := reader.next_headers()) is not None:
        part = Part(headers, reader)
        yield part
        part.drain()
