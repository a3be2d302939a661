"""Filters, the echo guard, and the ack / nack / dead-letter rules of one message."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest

from adapter.deadletter import DeadLetterQueue
from adapter.delivery import DeliveryService
from adapter.destinations.base import DeliveryOutcome
from adapter.errors import PermanentError, TransientError
from adapter.pipeline.instance import Instance
from adapter.pipeline.pipeline import Pipeline
from adapter.pipeline.router import Router
from adapter.pipeline.rules import RoutingConfig
from adapter.provenance import ProvenanceLog
from adapter.retry import RetryPolicy
from adapter.spool import Spool
from exporter.config import FilterConfig
from exporter.delivery import DelayedNacks, MessageHandler
from exporter.echo_guard import EchoGuard
from exporter.filters import NotificationFilter
from exporter.notification import parse_notification
from tests.peers.datasets import make_ct_series
from tests.peers.wait import wait_until

STORE = "projects/p/locations/l/datasets/d/dicomStores/s1"


def note(modality: str | None = None, action: str | None = None, **attrs: str) -> Any:
    data = f"{STORE}/dicomWeb/studies/1.2/series/1.2.3/instances/1.2.3.4"
    extra = {k: v for k, v in {"modality": modality, "action": action}.items() if v}
    return parse_notification(data.encode(), {**extra, **attrs})


# ------------------------------------------------------------------------------------ filters
@pytest.mark.parametrize(
    "action", [None, "StoreInstances", "storeinstances", "ImportDicomData", "create"]
)
def test_store_actions_and_unlabelled_messages_pass_by_default(action: str | None) -> None:
    assert NotificationFilter(FilterConfig()).skip_reason(note(action=action)) is None


@pytest.mark.parametrize("action", ["DeleteInstances", "DeleteStudy", "delete"])
def test_deletions_are_never_exported_even_if_listed(action: str) -> None:
    f = NotificationFilter(FilterConfig(actions=(action,)))
    assert "deletions" in (f.skip_reason(note(action=action)) or "")


def test_unknown_action_is_skipped() -> None:
    assert "filters.actions" in (
        NotificationFilter(FilterConfig()).skip_reason(note(action="SetBlobSettings")) or ""
    )


def test_modality_from_attribute_or_from_header() -> None:
    f = NotificationFilter(FilterConfig(modalities=("CT", "mr")))
    assert f.skip_reason(note(modality="CT")) is None
    assert f.skip_reason(note(modality="MR")) is None
    assert "modality US" in (f.skip_reason(note(modality="US")) or "")
    unlabelled = note()
    assert f.skip_reason(unlabelled) is None and f.needs_header
    ds = pydicom.Dataset()
    ds.Modality = "CT"
    assert f.skip_reason_for_header(unlabelled, ds) is None
    ds.Modality = "US"
    assert "modality US" in (f.skip_reason_for_header(unlabelled, ds) or "")


def test_store_name_matches_full_name_or_store_id() -> None:
    assert NotificationFilter(FilterConfig(store_names=("s1",))).skip_reason(note()) is None
    assert NotificationFilter(FilterConfig(store_names=(STORE,))).skip_reason(note()) is None
    assert "store" in (
        NotificationFilter(FilterConfig(store_names=("s2",))).skip_reason(note()) or ""
    )


def test_message_attributes_and_dicom_keywords_match_patterns() -> None:
    f = NotificationFilter(
        FilterConfig(attributes={"site": "north-*", "InstitutionName": "General*"})
    )
    assert f.skip_reason(note(site="north-1")) is None
    assert "site" in (f.skip_reason(note(site="south-1")) or "")
    assert "site" in (f.skip_reason(note()) or "")
    ds = pydicom.Dataset()
    ds.InstitutionName = "General Hospital"
    assert f.skip_reason_for_header(note(site="north-1"), ds) is None
    ds.InstitutionName = "Clinic"
    assert "InstitutionName" in (f.skip_reason_for_header(note(site="north-1"), ds) or "")


# ------------------------------------------------------------------------------------ echo
def test_echo_guard_names_the_destination_ae_the_instance_came_from(tmp_path: Path) -> None:
    log = ProvenanceLog(tmp_path / "provenance.sqlite")
    log.record("1.2.3", "PACS_SCU")
    log.record("4.5.6", "MODALITY")
    guard = EchoGuard(log, ["PACS", "PACS_SCU"])
    assert guard.echo_source("1.2.3") == "PACS_SCU"
    assert guard.echo_source("4.5.6") is None
    assert guard.echo_source("7.8.9") is None
    assert EchoGuard(None, ["PACS"]).echo_source("1.2.3") is None


# ------------------------------------------------------------------------------------ handler
@dataclass
class FakeMessage:
    data: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_id: str = "m1"
    delivery_attempt: int | None = None
    acked: int = 0
    nacked: int = 0

    def ack(self) -> None:
        self.acked += 1

    def nack(self) -> None:
        self.nacked += 1


class FakeNacks(DelayedNacks):
    def __init__(self) -> None:
        self.scheduled: list[tuple[Any, float]] = []

    def schedule(self, message: Any, delay: float) -> None:
        self.scheduled.append((message, delay))


class FakeWado:
    def __init__(self, source: Path, error: Exception | None = None) -> None:
        self.source, self.error, self.calls = source, error, 0

    def retrieve_instance(self, study: str, series: str, instance: str, dest: Path) -> Path:
        self.calls += 1
        if self.error is not None:
            raise self.error
        shutil.copy(self.source, dest)
        return dest


class FakeSink:
    """A destination (the PACS) that records what it got or fails as told."""

    name, kind, max_batch = "peer", "dimse", 1

    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.delivered = error, []  # type: ignore[var-annotated]
        self.attempts = 0

    def deliver(self, instances: Sequence[Instance]) -> list[DeliveryOutcome]:
        self.attempts += 1
        if self.error is not None:
            raise self.error
        self.delivered += [(i.sop_instance_uid, i.path.read_bytes()) for i in instances]
        return [DeliveryOutcome.delivered() for _ in instances]

    def close(self) -> None:
        pass


@dataclass
class Rig:
    handler: MessageHandler
    wado: FakeWado
    sink: FakeSink
    nacks: FakeNacks
    dead_letters: DeadLetterQueue
    instance: Path
    provenance: ProvenanceLog
    delivery: DeliveryService

    def message(self, **kwargs: Any) -> FakeMessage:
        ds = pydicom.dcmread(self.instance, stop_before_pixels=True)
        data = (
            f"{STORE}/dicomWeb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        return FakeMessage(data.encode(), **kwargs)


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    wado_error, sink_error = getattr(request, "param", (None, None))
    [instance] = make_ct_series(tmp_path / "src", 1, rows=8, cols=8)
    wado, sink, nacks = FakeWado(instance, wado_error), FakeSink(sink_error), FakeNacks()
    provenance = ProvenanceLog(tmp_path / "provenance.sqlite")
    dead = DeadLetterQueue(tmp_path / "deadletter", "exporter")
    outbox = Spool(tmp_path / "outbox" / "peer", max_bytes=10**9, dead_letters=dead)
    policy = RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.1, jitter=False)
    delivery = DeliveryService("exporter", outbox, sink, policy, workers=1, linger=0.0)
    router = Router(RoutingConfig(), ["peer"], {"peer": frozenset({"PACS"})}, provenance)
    pipeline = Pipeline("exporter", router, {"peer": delivery}, tmp_path / "work")
    delivery.start()
    handler = MessageHandler(
        source_url="http://store/dicom-web",
        source_url_kind="auto",
        wado_client=lambda root: wado,  # type: ignore[arg-type,return-value]
        pipeline=pipeline,
        notification_filter=NotificationFilter(FilterConfig()),
        echo_guard=EchoGuard(provenance, ["PACS"]),
        dead_letters=dead,
        retry_policy=RetryPolicy(initial_delay=1.0, jitter=False),
        max_delivery_attempts=3,
        tmp_dir=tmp_path / "tmp",
        nacks=nacks,
        stop_event=threading.Event(),
        settle_timeout=10.0,
    )
    yield Rig(handler, wado, sink, nacks, dead, instance, provenance, delivery)
    delivery.stop(5)


def test_delivered_instance_is_acked_and_its_temporary_file_removed(rig: Rig) -> None:
    message = rig.message()
    rig.handler(message)
    assert (message.acked, message.nacked) == (1, 0)
    assert rig.sink.delivered[0][1] == rig.instance.read_bytes()
    assert list((rig.handler.tmp_dir).iterdir()) == []


@pytest.mark.parametrize("rig", [(TransientError("503"), None)], indirect=True)
def test_transient_fetch_failure_is_nacked_later_with_growing_backoff(rig: Rig) -> None:
    message = rig.message()
    rig.handler(message)
    rig.handler(message)  # redelivered
    assert message.acked == 0
    assert [delay for _, delay in rig.nacks.scheduled] == [1.0, 2.0]
    assert rig.dead_letters.entries() == []


@pytest.mark.parametrize("rig", [(None, TransientError("PACS down"))], indirect=True)
def test_pacs_down_is_acked_once_held_in_its_outbox(rig: Rig) -> None:
    message = rig.message()
    rig.handler(message)
    assert (message.acked, len(rig.nacks.scheduled)) == (1, 0)
    assert rig.delivery.outbox.depth() == 1 or rig.dead_letters.entries()
    assert rig.delivery.failing == "PACS down"


@pytest.mark.parametrize("rig", [(TransientError("503"), None)], indirect=True)
def test_fetch_out_of_attempts_is_dead_lettered_and_acked(rig: Rig) -> None:
    message = rig.message(delivery_attempt=3)  # Pub/Sub's count wins over the local one
    rig.handler(message)
    assert (message.acked, len(rig.nacks.scheduled)) == (1, 0)
    [entry] = rig.dead_letters.entries()
    assert entry.reason.startswith("gave up after 3 attempts: 503")
    assert entry.attempts == 3


@pytest.mark.parametrize("rig", [(None, TransientError("PACS down"))], indirect=True)
def test_outbox_out_of_attempts_is_dead_lettered_with_the_instance(rig: Rig) -> None:
    message = rig.message()
    rig.handler(message)
    wait_until(lambda: rig.dead_letters.entries(), 10, what="the outbox gave up")
    [entry] = rig.dead_letters.entries()
    assert entry.reason.startswith("gave up after 3 attempts: PACS down")
    assert (entry.attempts, entry.destination, entry.has_payload) == (3, "peer", True)
    assert rig.sink.attempts == 3 and rig.delivery.outbox.depth() == 0


@pytest.mark.parametrize(
    "rig", [(PermanentError("HTTP 404", http_status=404), None)], indirect=True
)
def test_instance_missing_from_store_is_dead_lettered_at_once(rig: Rig) -> None:
    message = rig.message()
    rig.handler(message)
    assert message.acked == 1
    [entry] = rig.dead_letters.entries()
    assert (entry.http_status, entry.has_payload) == (404, False)


@pytest.mark.parametrize(
    "rig", [(None, PermanentError("0x0122", failure_reason=0x0122))], indirect=True
)
def test_refused_by_pacs_is_dead_lettered_with_the_instance(rig: Rig) -> None:
    message = rig.message()
    rig.handler(message)
    assert message.acked == 1
    [entry] = rig.dead_letters.entries()
    assert entry.failure_reason == 0x0122 and entry.has_payload
    payload = rig.dead_letters.payload_path(entry)
    assert payload is not None and payload.read_bytes() == rig.instance.read_bytes()


def test_malformed_message_is_dead_lettered_with_its_bytes_and_acked(rig: Rig) -> None:
    message = FakeMessage(b"studies/../x")
    rig.handler(message)
    assert message.acked == 1 and rig.wado.calls == 0
    [entry] = rig.dead_letters.entries()
    assert "malformed" in entry.reason and entry.extra["data_base64"]


def test_echo_is_acked_without_fetching(rig: Rig) -> None:
    uid = str(pydicom.dcmread(rig.instance, stop_before_pixels=True).SOPInstanceUID)
    rig.provenance.record(uid, "PACS")
    message = rig.message()
    rig.handler(message)
    assert message.acked == 1 and rig.wado.calls == 0 and rig.sink.delivered == []


def test_deletion_is_acked_without_fetching(rig: Rig) -> None:
    message = rig.message(attributes={"action": "DeleteInstances"})
    rig.handler(message)
    assert message.acked == 1 and rig.wado.calls == 0


def test_messages_arriving_during_shutdown_are_handed_back(rig: Rig) -> None:
    rig.handler.stop_event.set()
    message = rig.message()
    rig.handler(message)
    assert (message.acked, message.nacked) == (0, 1)


def test_delayed_nacks_fire_in_time_order_and_flush_on_close() -> None:
    nacks = DelayedNacks()
    late, soon, never = FakeMessage(b"l"), FakeMessage(b"s"), FakeMessage(b"n")
    nacks.schedule(late, 0.3)
    nacks.schedule(soon, 0.05)
    nacks.schedule(never, 60)
    deadline = threading.Event()
    deadline.wait(0.5)
    assert (soon.nacked, late.nacked, never.nacked) == (1, 1, 0)
    nacks.close()
    assert never.nacked == 1


@pytest.mark.parametrize("rig", [(TransientError("503"), None)], indirect=True)
def test_fetch_retries_are_bounded_by_time_not_by_count(rig: Rig) -> None:
    """Issue #14: a store down for a night must not turn the night's messages into dead
    letters; the default budget is retry.max_elapsed (a day), not a count."""
    rig.handler.max_delivery_attempts = 0  # the new default: by time
    rig.handler.retry_policy = RetryPolicy(
        max_attempts=0, max_elapsed=3600, initial_delay=0.01, max_delay=0.02, jitter=False
    )
    message = rig.message()
    for _ in range(50):  # far more than the old 10-attempt budget
        rig.handler(message)
    assert (message.acked, len(rig.nacks.scheduled)) == (0, 50)
    assert rig.dead_letters.entries() == []
    count, _ = rig.handler._attempts._counts[message.message_id]
    rig.handler._attempts._counts[message.message_id] = (count, time.time() - 3700)
    rig.handler(message)  # an hour and more after the first attempt
    [entry] = rig.dead_letters.entries()
    assert entry.reason.startswith("gave up after 3700s (51 attempts): 503"), entry.reason
    assert message.acked == 1
