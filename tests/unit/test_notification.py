"""Pub/Sub notification parsing (strict) and where the instance is fetched from."""

from __future__ import annotations

import base64
import json
import time

import pytest

from adapter.errors import PermanentError
from exporter.notification import (
    MalformedNotificationError,
    Notification,
    parse_notification,
    resolve_dicomweb_root,
)
from exporter.orthanc_notifier import Notifier, NotifierSettings, build_message
from tests.peers.http_stub import HttpStub, StubResponse

STORE = "projects/my-proj/locations/us-central1/datasets/ds/dicomStores/store-1"
PATH = "studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"


def test_full_resource_name_gives_uids_and_store() -> None:
    note = parse_notification(f"{STORE}/dicomWeb/{PATH}".encode())
    assert (note.study_instance_uid, note.series_instance_uid, note.sop_instance_uid) == (
        "1.2.3",
        "1.2.3.4",
        "1.2.3.4.5",
    )
    assert note.store_path == STORE
    assert note.store_name == STORE
    assert note.dicomweb_path == PATH
    assert note.action is None


def test_relative_path_has_no_store() -> None:
    note = parse_notification(PATH.encode() + b"\n")  # trailing newline tolerated
    assert note.store_path is None
    assert note.sop_instance_uid == "1.2.3.4.5"


def test_attributes_are_kept_and_checked_against_the_data() -> None:
    note = parse_notification(
        f"{STORE}/dicomWeb/{PATH}".encode(),
        {
            "action": "StoreInstances",
            "storeName": STORE,
            "sopInstanceUID": "1.2.3.4.5",
            "modality": "CT",
            "lastUpdatedTime": "x",
        },
    )
    assert (note.action, note.modality) == ("StoreInstances", "CT")
    assert note.attributes["lastUpdatedTime"] == "x"


def test_store_name_attribute_names_the_store_of_a_relative_path() -> None:
    assert parse_notification(PATH.encode(), {"storeName": STORE}).store_name == STORE


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "not ASCII"),
        (b"studies/1.2.3/series/1.2.3.4", "expected studies/X/series/Y/instances/Z"),
        (f"{PATH}/frames/1".encode(), "expected studies/X/series/Y/instances/Z"),
        (b"studies/1.2.3/series/../instances/1", "'..'"),
        (b"studies/1.2.3//series/1/instances/1", "empty"),
        (f"{PATH}?x=1".encode(), "query"),
        (f"{PATH}#f".encode(), "fragment"),
        (b"studies/1.2.3/series/1.2%2E3/instances/1", "escape"),
        (b"studies/1.2.3/series/1.2 3/instances/1", "space"),
        (b"studies/1.2.03x/series/1/instances/1", "not a DICOM UID"),
        (b"studies/1..2/series/1/instances/1", "not a DICOM UID"),
        (("studies/" + "1." * 32 + "1/series/1/instances/1").encode(), "not a DICOM UID"),
        (b"series/1/studies/2/instances/3", "expected 'studies'"),
        (f"projects/p/locations/l/datasets/d/dicomStores/s/{PATH}".encode(), "dicomWeb"),
        (f"projects/p/zones/l/datasets/d/dicomStores/s/dicomWeb/{PATH}".encode(), "'locations'"),
        (
            f"projects/p!/locations/l/datasets/d/dicomStores/s/dicomWeb/{PATH}".encode(),
            "invalid projects id",
        ),
        (b"x" * 4096, "at most"),
    ],
)
def test_malformed_data_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedNotificationError) as info:
        parse_notification(data)
    assert reason in info.value.reason
    assert isinstance(info.value, PermanentError)  # dead-lettered, never retried


def test_uid_attribute_contradicting_the_data_is_malformed() -> None:
    with pytest.raises(MalformedNotificationError, match="sopInstanceUID"):
        parse_notification(PATH.encode(), {"sopInstanceUID": "9.9"})


def test_store_name_attribute_contradicting_the_data_is_malformed() -> None:
    with pytest.raises(MalformedNotificationError, match="storeName"):
        parse_notification(f"{STORE}/dicomWeb/{PATH}".encode(), {"storeName": "other"})


def _note(store: str | None = STORE) -> Notification:
    data = f"{store}/dicomWeb/{PATH}" if store else PATH
    return parse_notification(data.encode())


