"""The Java adapter's flags, accepted verbatim and translated into the same config object."""

from __future__ import annotations

import pytest

from adapter.config import load_config_data
from adapter.errors import ConfigError
from adapter.legacy_flags import is_legacy_import_invocation, translate
from exporter.config import DicomwebDestination, DimseDestination, ExporterConfig
from importer.config import ImporterConfig

HCAPI = (
    "https://healthcare.googleapis.com/v1/projects/P/locations/L/datasets/D/dicomStores/S/dicomWeb"
)
GUIDE_ARGS = ["--dimse_aet=IMPORTADAPTER", "--dimse_port=2575", f"--dicomweb_address={HCAPI}"]


def importer_of(argv: list[str]) -> tuple[ImporterConfig, object]:
    data, _ = translate(argv, "import")
    site = load_config_data(data, "import flags")
    cfg = site.plugins["importer"]
    assert isinstance(cfg, ImporterConfig)
    return cfg, site


def test_gke_guide_args_translate_unchanged() -> None:
    cfg, site = importer_of(GUIDE_ARGS)
    assert cfg.dimse.ae_title == "IMPORTADAPTER" and cfg.dimse.port == 2575
    assert site.core.dicomweb.url == HCAPI  # type: ignore[attr-defined]
    assert is_legacy_import_invocation(GUIDE_ARGS)


def test_space_separated_values_work_like_equals() -> None:
    cfg, _ = importer_of(
        [
            "--dimse_aet",
            "IMPORTADAPTER",
            "--dimse_port",
            "104",
            "--dicomweb_address",
            "http://127.0.0.1:8042/dicom-web",
        ]
    )
    assert cfg.dimse.port == 104


def test_without_persistent_storage_the_ack_waits_for_the_upload() -> None:
    cfg, _ = importer_of(GUIDE_ARGS)
    assert cfg.ack == "after-upload"


def test_persistent_storage_with_auto_ack_answers_after_spool() -> None:
    cfg, site = importer_of(
        [
            *GUIDE_ARGS,
            "--persistent_file_storage_location=/data/spool",
            "--persistent_file_upload_retry_amount=5",
            "--auto_ack_cstore",
            "--min_upload_delay=250",
            "--max_waiting_time_between_uploads=8000",
            "--http_error_codes_to_retry=409,418",
            "--stow_overwrite",
        ]
    )
    assert cfg.ack == "after-spool"
    assert str(cfg.spool.path) == "/data/spool"
    assert cfg.upload.on_conflict == "overwrite"
    retry = site.core.retry  # type: ignore[attr-defined]
    assert retry.max_attempts == 6
    assert retry.initial_delay == 0.25 and retry.max_delay == 8.0
    assert retry.extra_http_statuses == (409, 418)


def test_auto_ack_without_a_durable_location_is_refused() -> None:
    with pytest.raises(ConfigError, match="--auto_ack_cstore requires"):
        translate([*GUIDE_ARGS, "--auto_ack_cstore"], "import")


def test_deprecated_addr_and_stow_path_combine() -> None:
    _, site = importer_of(
        ["--dimse_aet=A", "--dicomweb_addr=http://h:1/dicom-web", "--dicomweb_stow_path=/studies"]
    )
    assert site.core.dicomweb.url == "http://h:1/dicom-web"  # type: ignore[attr-defined]


def test_oauth_scopes_are_split_on_commas() -> None:
    _, site = importer_of([*GUIDE_ARGS, "--oauth_scopes=a,b"])
    assert site.core.dicomweb.auth.scopes == ("a", "b")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "flag",
    ["--redact_keep_list=PatientID", "--destination_config_inline=[]", "--dimse_cmove_aet=X"],
)
def test_unbuilt_features_are_refused_by_name(flag: str) -> None:
    name = flag.split("=")[0]
    with pytest.raises(ConfigError, match=f"not supported yet: {name}"):
        translate([*GUIDE_ARGS, flag], "import")


def test_unknown_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown flag --dimse_aetx"):
        translate(["--dimse_aetx=A"], "import")


def test_bad_integer_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--dimse_port: expected an integer, got 'abc'"):
        translate(["--dimse_aet=A", "--dimse_port=abc"], "import")


def test_missing_value_is_reported() -> None:
    with pytest.raises(ConfigError, match="--dimse_port: expected a value"):
        translate(["--dimse_aet=A", "--dimse_port"], "import")


def test_export_flags_build_a_dimse_destination() -> None:
    data, _ = translate(
        [
            "--peer_dimse_aet=PACS",
            "--peer_dimse_ip=10.0.0.5",
            "--peer_dimse_port=104",
            "--project_id=p",
            "--subscription_id=s",
            f"--dicomweb_addr={HCAPI}",
            "--client_aet=EXPORTADAPTER",
        ],
        "export",
    )
    cfg = load_config_data(data).plugins["exporter"]
    assert isinstance(cfg, ExporterConfig)
    assert isinstance(cfg.destination, DimseDestination)
    assert (cfg.destination.ae_title, cfg.destination.host, cfg.destination.port) == (
        "PACS",
        "10.0.0.5",
        104,
    )
    assert cfg.pubsub.project == "p" and cfg.pubsub.subscription == "s"


