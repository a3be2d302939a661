"""Folder destination: each instance written as ``<Study>/<Series>/<SOP Instance>.dcm`` under
a local or mounted directory, whole (tmp, fsync, rename), so a reader never sees half a file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from adapter.deadletter import fsync_dir
from adapter.destinations.base import DeliveryOutcome
from adapter.dicomweb.json_model import is_valid_uid
from adapter.errors import TransientError
from adapter.pipeline.instance import Instance

__all__ = ["FolderDestination", "instance_relpath"]


def instance_relpath(instance: Instance) -> str:
    """``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``; a UID that is not a
    valid UID (it could name a path) is replaced by ``unknown``."""
    meta = instance.meta
    parts = [meta.study_instance_uid, meta.series_instance_uid, meta.sop_instance_uid]
    safe = [p if p and is_valid_uid(p) else "unknown" for p in parts]
    return f"{safe[0]}/{safe[1]}/{safe[2]}.dcm"


class FolderDestination:
    """Writes into ``root``; a re-sent instance replaces its earlier copy."""

    kind = "folder"
    max_batch = 1

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = Path(root)

    def deliver(self, instances: Sequence[Instance]) -> list[DeliveryOutcome]:
        return [self._write(i) for i in instances]

    def _write(self, instance: Instance) -> DeliveryOutcome:
        target = self.root / instance_relpath(instance)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(instance.path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except OSError as exc:  # full disk, unmounted share: worth another try
            tmp.unlink(missing_ok=True)
            raise TransientError(f"cannot write {target.parent}: {exc.strerror}") from exc
        return DeliveryOutcome.delivered()

    def close(self) -> None:
        """Nothing to release."""