API = "https://healthcare.googleapis.com/v1"


@pytest.mark.parametrize(
    ("url", "store", "expected"),
    [
        # The Java adapter's --dicomweb_addr: an API root; the notification's path is appended.
        (API, STORE, f"{API}/{STORE}/dicomWeb"),
        (API + "/", STORE, f"{API}/{STORE}/dicomWeb"),
        # The store's own DICOMweb root: only studies/... follows.
        (f"{API}/{STORE}/dicomWeb", STORE, f"{API}/{STORE}/dicomWeb"),
        # A DICOMweb root without the store path (Orthanc, other servers).
        ("http://127.0.0.1:8042/dicom-web", STORE, "http://127.0.0.1:8042/dicom-web"),
        ("http://pacs/DICOMWEB/", STORE, "http://pacs/DICOMWEB"),
        # Relative notifications always go to the configured URL.
        (API, None, API),
    ],
)
def test_wado_root_is_resolved_deterministically(
    url: str, store: str | None, expected: str
) -> None:
    assert resolve_dicomweb_root(url, _note(store)) == expected


def test_explicit_url_kind_overrides_the_guess() -> None:
    assert resolve_dicomweb_root("http://h/root", _note(), "dicomweb_root") == "http://h/root"
    assert resolve_dicomweb_root("http://h/dicom-web", _note(), "api_root") == (
        f"http://h/dicom-web/{STORE}/dicomWeb"
    )


def test_another_stores_dicomweb_root_is_refused() -> None:
    other = f"{API}/projects/my-proj/locations/us-central1/datasets/ds/dicomStores/other/dicomWeb"
    with pytest.raises(PermanentError, match="another store"):
        resolve_dicomweb_root(other, _note())


# ------------------------------------------------------------------ the Orthanc notifier plugin
def test_notifier_message_is_what_the_exporter_parses() -> None:
    settings = NotifierSettings(host="127.0.0.1:1", project="local-project", topic="t")
    tags = {
        "StudyInstanceUID": "1.2",
        "SeriesInstanceUID": "1.2.3",
        "SOPInstanceUID": "1.2.3.4",
        "Modality": "MR",
    }
    message = build_message(settings, tags)
    assert message is not None
    note = parse_notification(base64.b64decode(message["data"]), message["attributes"])
    assert note.sop_instance_uid == "1.2.3.4" and note.modality == "MR"
    assert note.action == "StoreInstances"
    assert (
        note.store_path
        == "projects/local-project/locations/local/datasets/local/dicomStores/orthanc"
    )
    assert build_message(settings, {"SOPInstanceUID": "1.2"}) is None


def test_notifier_settings_come_from_orthanc_config_then_environment() -> None:
    env = {"PUBSUB_EMULATOR_HOST": "127.0.0.1:9", "PUBSUB_TOPIC": "projects/p/topics/from-env"}
    settings = NotifierSettings.from_sources({"DicomAdapterNotifier": {"Project": "cfg"}}, env)
    assert (settings.host, settings.project) == ("127.0.0.1:9", "cfg")
    assert settings.publish_url == "http://127.0.0.1:9/v1/projects/p/topics/from-env:publish"
    assert NotifierSettings.from_sources({}, {}).publish_url == (
        "http://127.0.0.1:8085/v1/projects/local-project/topics/dicom-store:publish"
    )


def test_notifier_batches_and_retries_until_the_emulator_answers() -> None:
    stub = HttpStub().start()
    try:
        stub.enqueue(StubResponse(503), StubResponse(200, body=b"{}"))
        settings = NotifierSettings(host=f"127.0.0.1:{stub.port}", project="p", topic="t")
        notifier = Notifier(settings, log=lambda _msg: None, max_delay=0.1)
        for i in (1, 2):
            notifier.notify(
                {"StudyInstanceUID": "1", "SeriesInstanceUID": "2", "SOPInstanceUID": f"3.{i}"}
            )
        notifier.start()
        deadline = time.monotonic() + 10
        while notifier.published < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        notifier.stop()
    finally:
        stub.stop()
    assert notifier.published == 2
    first, second = stub.requests
    assert first.path == second.path == "/v1/projects/p/topics/t:publish"
    assert first.body == second.body  # the same batch, re-sent
    assert len(json.loads(second.body)["messages"]) == 2
