"""Batched STOW-RS straight into the store, two ways: ``requests`` with a generator body
(chunked transfer encoding), and the adapter's own ``StowClient`` (a file-like body with a
Content-Length). Both stream the files; neither holds a batch in memory.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from benchmarks.data import Instance

__all__ = [
    "STOW_VARIANTS",
    "batches",
    "stow_client_available",
    "stow_generator",
    "stow_with_client",
]

_CHUNK = 1 << 20
_REFERENCED_SOP_SEQUENCE = "00081199"


def batches(instances: Sequence[Instance], size: int) -> list[list[Instance]]:
    return [list(instances[i : i + size]) for i in range(0, len(instances), size)]


def _multipart(paths: Sequence[Path], boundary: str) -> Iterator[bytes]:
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
    for path in paths:
        yield head
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def _run_batches(
    work: Sequence[list[Instance]], concurrency: int, post: Callable[[list[Instance]], int]
) -> int:
    if concurrency <= 1:
        return sum(post(b) for b in work)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stow") as pool:
        return sum(pool.map(post, work))


def stow_generator(
    base_url: str,
    instances: Sequence[Instance],
    batch: int,
    concurrency: int,
    timeout: float = 600.0,
) -> int:
    """POST ``{base_url}/studies`` per batch with a generator body; returns instances stored."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def post(items: list[Instance]) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            with lock:
                sessions.append(session)
        boundary = f"bench-{uuid.uuid4().hex}"
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        body = _multipart([i.path for i in items], boundary)
        with session.post(
            f"{base_url}/studies", data=body, headers=headers, timeout=(10, timeout)
        ) as r:
            if r.status_code != 200:
                raise RuntimeError(f"STOW-RS answered {r.status_code}: {r.text[:300]}")
            answer = r.json()
            dataset = answer[0] if isinstance(answer, list) else answer
            return len(dataset.get(_REFERENCED_SOP_SEQUENCE, {}).get("Value", []))

    try:
        return _run_batches(batches(instances, batch), concurrency, post)
    finally:
        for s in sessions:
            s.close()


def stow_client_available() -> str | None:
    """None if the adapter's StowClient can be imported, else why not."""
    try:
        from adapter.dicomweb.session import build_session  # noqa: F401
        from adapter.dicomweb.stow import StowClient  # noqa: F401
    except ImportError as exc:
        return f"adapter.dicomweb.stow not importable: {exc}"
    return None


def stow_with_client(
    base_url: str,
    instances: Sequence[Instance],
    batch: int,
    concurrency: int,
    timeout: float = 600.0,
) -> int:
    """The same batches through ``adapter.dicomweb.stow.StowClient.store_instances``."""
    from adapter.dicomweb.session import AuthSettings, SessionSettings, build_session
    from adapter.dicomweb.stow import StowClient, StowItem

    session = build_session(
        SessionSettings(
            base_url=base_url,
            auth=AuthSettings(kind="none"),
            read_timeout=timeout,
            pool_size=max(4, concurrency),
        )
    )
    client = StowClient(session, base_url)

    def post(items: list[Instance]) -> int:
        outcomes = client.store_instances(
            [StowItem(i.path, i.sop_class_uid, i.sop_instance_uid, i.study_uid) for i in items]
        )
        failed = [o for o in outcomes.values() if not o.stored]
        if failed:
            raise RuntimeError(f"StowClient: {len(failed)} not stored, e.g. {failed[0]}")
        return len(outcomes)

    try:
        return _run_batches(batches(instances, batch), concurrency, post)
    finally:
        session.close()


STOW_VARIANTS: dict[str, Callable[[str, Sequence[Instance], int, int], int]] = {
    "requests": stow_generator,
    "StowClient": stow_with_client,
}
