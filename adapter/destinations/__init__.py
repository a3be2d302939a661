"""Destinations: one module per kind, one small protocol (:mod:`.base`), and the registry
that pairs each kind's config model (:mod:`.config`) with the handler that delivers to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapter.destinations.base import DeliveryOutcome, Destination
from adapter.destinations.config import (
    DeliveryConfig,
    DestinationConfig,
    DicomwebDestination,
    DimseDestination,
    FolderDestination,
    GcsDestination,
)

if TYPE_CHECKING:
    from adapter.plugin import PluginContext

__all__ = [
    "DEFAULT_WORKERS",
    "DeliveryConfig",
    "DeliveryOutcome",
    "Destination",
    "DestinationConfig",
    "DicomwebDestination",
    "DimseDestination",
    "FolderDestination",
    "GcsDestination",
    "build_destination",
    "echo_aets",
    "workers_for",
]

#: Delivery workers per kind when the config leaves ``delivery.workers`` unset.
DEFAULT_WORKERS = {"dicomweb": 4, "gcs": 4, "folder": 1}


def _dicomweb(name: str, cfg: Any, context: PluginContext) -> Destination:
    from adapter.destinations.dicomweb import StowDestination
    from adapter.dicomweb.stow import StowClient

    session = context.dicomweb_session(cfg.as_dicomweb())
    return StowDestination(
        name,
        StowClient(session, cfg.url),
        max_batch=cfg.delivery.batch_max_instances or 20,
        on_conflict=cfg.on_conflict,
    )


def _dimse(name: str, cfg: Any, context: PluginContext) -> Destination:
    from adapter.destinations.dimse import StoreScuDestination
    from adapter.dimse.client import StoreScu

    scu = StoreScu(
        cfg.ae_title,
        cfg.host,
        cfg.port,
        calling_ae_title=cfg.calling_ae_title,
        pool_size=cfg.pool_size,
        acse_timeout=cfg.acse_timeout,
        dimse_timeout=cfg.dimse_timeout,
        network_timeout=cfg.network_timeout,
        idle_timeout=cfg.idle_timeout,
    )
    return StoreScuDestination(name, scu)


def _folder(name: str, cfg: Any, context: PluginContext) -> Destination:
    from adapter.destinations.folder import FolderDestination as Folder

    return Folder(name, cfg.path)


def _gcs(name: str, cfg: Any, context: PluginContext) -> Destination:
    from adapter.destinations.gcs import GcsObjectDestination

    return GcsObjectDestination.from_config(name, cfg)


_FACTORIES: dict[type[Any], Callable[[str, Any, PluginContext], Destination]] = {
    DicomwebDestination: _dicomweb,
    DimseDestination: _dimse,
    FolderDestination: _folder,
    GcsDestination: _gcs,
}


def build_destination(name: str, config: DestinationConfig, context: PluginContext) -> Destination:
    """The handler for one configured destination."""
    return _FACTORIES[type(config)](name, config, context)


def workers_for(config: DestinationConfig) -> int:
    """Delivery workers: configured, else one per pooled association (DIMSE), else the kind's."""
    if config.delivery.workers:
        return config.delivery.workers
    if isinstance(config, DimseDestination):
        return config.pool_size
    return DEFAULT_WORKERS[config.kind]


def echo_aets(config: DestinationConfig) -> frozenset[str]:
    """The AE titles whose instances never go back to this destination (DIMSE only)."""
    if isinstance(config, DimseDestination):
        return frozenset({config.ae_title, *config.echo_aets})
    return frozenset()
