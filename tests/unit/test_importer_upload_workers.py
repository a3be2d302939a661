"""The store's STOW-RS workers: as configured with ack after-spool; with ack after-upload at
least one per pooled connection, so that every waiting association has its request in flight."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.config import load_config_data
from importer.config import STORE_DESTINATION, ImporterConfig
from importer.plugin import ImporterPlugin

BASE: dict[str, Any] = {"dicomweb": {"url": "http://127.0.0.1:1/dicom-web"}}


def store_delivery(importer: dict[str, Any], dicomweb: dict[str, Any] | None = None) -> Any:
    site = load_config_data(
        {"dicomweb": {**BASE["dicomweb"], **(dicomweb or {})}, "importer": importer}
    )
    config = site.plugins["importer"]
    assert isinstance(config, ImporterConfig)
    return ImporterPlugin.destinations(site.core, config)[STORE_DESTINATION].delivery


@pytest.mark.parametrize(
    ("importer", "dicomweb", "workers", "linger"),
    [
        ({}, None, 4, 0.05),
        ({"upload": {"workers": 6}}, None, 6, 0.05),
        ({"ack": "after-upload"}, None, 16, 0.0),
        ({"ack": "after-upload"}, {"pool_size": 8}, 8, 0.0),
        ({"ack": "after-upload", "upload": {"workers": 32}}, None, 32, 0.0),
    ],
)
def test_store_workers(
    importer: dict[str, Any], dicomweb: dict[str, Any] | None, workers: int, linger: float
) -> None:
    delivery = store_delivery(importer, dicomweb)
    assert (delivery.workers, delivery.batch_linger) == (workers, linger)
