"""The transcoding stage (issue #10 item 5): each instance re-encoded in the configured transfer
syntax by the process's :class:`~adapter.stages.transcoder.Transcoder` (frame by frame, in
worker processes). An instance already in the target passes as it is; one the target cannot
hold is kept as it came (``on_unsupported: keep``) or refused (``reject``)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom.uid import UID

from adapter import metrics
from adapter.errors import PermanentError, TransientError
from adapter.pipeline.instance import Instance
from adapter.pipeline.stage import StageResult
from adapter.stages.transcode_config import TranscodeStageConfig
from adapter.stages.transcoder import (
    TranscodeOptions,
    Transcoder,
    UnsupportedError,
    shared_transcoder,
)

__all__ = ["TranscodeStage"]

log = logging.getLogger(__name__)


class TranscodeStage:
    """A :class:`~adapter.pipeline.stage.Stage` that re-encodes instances."""

    def __init__(
        self,
        name: str,
        config: TranscodeStageConfig,
        plugin: str = "",
        transcoder: Transcoder | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.plugin = plugin
        self.target = UID(config.transfer_syntax)
        lossy = config.lossy.model_dump(exclude_none=True) if config.lossy else {}
        self.options = TranscodeOptions(
            config.transfer_syntax,
            colour_transform=config.colour_transform,
            lossy=tuple(sorted((k, v) for k, v in lossy.items() if k != "new_instance_uid")),
            new_instance_uid_when_lossy=lossy.get("new_instance_uid", True),
        )
        self.transcoder = transcoder or shared_transcoder(config.workers)
        self._closed = False

    @classmethod
    def from_config(cls, name: str, cfg: TranscodeStageConfig, context: Any) -> TranscodeStage:
        return cls(name, cfg, getattr(context, "plugin", ""))

    def process(self, instance: Instance, work_dir: Path) -> StageResult:
        source = instance.meta.transfer_syntax_uid
        if source == self.target:
            self._count("unchanged")
            return instance
        out = Path(work_dir) / f"{uuid.uuid4().hex}.{self.name}.dcm"
        uid = {"sop_instance_uid": instance.sop_instance_uid}
        try:
            meta = self.transcoder.transcode(instance.path, out, self.options, Path(work_dir))
        except UnsupportedError as exc:
            self._count("unsupported")
            if self.config.on_unsupported == "reject":
                raise PermanentError(
                    f"{self.name}: not transcoded to {self.target.name}: {exc}"
                ) from None
            log.warning(
                "%s: kept in %s, not transcoded to %s: %s",
                self.name,
                UID(source or "").name or "its syntax",
                self.target.name,
                exc,
                extra=uid,
            )
            return instance
        except OSError as exc:  # disk full, file gone: worth another try
            raise TransientError(f"{self.name}: transcoding failed: {exc.strerror}") from None
        self._count("transcoded")
        log.debug("%s: transcoded to %s", self.name, self.target.name, extra=uid)
        meta = replace(meta, calling_ae=instance.meta.calling_ae, called_ae=instance.meta.called_ae)
        return instance.rewritten(out, meta)

    def _count(self, outcome: str) -> None:
        metrics.TRANSCODED_TOTAL.labels(plugin=self.plugin, stage=self.name, outcome=outcome).inc()

    def close(self) -> None:
        """Release the worker processes (the last user stops them)."""
        if not self._closed:
            self._closed = True
            self.transcoder.release()
