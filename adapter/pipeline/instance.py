"""What travels through the pipeline: a Part-10 file, the facts its header gave, where it came
from. Small and immutable; a stage that rewrites the file returns a new Instance."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from pydicom import dcmread
from pydicom.dataset import Dataset

from adapter.spool_files import SpoolMeta

__all__ = ["Instance", "Origin", "OriginKind"]

OriginKind = Literal["dimse", "pubsub", "file"]


@dataclass(frozen=True)
class Origin:
    """Where an instance came from: the DIMSE association (calling/called AE) or Pub/Sub."""

    kind: OriginKind = "dimse"
    calling_ae: str | None = None
    called_ae: str | None = None


@dataclass(frozen=True, eq=False)
class Instance:
    """One instance in flight: ``path`` to its Part-10 file, its UIDs, its origin.

    ``header()`` reads the data set up to Pixel Data once, on demand (rules that match on
    attributes beyond the UIDs); the pixel data is never read here.
    """

    path: Path
    meta: SpoolMeta
    origin: Origin = Origin()
    _header: list[Dataset] = field(default_factory=list, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def sop_instance_uid(self) -> str:
        return self.meta.sop_instance_uid

    @property
    def sop_class_uid(self) -> str:
        return self.meta.sop_class_uid

    def header(self) -> Dataset:
        """The data set without Pixel Data (and what follows it), read once and cached."""
        with self._lock:
            if not self._header:
                self._header.append(dcmread(self.path, stop_before_pixels=True, force=True))
            return self._header[0]

    def rewritten(self, path: Path, meta: SpoolMeta | None = None) -> Instance:
        """The same instance in a new file (a stage's output); the header is read again."""
        return replace(self, path=path, meta=meta or self.meta, _header=[], _lock=threading.Lock())
