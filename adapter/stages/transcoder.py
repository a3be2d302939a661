"""The transcoder: one file in, the same instance in another transfer syntax out, frame by frame
through worker processes. Used by the transcode stage and by the DIMSE export's conversion to a
syntax the PACS accepted (one code path, one pool of workers per process).

The codecs are CPU-bound C code under the GIL's nose: they run in a ``ProcessPoolExecutor``
(spawn) so the DIMSE receive and the routing threads keep their core. At most
``max_in_flight`` frames (and ``max_in_flight_bytes`` of source frames) are queued per call, so
a 1 GiB multi-frame instance costs a few frames of memory in the parent and in each worker.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import UID, generate_uid

from adapter.errors import PermanentError
from adapter.spool_files import SpoolMeta, read_spool_meta
from adapter.stages.transcode_codec import (
    NATIVE_TARGETS,
    FramePlan,
    UnsupportedError,
    make_plan,
    transcode_frame,
)
from adapter.stages.transcode_config import LOSSLESS_TARGETS
from adapter.stages.transcode_io import Part10Writer, open_source

__all__ = [
    "SyntaxConverter",
    "TranscodeOptions",
    "Transcoder",
    "UnsupportedError",
    "shared_transcoder",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_WORKERS = 4


def default_workers() -> int:
    return max(1, min(DEFAULT_MAX_WORKERS, os.cpu_count() or 1))


@dataclass(frozen=True)
class TranscodeOptions:
    """How to transcode: the target and its options (see TranscodeStageConfig)."""

    transfer_syntax: str
    colour_transform: bool = True
    lossy: tuple[tuple[str, Any], ...] = ()
    new_instance_uid_when_lossy: bool = True


def _warm() -> int:
    """A no-op job: imports the codecs in a fresh worker."""
    return os.getpid()


class Transcoder:
    """A pool of ``workers`` codec processes, started on first use and shared by its users
    (each :meth:`acquire` is paired with a :meth:`release`; the last one stops the pool)."""

    def __init__(
        self, workers: int = 0, *, max_in_flight: int = 0, max_in_flight_bytes: int = 64 << 20
    ) -> None:
        self.workers = workers or default_workers()
        self.max_in_flight = max_in_flight or 2 * self.workers + 1
        self.max_in_flight_bytes = max_in_flight_bytes
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._users = 0

    # ------------------------------------------------------------------ pool
    def acquire(self) -> Transcoder:
        with self._lock:
            self._users += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            pool = self._pool if self._users == 0 else None
            if pool is not None:
                self._pool = None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            return self._pool

    def _broken(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        """The codec processes' ids (for measurements), starting them if need be."""
        pool = self._executor()
        for future in [pool.submit(_warm) for _ in range(self.workers)]:
            future.result()
        return sorted(p.pid for p in (pool._processes or {}).values() if p.pid is not None)

    # ------------------------------------------------------------------ transcoding
    def transcode(
        self, src: Path, dst: Path, options: TranscodeOptions, scratch: Path | None = None
    ) -> SpoolMeta:
        """Write ``src`` to ``dst`` in ``options.transfer_syntax``; returns the output's UIDs.

        Raises :class:`UnsupportedError` (the target cannot hold it, no decoder, a frame that does
        not decode: nothing was written) or PermanentError (a codec worker died).
        """
        target = UID(options.transfer_syntax)
        scratch = scratch or dst.parent
        try:
            with open_source(src, scratch) as source:
                if source.value_offset is None:  # no Pixel Data: only the encoding changes
                    self._without_pixels(src, dst, target)
                    return read_spool_meta(dst)
                plan = make_plan(
                    source.header,
                    str(source.transfer_syntax),
                    str(target),
                    colour_transform=options.colour_transform,
                    lossy=dict(options.lossy) or None,
                )
                header = source.header
                plan.header_updates(header, dict(options.lossy).get("compression_ratio"))
                file_meta = source.file_meta
                if plan.lossy and options.new_instance_uid_when_lossy:
                    uid = generate_uid()
                    header.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID = uid
                with open(dst, "wb") as out:
                    writer = Part10Writer(out, target, plan.native_out, plan.bits_allocated)
                    writer.begin(file_meta, header, source.frames, plan.frame_length)
                    for data in self._frames(plan, source.iter_frames()):
                        writer.frame(data)
                    writer.end(source.trailing())
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
        return read_spool_meta(dst)

    def _without_pixels(self, src: Path, dst: Path, target: UID) -> None:
        if target.is_compressed:
            raise UnsupportedError(f"no Pixel Data to encode in {target.name}")
        ds = dcmread(src)  # no pixels: small
        ds.file_meta.TransferSyntaxUID = target
        ds.save_as(dst, enforce_file_format=True)

    def _frames(self, plan: FramePlan, frames: Iterable[bytes]) -> Iterator[bytes]:
        """Each frame transcoded by a worker, in order, with a bounded number in flight."""
        pool = self._executor()
        pending: deque[tuple[Future[bytes], int]] = deque()
        queued = 0
        try:
            for data in frames:
                while pending and (
                    len(pending) >= self.max_in_flight
                    or queued + len(data) > self.max_in_flight_bytes
                ):
                    future, size = pending.popleft()
                    queued -= size
                    yield self._result(pool, future, plan)
                pending.append((pool.submit(transcode_frame, plan, data), len(data)))
                queued += len(data)
                del data
            while pending:
                future, _ = pending.popleft()
                yield self._result(pool, future, plan)
        finally:
            for future, _ in pending:
                future.cancel()

    def _result(self, pool: ProcessPoolExecutor, future: Future[bytes], plan: FramePlan) -> bytes:
        try:
            return future.result()
        except BrokenProcessPool:
            self._broken(pool)
            raise PermanentError(
                f"a codec worker died transcoding {UID(plan.source_ts).name} to "
                f"{UID(plan.target_ts).name}"
            ) from None
        except UnsupportedError:
            raise
        except Exception as exc:  # pydicom/codec errors: ValueError, RuntimeError...
            raise UnsupportedError(str(exc)[:300]) from None


