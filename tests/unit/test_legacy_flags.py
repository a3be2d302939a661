"""The Java adapter's flags, accepted verbatim and translated into the same config object."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.config import load_config_data
from adapter.errors import ConfigError
from adapter.legacy_flags import EXPORT_FLAGS, IMPORT_FLAGS, is_legacy_import_invocation, translate
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


def test_every_java_flag_is_built() -> None:
    """Routing, GCS backup, redaction and compression all work now: none is refused."""
    refused = [n for n, f in {**IMPORT_FLAGS, **EXPORT_FLAGS}.items() if f.apply is None]
    assert refused == []


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


# ------------------------------------------------------------------ routing flags (Java semantics)
SECOND = "http://127.0.0.1:8043/dicom-web"
BACKUP = "http://127.0.0.1:8044/dicom-web"


class _Facts:
    """An instance's facts for a condition: attribute -> values."""

    def __init__(self, **values: str) -> None:
        self.map = values

    def values(self, attribute: str) -> list[str] | None:
        value = self.map.get(attribute)
        return None if value is None else value.split("\\")


def _routes(cfg: ImporterConfig, **facts: str) -> list[str]:
    """Destinations the rules name for these facts (first or all, as configured)."""
    found: list[str] = []
    for rule in cfg.routing.rules:
        if rule.condition.matches(_Facts(**facts)):
            found += rule.destinations
            if cfg.routing.mode == "first":
                break
    return found or ["store"]


def test_destination_config_inline_routes_the_first_matching_filter() -> None:
    cfg, site = importer_of(
        [
            *GUIDE_ARGS,
            "--destination_config_inline="
            f'[{{"filter":"Modality=MG","dicomweb_destination":"{SECOND}"}},'
            f'{{"filter":"AETitle=MAMMO","dicomweb_destination":"{BACKUP}/studies"}}]',
        ]
    )
    dests = site.core.destinations  # type: ignore[attr-defined]
    assert [(n, d.kind, d.url) for n, d in dests.items()] == [
        ("legacy-1", "dicomweb", SECOND),
        ("legacy-2", "dicomweb", BACKUP),  # a .../studies URL was taken as the STOW path
    ]
    assert dests["legacy-1"].auth.kind == "auto" and cfg.routing.mode == "first"
    assert _routes(cfg, Modality="MG", calling_ae="MAMMO") == ["legacy-1"]
    assert _routes(cfg, Modality="CT", calling_ae="MAMMO") == ["legacy-2"]
    assert _routes(cfg, Modality="CT", calling_ae="OTHER") == ["store"]  # --dicomweb_address


def test_send_to_all_matching_destinations_routes_every_match_including_a_pacs() -> None:
    cfg, site = importer_of(
        [
            *GUIDE_ARGS,
            "--dimse_cmove_aet=SUBAET",
            "--send_to_all_matching_destinations",
            "--destination_config_inline="
            f'[{{"filter":"Modality=MG","dicomweb_destination":"{SECOND}"}},'
            f'{{"filter":"Modality=MG","dicomweb_destination":"{BACKUP}"}},'
            '{"filter":"AETitle=DEVICE_B","name":"PACS","host":"10.0.0.9","port":11114}]',
        ]
    )
    assert cfg.routing.mode == "all"
    pacs = site.core.destinations["legacy-3"]  # type: ignore[attr-defined]
    assert (pacs.kind, pacs.ae_title, pacs.host, pacs.port) == ("dimse", "PACS", "10.0.0.9", 11114)
    assert pacs.calling_ae_title == "SUBAET"  # the Java CStoreSender used the C-MOVE AET
    assert cfg.query.move_calling_ae_title == "SUBAET"
    assert _routes(cfg, Modality="MG", calling_ae="DEVICE_B") == [
        "legacy-1",
        "legacy-2",
        "legacy-3",
    ]
    assert _routes(cfg, Modality="MG", calling_ae="X") == ["legacy-1", "legacy-2"]


def test_a_duplicate_filter_is_refused_without_send_to_all() -> None:
    entry = f'{{"filter":"Modality=MG","dicomweb_destination":"{SECOND}"}}'
    with pytest.raises(
        ConfigError, match=r"entry 2: duplicate filter 'Modality=MG'.*--send_to_all"
    ):
        translate([*GUIDE_ARGS, f"--destination_config_inline=[{entry},{entry}]"], "import")
    translate(  # the Java multiple-destination mode takes them
        [
            *GUIDE_ARGS,
            "--send_to_all_matching_destinations",
            f"--destination_config_inline=[{entry},{entry}]",
        ],
        "import",
    )


def test_a_pacs_entry_needs_send_to_all() -> None:
    with pytest.raises(ConfigError, match=r"entry 1: a PACS destination.*--send_to_all"):
        translate(
            [
                *GUIDE_ARGS,
                '--destination_config_inline=[{"filter":"","name":"P","host":"h","port":1}]',
            ],
            "import",
        )


def test_a_dimse_destination_object_is_accepted_in_send_to_all_mode() -> None:
    _, site = importer_of(
        [
            *GUIDE_ARGS,
            "--send_to_all_matching_destinations=true",
            '--destination_config_inline=[{"filter":"Modality=MG",'
            '"dimse_destination":{"name":"PACS","host":"h","port":"104"}}]',
        ]
    )
    pacs = site.core.destinations["legacy-1"]  # type: ignore[attr-defined]
    assert (pacs.ae_title, pacs.port, pacs.calling_ae_title) == ("PACS", 104, "IMPORTADAPTER")


