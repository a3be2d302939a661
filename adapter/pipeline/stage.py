"""The stage seam: one step that takes an instance and returns it (perhaps rewritten to a new
file), or drops it with a reason, or raises PermanentError / TransientError.

Stages run after the spool (never inside a C-STORE handler), in the order a rule names them;
de-identification and transcoding plug in here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from adapter.pipeline.instance import Instance

__all__ = ["Drop", "Stage", "StageFactory", "StageResult"]


@dataclass(frozen=True)
class Drop:
    """A stage's decision not to send the instance anywhere, and why (logged, counted)."""

    reason: str


StageResult = Instance | Drop


@runtime_checkable
class Stage(Protocol):
    """One processing step; ``work_dir`` is where a rewritten file goes (same filesystem as
    the outboxes, so it can be hard-linked into them)."""

    name: str

    def process(self, instance: Instance, work_dir: Path) -> StageResult:
        """The instance to pass on (the same, or a new one in ``work_dir``), or a Drop."""
        ...


#: Builds a stage from its validated config block (registered per ``kind``).
StageFactory = Callable[[str, object], Stage]
StageRegistry = Mapping[str, Stage]
