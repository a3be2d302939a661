"""The adapter's exception tree; callers decide retry vs dead letter by class, not by message.

AdapterError
+-- ConfigError            bad YAML / flags; names the key path
+-- TransientError         worth retrying later (network, timeout, 408, 429, 5xx, PACS busy)
+-- PermanentError         retrying will not help (4xx, rejected dataset, refused SOP class)
+-- ListenError            a listener cannot bind its address (names address and port)
"""

from __future__ import annotations

__all__ = ["AdapterError", "ConfigError", "ListenError", "PermanentError", "TransientError"]


class AdapterError(Exception):
    """Base of every error the adapter raises on purpose."""


class ConfigError(AdapterError):
    """The site configuration or the command-line flags are invalid."""


class TransientError(AdapterError):
    """A failure that may go away: retry with backoff.

    ``http_status`` is set for HTTP answers; ``retry_after`` (seconds) when the peer said when;
    ``in_flight``: the connection broke while the request was in flight (reset, closed before
    an answer, read timeout), not before it (refused): maybe the request broke the peer.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        in_flight: bool = False,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.retry_after = retry_after
        self.in_flight = in_flight


class PermanentError(AdapterError):
    """A failure that retrying will not fix: dead-letter it with its reason."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        failure_reason: int | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.failure_reason = failure_reason


class ListenError(AdapterError, OSError):
    """A listener (DIMSE, health) cannot bind: one line naming what, address and port."""

    def __init__(self, what: str, bind: str, port: int, exc: OSError) -> None:
        reason = (exc.strerror or str(exc)).lower()
        super().__init__(f"{what}: cannot listen on {bind}:{port}: {reason}")
        self.bind, self.port = bind, port