def test_the_lenient_json_of_the_java_users_is_accepted() -> None:
    cfg, site = importer_of(
        [
            *GUIDE_ARGS,
            '--aet_dictionary_inline=[{"name":"STORESCP","host":0.0.0.0,"port":2576},]',
            f"--destination_config_inline=[{{filter: 'Modality=MG', "
            f"dicomweb_destination: '{SECOND}',}},]",
        ]
    )
    assert [(d.name, d.host, d.port) for d in cfg.move_destinations] == [
        ("STORESCP", "0.0.0.0", 2576)
    ]
    assert site.core.destinations["legacy-1"].url == SECOND  # type: ignore[attr-defined]


def test_bad_destination_json_says_where() -> None:
    with pytest.raises(
        ConfigError,
        match=r"--destination_config_inline: expected a JSON array .*line 1, column 19: "
        r"expected ',' or '}', found '='",
    ):
        translate([*GUIDE_ARGS, "--destination_config_inline=[{filter: Modality=MG}]"], "import")
    with pytest.raises(ConfigError, match="entry 1: mandatory key absent: filter"):
        translate([*GUIDE_ARGS, f'--destination_config_inline=[{{"x":"{SECOND}"}}]'], "import")
    with pytest.raises(ConfigError, match="entry 1: mandatory key absent: dicomweb_destination"):
        translate([*GUIDE_ARGS, '--destination_config_inline=[{"filter":""}]'], "import")
    with pytest.raises(ConfigError, match="invalid tag in filter string: 'Modaliti'"):
        translate(
            [
                *GUIDE_ARGS,
                f'--destination_config_inline=[{{"filter":"Modaliti=MG",'
                f'"dicomweb_destination":"{SECOND}"}}]',
            ],
            "import",
        )


def test_destination_config_sources_in_the_java_order(tmp_path: Any) -> None:
    path = tmp_path / "dest.json"
    path.write_text(f'[{{"filter":"Modality=CT","dicomweb_destination":"{BACKUP}"}},]\n')
    inline = f'[{{"filter":"Modality=MG","dicomweb_destination":"{SECOND}"}}]'
    env = {"ENV_DESTINATION_CONFIG_JSON": inline.replace("MG", "US")}

    def first_filter(argv: list[str]) -> Any:
        data, _ = translate([*GUIDE_ARGS, *argv], "import", environ=env)
        return data["importer"]["routing"]["rules"][0]["match"]

    modality = {"attribute": "Modality", "equals": "MG"}
    both = [f"--destination_config_path={path}", f"--destination_config_inline={inline}"]
    assert first_filter(both) == modality  # inline first
    assert first_filter([f"--destination_config_path={path}"])["equals"] == "CT"
    assert first_filter([])["equals"] == "US"  # then the environment
    assert (
        first_filter(["--destination_config_inline=", f"--destination_config_path={path}"])[
            "equals"
        ]
        == "CT"
    )  # an empty flag counts as not given, as in Java


def test_aet_dictionary_sources_in_the_java_order(tmp_path: Any) -> None:
    path = tmp_path / "aets.json"
    path.write_text('[{"name":"FILE","host":"h","port":1}]')
    env = {"ENV_AETS_JSON": "[{name: ENV, host: h, port: 2}]"}

    def names(argv: list[str]) -> list[str]:
        data, _ = translate([*GUIDE_ARGS, *argv], "import", environ=env)
        return [d["name"] for d in data["importer"]["move_destinations"]]

    inline = '--aet_dictionary_inline=[{"name":"INLINE","host":"h","port":3}]'
    assert names([inline, f"--aet_dictionary={path}"]) == ["INLINE"]
    assert names([f"--aet_dictionary={path}"]) == ["FILE"]
    assert names([]) == ["ENV"]


@pytest.mark.parametrize(
    ("java_filter", "facts", "matches"),
    [
        ("", {"Modality": "CT"}, True),  # an empty filter matches everything
        ("AETitle=MAMMO", {"calling_ae": "MAMMO"}, True),
        ("AETitle=MAMMO", {"calling_ae": "mammo"}, False),  # exact, case-sensitive
        ("AETitle=MAM*", {"calling_ae": "MAMMO"}, False),  # no wildcards for the AE title
        ("AETitle=MAMMO&Modality=MG", {"calling_ae": "MAMMO", "Modality": "CT"}, False),
        ("Modality=MG\\CT", {"Modality": "CT"}, True),  # dcm4che: any of the key's values
        ("StationName=ROOM?", {"StationName": "ROOM4"}, True),  # dcm4che wildcards
        ("StationName=ROOM*", {}, False),  # absent: no match
        ("00080060=MG", {"00080060": "MG"}, True),  # a hex tag
        ("Modality=CT&Modality=MG", {"Modality": "MG"}, True),  # the last one counts
        ("Modality=MG&", {"Modality": "MG"}, True),  # Java's split drops the empty tail
    ],
)
def test_java_filters_match_as_in_the_java_adapter(
    java_filter: str, facts: dict[str, str], matches: bool
) -> None:
    from adapter.legacy_routing import filter_condition
    from adapter.pipeline.rules import parse_condition

    assert parse_condition(filter_condition(java_filter)).matches(_Facts(**facts)) is matches


@pytest.mark.parametrize("java_filter", ["Modality", "Modality==MG", "&Modality=MG", "=MG"])
def test_malformed_java_filters_are_refused(java_filter: str) -> None:
    from adapter.legacy_routing import filter_condition

    with pytest.raises(ConfigError, match="invalid"):
        filter_condition(java_filter)


def test_dimse_cmove_aet_alone_sets_the_move_calling_ae() -> None:
    cfg, _ = importer_of([*GUIDE_ARGS, "--dimse_cmove_aet=CMOVEAET"])
    assert cfg.query.move_calling_ae_title == "CMOVEAET"
    assert cfg.dimse.ae_title == "IMPORTADAPTER"


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
