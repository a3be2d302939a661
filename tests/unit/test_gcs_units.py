"""Cloud Storage pieces without a peer: the Java gs:// flags, failure classes, the budget's
release callback (the emulator tests are in tests/integration/test_gcs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as api
from google.auth import exceptions as auth

from adapter.config import load_config_data
from adapter.errors import ConfigError
from adapter.gcs_client import classify
from adapter.legacy_flags import translate
from adapter.spool_files import SpoolBudget
from importer.config import ImporterConfig

GUIDE_ARGS = [
    "--dimse_aet=IMPORTADAPTER",
    "--dimse_port=2575",
    "--dicomweb_address=http://127.0.0.1:8042/dicom-web",
]


def importer_of(argv: list[str]) -> ImporterConfig:
    data, _ = translate(argv, "import")
    cfg = load_config_data(data, "import flags").plugins["importer"]
    assert isinstance(cfg, ImporterConfig)
    return cfg


def test_a_gs_location_with_its_project_backs_the_spool_up_in_the_bucket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    cfg = importer_of(
        [
            *GUIDE_ARGS,
            "--gcs_backup_project_id=my-project",
            "--persistent_file_storage_location=gs://my-bucket/dicom/backup/",
        ]
    )
    assert cfg.spool.backup is not None
    assert (cfg.spool.backup.bucket, cfg.spool.backup.prefix) == ("my-bucket", "dicom/backup")
    assert cfg.spool.backup.project == "my-project"
    assert cfg.spool.path == tmp_path / "dicom-adapter" / "spool"  # the working copy
    assert cfg.ack == "after-upload"  # Java: answered after the STOW unless auto-ack


def test_auto_ack_with_a_gs_location_answers_once_the_object_is_written() -> None:
    cfg = importer_of(
        [
            *GUIDE_ARGS,
            "--persistent_file_storage_location=gs://b-1/d",
            "--gcs_backup_project_id=p",
            "--auto_ack_cstore",
        ]
    )
    assert cfg.ack == "after-spool" and cfg.spool.backup is not None


def test_a_gs_location_needs_the_project_and_a_folder() -> None:
    with pytest.raises(ConfigError, match="needs --gcs_backup_project_id"):
        translate([*GUIDE_ARGS, "--persistent_file_storage_location=gs://b-1/d"], "import")
    with pytest.raises(ConfigError, match="expected gs://BUCKET/FOLDER"):
        translate(
            [
                *GUIDE_ARGS,
                "--persistent_file_storage_location=gs://b-1",
                "--gcs_backup_project_id=p",
            ],
            "import",
        )


def test_the_project_alone_is_accepted_and_does_nothing_as_in_java() -> None:
    data, warnings = translate([*GUIDE_ARGS, "--gcs_backup_project_id=p"], "import")
    assert "backup" not in data["importer"].get("spool", {})
    assert warnings == [
        "--gcs_backup_project_id: ignored without --persistent_file_storage_location=gs://..."
    ]


@pytest.mark.parametrize(
    ("exc", "kind", "status"),
    [
        (api.ServiceUnavailable("down"), "transient", 503),
        (api.TooManyRequests("slow down"), "transient", 429),
        (api.from_http_status(408, "late"), "transient", 408),
        (api.NotFound("no bucket"), "setup", 404),
        (api.Forbidden("no permission"), "setup", 403),
        (api.Unauthorized("no token"), "setup", 401),
        (api.BadRequest("bad name"), "permanent", 400),
        (api.PreconditionFailed("held"), "permanent", 412),
        (auth.DefaultCredentialsError("none found"), "setup", None),
        (requests.ConnectionError("refused"), "transient", None),
        (OSError("disk"), "transient", None),
    ],
)
def test_failures_are_classified_for_retry(
    exc: BaseException, kind: str, status: int | None
) -> None:
    failure = classify(exc)
    assert (failure.kind, failure.http_status) == (kind, status)


def test_the_budget_reports_an_entry_once_its_last_link_is_dropped() -> None:
    released: list[str] = []
    budget = SpoolBudget(1000, on_released=released.append)
    budget.hold("a", 10)  # the inbox
    budget.hold("a", 10)  # an outbox link
    budget.hold("b", 5)
    budget.drop("a")
    assert released == [] and budget.used == 15
    budget.drop("a")
    budget.drop("a")  # unknown by now: nothing again
    assert released == ["a"] and budget.used == 5