_SHARED: dict[int, Transcoder] = {}
_SHARED_LOCK = threading.Lock()


def shared_transcoder(workers: int = 0) -> Transcoder:
    """The process's transcoder with ``workers`` workers (0: the default), acquired once more;
    the caller calls ``release()`` when done with it."""
    workers = workers or default_workers()
    with _SHARED_LOCK:
        transcoder = _SHARED.get(workers)
        if transcoder is None:
            transcoder = _SHARED[workers] = Transcoder(workers)
        return transcoder.acquire()


#: What the export conversion can write, besides the stage's lossless targets.
_CONVERTIBLE = frozenset(LOSSLESS_TARGETS) | {str(ts) for ts in NATIVE_TARGETS}


class SyntaxConverter:
    """The DIMSE export's conversion (issue #10 item 6): a temporary copy of an instance in the
    first syntax a PACS accepted that the transcoder writes, made by the shared transcoder
    (the transcode stage's code and worker processes), acquired on first use."""

    def __init__(self, scratch: Path | None = None, workers: int = 0) -> None:
        self.scratch = scratch
        self.workers = workers
        self._transcoder: Transcoder | None = None
        self._lock = threading.Lock()

    def _get(self) -> Transcoder:
        with self._lock:
            if self._transcoder is None:
                self._transcoder = shared_transcoder(self.workers)
            return self._transcoder

    @contextlib.contextmanager
    def copy_in(self, path: Path, syntaxes: Sequence[str]) -> Iterator[Path]:
        """A copy of ``path`` in the first of ``syntaxes`` it can write (removed afterwards);
        raises PermanentError when none can be written or the instance cannot be decoded."""
        target = next((ts for ts in syntaxes if ts in _CONVERTIBLE), None)
        if target is None:
            raise PermanentError(f"no conversion to {', '.join(syntaxes)}")
        if self.scratch is not None:
            self.scratch.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="convert-", dir=self.scratch))
        try:
            out = folder / "copy.dcm"
            try:
                self._get().transcode(Path(path), out, TranscodeOptions(target), folder)
            except UnsupportedError as exc:
                raise PermanentError(str(exc)) from None
            yield out
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            transcoder, self._transcoder = self._transcoder, None
        if transcoder is not None:
            transcoder.release()
