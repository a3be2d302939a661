"""The lifecycle every peer the tests run shares: ``with Peer(...) as p`` starts it and cleans
it up (stop by PID, remove what it owns) however the block ends."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["ManagedPeer"]


class ManagedPeer:
    """Mixin: ``start()`` on enter, ``cleanup()`` on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