def test_export_flags_build_a_dicomweb_destination() -> None:
    data, _ = translate(
        [
            "--peer_dicomweb_address=http://peer/dicom-web",
            "--project_id=p",
            "--subscription_id=s",
            f"--dicomweb_addr={HCAPI}",
            "--use_gcp_application_default_credentials",
        ],
        "export",
    )
    cfg = load_config_data(data).plugins["exporter"]
    assert isinstance(cfg, ExporterConfig)
    assert isinstance(cfg.destination, DicomwebDestination)
    assert cfg.destination.auth.kind == "google"


def test_monitoring_flag_is_accepted_with_a_warning() -> None:
    _, warnings = translate([*GUIDE_ARGS, "--monitoring_project_id=p"], "import")
    assert any("Prometheus" in w for w in warnings)


def test_aet_dictionary_inline_becomes_move_destinations() -> None:
    cfg, _ = importer_of(
        [*GUIDE_ARGS, '--aet_dictionary_inline=[{"name":"PACS","host":"10.0.0.5","port":104}]']
    )
    assert [(d.name, d.host, d.port) for d in cfg.move_destinations] == [("PACS", "10.0.0.5", 104)]


def test_bad_aet_dictionary_is_reported() -> None:
    with pytest.raises(ConfigError, match="--aet_dictionary_inline: expected a JSON array"):
        translate([*GUIDE_ARGS, "--aet_dictionary_inline={oops"], "import")
    data, _ = translate(
        [*GUIDE_ARGS, '--aet_dictionary_inline=[{"name":"P","host":"h"}]'], "import"
    )
    with pytest.raises(ConfigError, match=r"importer.move_destinations\[0\].port: required"):
        load_config_data(data)


def test_fuzzy_matching_and_java_c_find_answers_in_legacy_mode() -> None:
    base = ["--dimse_aet=IMPORTADAPTER", "--dicomweb_address=http://127.0.0.1:8042/dicom-web"]
    data, _ = translate([*base, "--fuzzy_matching"], "import")
    assert data["importer"]["query"] == {"fuzzy_matching": True, "return_keys": "store"}
    data, _ = translate(base, "import")
    assert data["importer"]["query"] == {"return_keys": "store"}


IMPORT_BASE = ["--dimse_aet=IMPORTADAPTER", "--dicomweb_address=http://127.0.0.1:8042/dicom-web"]
EXPORT_BASE = [
    "--peer_dimse_aet=PACS",
    "--peer_dimse_ip=127.0.0.1",
    "--peer_dimse_port=104",
    "--project_id=P",
    "--subscription_id=S",
    "--dicomweb_addr=http://127.0.0.1:8042/dicom-web",
]


def test_legacy_defaults_let_an_importer_and_an_exporter_share_a_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HEALTH_PORT", "STATE_DIR", "SPOOL_DIR", "EXPORT_STATE_DIR"):
        monkeypatch.delenv(f"DICOM_ADAPTER_{name}", raising=False)
    imp, _ = translate(IMPORT_BASE, "import")
    exp, _ = translate(EXPORT_BASE, "export")
    assert (imp["health"]["port"], exp["health"]["port"]) == (8080, 8081)
    assert imp["importer"]["spool"]["path"] == "/tmp/dicom-adapter/spool"
    load_config_data(imp)
    load_config_data(exp)


def test_legacy_health_port_and_paths_from_our_flags_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    data, _ = translate(
        [*IMPORT_BASE, "--health_port=9100", "--state_dir=/srv/st", "--spool_dir=/srv/sp"],
        "import",
    )
    assert data["health"]["port"] == 9100 and data["state_dir"] == "/srv/st"
    assert data["importer"]["spool"]["path"] == "/srv/sp"
    monkeypatch.setenv("DICOM_ADAPTER_HEALTH_PORT", "9200")
    monkeypatch.setenv("DICOM_ADAPTER_EXPORT_STATE_DIR", "/srv/export")
    data, _ = translate(EXPORT_BASE, "export")
    assert data["health"]["port"] == 9200 and data["exporter"]["state_dir"] == "/srv/export"
    persistent, _ = translate(
        [*IMPORT_BASE, "--persistent_file_storage_location=/data", "--spool_dir=/ignored"],
        "import",
    )
    assert persistent["importer"]["spool"]["path"] == "/data"  # the Java flag wins
    with pytest.raises(ConfigError, match="--health_port: expected an integer"):
        translate([*IMPORT_BASE, "--health_port=http"], "import")
