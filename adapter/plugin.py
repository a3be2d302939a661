"""The one small interface between the core and its plugins (importer, exporter, ...).

A plugin is found through the ``dicom_adapter.plugins`` entry-point group, owns its config
section's model, and turns its validated section into :class:`~adapter.service.Service` objects
that the core supervises. The core never imports a plugin module by name.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:
    import requests

    from adapter.config import CoreConfig, DicomwebConfig, RetryConfig, SiteConfig
    from adapter.deadletter import DeadLetterQueue
    from adapter.retry import RetryPolicy
    from adapter.service import Service

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "PluginContext", "discover_plugins"]

ENTRY_POINT_GROUP = "dicom_adapter.plugins"


@dataclass
class PluginContext:
    """What the core hands a plugin when building its services: config, shared clients, stop."""

    site: SiteConfig
    stop_event: threading.Event = field(default_factory=threading.Event)
    _sessions: dict[str, requests.Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def core(self) -> CoreConfig:
        return self.site.core

    def retry_policy(self, override: RetryConfig | None = None) -> RetryPolicy:
        """The site's retry policy (one for every path, so behaviour is predictable), or a
        destination's own ``retry`` block."""
        from adapter.retry import RetryPolicy

        r = override or self.core.retry
        return RetryPolicy(
            max_attempts=r.max_attempts,
            max_elapsed=r.max_elapsed,
            poison_attempts=r.poison_attempts,
            initial_delay=r.initial_delay,
            max_delay=r.max_delay,
            multiplier=r.multiplier,
            jitter=r.jitter,
            retry_http_statuses=RetryPolicy().retry_http_statuses
            | frozenset(r.extra_http_statuses),
        )

    def dicomweb_session(self, cfg: DicomwebConfig) -> requests.Session:
        """One pooled, authenticated session per DICOMweb base URL, shared by all services."""
        from adapter.dicomweb.session import AuthSettings, SessionSettings, build_session

        with self._lock:
            if cfg.url not in self._sessions:
                a = cfg.auth
                settings = SessionSettings(
                    base_url=cfg.url,
                    auth=AuthSettings(
                        kind=a.kind,
                        scopes=a.scopes,
                        token_env=a.token_env,
                        token_file=str(a.token_file) if a.token_file else None,
                        username=a.username,
                        password_env=a.password_env,
                        password_file=str(a.password_file) if a.password_file else None,
                    ),
                    connect_timeout=cfg.connect_timeout,
                    read_timeout=cfg.read_timeout,
                    pool_size=cfg.pool_size,
                    verify=cfg.verify if isinstance(cfg.verify, bool) else str(cfg.verify),
                )
                self._sessions[cfg.url] = build_session(settings)
            return self._sessions[cfg.url]

    def close(self) -> None:
        """Close pooled HTTP connections."""
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


@runtime_checkable
class Plugin(Protocol):
    """What a plugin provides. ``name`` is its YAML section key."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def check(self, core: CoreConfig, config: Any) -> list[str]:
        """Cross-section checks (e.g. 'needs dicomweb'); returns problems as 'key: message'."""
        ...

    def build(self, context: PluginContext, config: Any) -> Sequence[Service]:
        """Create (not start) the services that do this plugin's work."""
        ...

    def dead_letters(self, core: CoreConfig, config: Any) -> DeadLetterQueue | None:
        """This plugin's dead-letter queue for ``dicom-adapter deadletters`` (None: has none)."""
        ...


@cache
def discover_plugins() -> dict[str, Plugin]:
    """Load every installed plugin once; a broken plugin is an error that names it."""
    from adapter.errors import ConfigError

    found: dict[str, Plugin] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # an import error in a plugin must not look like a config error
            raise ConfigError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        plugin = cls()
        if not isinstance(plugin, Plugin):
            raise ConfigError(f"plugin {ep.name!r} ({ep.value}) does not implement Plugin")
        found[plugin.name] = plugin
    return found
