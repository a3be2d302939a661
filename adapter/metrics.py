"""Prometheus metrics for the adapter, on a dedicated registry served by adapter.health at /metrics.

Every name starts with ``dicom_adapter_``. Labels are low-cardinality by contract: DIMSE service
names, status codes as ``0xNNNN``, configured AE titles, plugin names and outcome words -- never
UIDs, file names, patient data or free-form error text.

Usage from other modules::

    from adapter import metrics
    metrics.DIMSE_REQUESTS_TOTAL.labels(service="C-STORE", status="0x0000").inc()
    with metrics.DIMSE_REQUEST_DURATION_SECONDS.labels(service="C-STORE").time():
        ...
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

__all__ = [
    "ASSOCIATIONS_ACTIVE",
    "ASSOCIATIONS_TOTAL",
    "BUILD_INFO",
    "BYTES_RECEIVED_TOTAL",
    "DEAD_LETTERS_TOTAL",
    "DIMSE_REQUESTS_TOTAL",
    "DIMSE_REQUEST_DURATION_SECONDS",
    "DIMSE_SERVICES",
    "EXPORT_DELIVERIES_TOTAL",
    "EXPORT_LATENCY_SECONDS",
    "EXPORT_MESSAGES_ACKED_TOTAL",
    "EXPORT_MESSAGES_DEAD_LETTERED_TOTAL",
    "EXPORT_MESSAGES_NACKED_TOTAL",
    "EXPORT_MESSAGES_RECEIVED_TOTAL",
    "INSTANCES_FAILED_TOTAL",
    "INSTANCES_RECEIVED_TOTAL",
    "INSTANCES_SPOOLED_TOTAL",
    "INSTANCES_UPLOADED_TOTAL",
    "PREFIX",
    "PROCESS",
    "REGISTRY",
    "RETRIES_TOTAL",
    "SPOOL_BYTES",
    "SPOOL_DEPTH",
    "SPOOL_OLDEST_AGE_SECONDS",
    "UPLOAD_BATCHES_TOTAL",
    "UPLOAD_BATCH_DURATION_SECONDS",
    "UPLOAD_RESULTS_TOTAL",
    "dimse_status_label",
    "package_version",
    "render_latest",
    "set_spool_bytes_callback",
    "set_spool_depth_callback",
    "set_spool_oldest_age_callback",
]

PREFIX = "dicom_adapter_"
"""Common prefix of every metric name exported by this module."""

REGISTRY = CollectorRegistry(auto_describe=True)
"""Dedicated registry: only adapter metrics (other libraries' default collectors stay out)."""

PROCESS = ProcessCollector(namespace="dicom_adapter", registry=REGISTRY)
"""``dicom_adapter_process_*``: CPU seconds, resident memory, open fds, start time (Linux)."""

DIMSE_SERVICES: tuple[str, ...] = ("C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET")
"""Allowed values of the ``service`` label."""

_FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def dimse_status_label(status: int) -> str:
    """Format a DIMSE status code as the ``status`` label value, e.g. ``0xA700``."""
    return f"0x{status & 0xFFFF:04X}"


# --- build -------------------------------------------------------------------------------------

BUILD_INFO = Info(
    "dicom_adapter_build",
    "Adapter build information (version); set once at startup.",
    registry=REGISTRY,
)
"""Info metric ``dicom_adapter_build_info{version, python}``, set at import below."""


def package_version() -> str:
    """The installed dicom-adapter version (``0+unknown`` when run from a bare checkout)."""
    try:
        return version("dicom-adapter")
    except PackageNotFoundError:
        return "0+unknown"


BUILD_INFO.info({"version": package_version(), "python": platform.python_version()})

# --- DIMSE associations and requests ----------------------------------------------------------

ASSOCIATIONS_TOTAL = Counter(
    "dicom_adapter_associations_total",
    "DIMSE associations requested by peers, by calling AE title and outcome.",
    ["calling_ae", "outcome"],
    registry=REGISTRY,
)
"""Labels: ``calling_ae`` (configured AE, or ``"other"`` for unknown peers), ``outcome``
(``accepted`` | ``rejected`` | ``aborted``)."""

ASSOCIATIONS_ACTIVE = Gauge(
    "dicom_adapter_associations_active",
    "DIMSE associations currently open.",
    registry=REGISTRY,
)
"""Open associations; ``inc()`` on accept, ``dec()`` on release/abort."""

DIMSE_REQUESTS_TOTAL = Counter(
    "dicom_adapter_dimse_requests_total",
    "DIMSE requests handled, by service and returned status.",
    ["service", "status"],
    registry=REGISTRY,
)
"""Labels: ``service`` (one of DIMSE_SERVICES), ``status`` (``dimse_status_label(code)``)."""

DIMSE_REQUEST_DURATION_SECONDS = Histogram(
    "dicom_adapter_dimse_request_duration_seconds",
    "Time to answer a DIMSE request, by service.",
    ["service"],
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)
"""Label: ``service`` (one of DIMSE_SERVICES)."""

BYTES_RECEIVED_TOTAL = Counter(
    "dicom_adapter_bytes_received_total",
    "Bytes of DICOM datasets received over DIMSE.",
    registry=REGISTRY,
)
"""No labels; ``inc(len(dataset_bytes))``."""

# --- importer: instances, spool, upload -------------------------------------------------------

INSTANCES_RECEIVED_TOTAL = Counter(
    "dicom_adapter_instances_received_total",
    "Instances received by C-STORE (before spooling).",
    registry=REGISTRY,
)
"""No labels."""

INSTANCES_SPOOLED_TOTAL = Counter(
    "dicom_adapter_instances_spooled_total",
    "Instances durably written to the spool.",
    registry=REGISTRY,
)
"""No labels."""

INSTANCES_UPLOADED_TOTAL = Counter(
    "dicom_adapter_instances_uploaded_total",
    "Instances accepted by the DICOMweb store (STOW-RS), including already-present conflicts.",
    registry=REGISTRY,
)
"""No labels."""

INSTANCES_FAILED_TOTAL = Counter(
    "dicom_adapter_instances_failed_total",
    "Instances that could not be spooled or uploaded, by reason class.",
    ["reason"],
    registry=REGISTRY,
)
"""Label ``reason``: ``transient`` | ``permanent`` | ``spool_full`` | ``invalid`` | ``other``."""

UPLOAD_BATCHES_TOTAL = Counter(
    "dicom_adapter_upload_batches_total",
    "STOW-RS batches sent, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
"""Label ``outcome``: ``success`` | ``partial`` | ``transient_error`` | ``permanent_error``."""

UPLOAD_RESULTS_TOTAL = Counter(
    "dicom_adapter_upload_results_total",
    "Per-instance STOW-RS results, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
"""Label ``outcome``: ``stored`` | ``conflict`` | ``warning`` | ``transient_error`` |
``permanent_error``."""

UPLOAD_BATCH_DURATION_SECONDS = Histogram(
    "dicom_adapter_upload_batch_duration_seconds",
    "Wall time of one STOW-RS batch request.",
    buckets=_SLOW_BUCKETS,
    registry=REGISTRY,
)
"""No labels."""

RETRIES_TOTAL = Counter(
    "dicom_adapter_retries_total",
    "Retries scheduled after a transient failure, by plugin.",
    ["plugin"],
    registry=REGISTRY,
)
"""Label ``plugin``: ``importer`` | ``exporter`` (plugin name)."""

DEAD_LETTERS_TOTAL = Counter(
    "dicom_adapter_dead_letters_total",
    "Items given up on and dead-lettered, by plugin and reason class.",
    ["plugin", "reason"],
    registry=REGISTRY,
)
"""Labels: ``plugin`` (plugin name), ``reason`` (error class name, e.g. ``PermanentError``,
or ``max_attempts``)."""

SPOOL_DEPTH = Gauge(
    "dicom_adapter_spool_depth",
    "Instances waiting in the spool for upload.",
    registry=REGISTRY,
)
"""Set directly, or register a callback with ``set_spool_depth_callback``."""

SPOOL_BYTES = Gauge(
    "dicom_adapter_spool_bytes",
    "Bytes used by instances waiting in the spool.",
    registry=REGISTRY,
)
"""Set directly, or register a callback with ``set_spool_bytes_callback``."""

SPOOL_OLDEST_AGE_SECONDS = Gauge(
    "dicom_adapter_spool_oldest_age_seconds",
    "Age of the oldest instance still in the spool (0 when empty).",
    registry=REGISTRY,
)
"""Computed at scrape time from the callback registered by the spool
(``set_spool_oldest_age_callback``)."""

# --- exporter ----------------------------------------------------------------------------------

EXPORT_MESSAGES_RECEIVED_TOTAL = Counter(
    "dicom_adapter_export_messages_received_total",
    "Pub/Sub messages received by the exporter.",
    registry=REGISTRY,
)
"""No labels."""

EXPORT_MESSAGES_ACKED_TOTAL = Counter(
    "dicom_adapter_export_messages_acked_total",
    "Pub/Sub messages acknowledged after delivery (or a deliberate skip).",
    registry=REGISTRY,
)
"""No labels."""

EXPORT_MESSAGES_NACKED_TOTAL = Counter(
    "dicom_adapter_export_messages_nacked_total",
    "Pub/Sub messages nacked for redelivery after a transient failure.",
    registry=REGISTRY,
)
"""No labels."""

EXPORT_MESSAGES_DEAD_LETTERED_TOTAL = Counter(
    "dicom_adapter_export_messages_dead_lettered_total",
    "Pub/Sub messages given up on and dead-lettered.",
    registry=REGISTRY,
)
"""No labels."""

EXPORT_DELIVERIES_TOTAL = Counter(
    "dicom_adapter_export_deliveries_total",
    "Instance deliveries to the export destination, by destination and outcome.",
    ["destination", "outcome"],
    registry=REGISTRY,
)
"""Labels: ``destination`` (configured name or kind, e.g. ``dimse:PACS``), ``outcome``
(``success`` | ``warning`` | ``transient_error`` | ``permanent_error``)."""

EXPORT_LATENCY_SECONDS = Histogram(
    "dicom_adapter_export_latency_seconds",
    "Time from Pub/Sub message receipt to finished delivery, by destination.",
    ["destination"],
    buckets=_SLOW_BUCKETS,
    registry=REGISTRY,
)
"""Label ``destination`` (same values as EXPORT_DELIVERIES_TOTAL)."""


# --- helpers -----------------------------------------------------------------------------------


def set_spool_depth_callback(callback: Callable[[], float]) -> None:
    """Make SPOOL_DEPTH read ``callback()`` at every scrape (the spool registers it)."""
    SPOOL_DEPTH.set_function(callback)


def set_spool_bytes_callback(callback: Callable[[], float]) -> None:
    """Make SPOOL_BYTES read ``callback()`` at every scrape (the spool registers it)."""
    SPOOL_BYTES.set_function(callback)


def set_spool_oldest_age_callback(callback: Callable[[], float]) -> None:
    """Make SPOOL_OLDEST_AGE_SECONDS read ``callback()`` at every scrape (seconds, 0 if empty)."""
    SPOOL_OLDEST_AGE_SECONDS.set_function(callback)


def render_latest() -> tuple[bytes, str]:
    """Serialize REGISTRY in the Prometheus text format; returns ``(body, content_type)``."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def _preinitialize() -> None:
    """Create the fixed-label series at zero so rates and alerts work before the first event."""
    for service in DIMSE_SERVICES:
        DIMSE_REQUEST_DURATION_SECONDS.labels(service=service)
    for outcome in ("success", "partial", "transient_error", "permanent_error"):
        UPLOAD_BATCHES_TOTAL.labels(outcome=outcome)
    for outcome in ("stored", "conflict", "warning", "transient_error", "permanent_error"):
        UPLOAD_RESULTS_TOTAL.labels(outcome=outcome)


_preinitialize()


# --- exporter, appended by the export path ---------------------------------------------------

EXPORT_MESSAGES_SKIPPED_TOTAL = Counter(
    "dicom_adapter_export_messages_skipped_total",
    "Pub/Sub messages acknowledged without delivery, by reason.",
    ["reason"],
    registry=REGISTRY,
)
"""Label ``reason``: ``echo`` (the instance came from the destination) | ``filtered``."""
for _reason in ("echo", "filtered"):
    EXPORT_MESSAGES_SKIPPED_TOTAL.labels(reason=_reason)
__all__ += ["EXPORT_MESSAGES_SKIPPED_TOTAL"]

# --- STOW-RS batches of every dicomweb destination (adapter/delivery.py) ------------------------

UPLOAD_BATCH_SIZE = Histogram(
    "dicom_adapter_upload_batch_size",
    "Instances per STOW-RS batch request (shows whether batching and linger work).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
    registry=REGISTRY,
)
"""No labels; ``observe(len(batch))``."""

__all__ += ["UPLOAD_BATCH_SIZE"]

# --- the pipeline: routing and per-destination delivery -----------------------------------------

ROUTED_TOTAL = Counter(
    "dicom_adapter_routed_total",
    "Instances put into a destination's outbox, by plugin, rule and destination.",
    ["plugin", "rule", "destination"],
    registry=REGISTRY,
)
"""Labels: ``plugin``, ``rule`` (configured rule name or ``default``), ``destination``."""

NOT_ROUTED_TOTAL = Counter(
    "dicom_adapter_not_routed_total",
    "Instances (or routes) left out, by plugin and reason.",
    ["plugin", "reason"],
    registry=REGISTRY,
)
"""Label ``reason``: ``rule`` (a drop rule or default drop) | ``stage`` | ``echo``."""

TRANSCODED_TOTAL = Counter(
    "dicom_adapter_transcoded_total",
    "Instances through a transcode stage, by plugin, stage and outcome.",
    ["plugin", "stage", "outcome"],
    registry=REGISTRY,
)
"""Label ``outcome``: ``transcoded`` | ``unchanged`` (already in the target) | ``unsupported``
(kept as it came, or rejected)."""

DELIVERIES_TOTAL = Counter(
    "dicom_adapter_deliveries_total",
    "Delivery outcomes per instance, by plugin, destination and outcome.",
    ["plugin", "destination", "outcome"],
    registry=REGISTRY,
)
"""Label ``outcome``: ``delivered`` | ``warning`` | ``transient_error`` | ``permanent_error``."""

DELIVERY_DURATION_SECONDS = Histogram(
    "dicom_adapter_delivery_duration_seconds",
    "Time of one delivery request (a STOW-RS batch, a C-STORE, an object upload).",
    ["plugin", "destination"],
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)

OUTBOX_DEPTH = Gauge(
    "dicom_adapter_outbox_depth",
    "Instances waiting in a destination's outbox (queued, delayed or in flight).",
    ["plugin", "destination"],
    registry=REGISTRY,
)

OUTBOX_OLDEST_AGE_SECONDS = Gauge(
    "dicom_adapter_outbox_oldest_age_seconds",
    "Age of the oldest instance in a destination's outbox (0 when empty).",
    ["plugin", "destination"],
    registry=REGISTRY,
)

DESTINATION_UP = Gauge(
    "dicom_adapter_destination_up",
    "1 while a destination's last delivery attempt worked, 0 while it is failing.",
    ["plugin", "destination"],
    registry=REGISTRY,
)

__all__ += [
    "DELIVERIES_TOTAL",
    "DELIVERY_DURATION_SECONDS",
    "DESTINATION_UP",
    "NOT_ROUTED_TOTAL",
    "OUTBOX_DEPTH",
    "OUTBOX_OLDEST_AGE_SECONDS",
    "ROUTED_TOTAL",
]
