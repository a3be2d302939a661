"""The dicom-adapter command line: --help everywhere, validate, legacy mode, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "validate", "deadletters", "import", "export"):
        assert command in out


@pytest.mark.parametrize("command", ["run", "validate", "deadletters"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "--config" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["import", "export"])
def test_legacy_help_lists_the_java_flags(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert ("--dimse_aet" if command == "import" else "--peer_dimse_aet") in out
    assert "not supported yet" not in out  # every Java flag is built


def test_validate_accepts_the_local_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(REPO / "configs" / "local.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_reports_the_bad_key_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("dicomweb: {url: 'http://x/dicom-web'}\nimporter:\n  dimse: {port: abc}\n")
    assert main(["validate", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "importer.dimse.port: expected an integer 1-65535, got 'abc'" in err


def test_a_bad_legacy_flag_value_exits_2_with_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--dimse_aet=A",
            "--dicomweb_address=http://x/dicom-web",
            "--store_compress_to_transfer_syntax=1.2.840.10008.1.2.4.50",  # JPEG baseline: lossy
        ]
    )
    assert code == 2
    assert "--store_compress_to_transfer_syntax: 1.2.840.10008.1.2.4.50" in (
        capsys.readouterr().err
    )


def test_installed_console_script_answers_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "adapter.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "dicom-adapter" in result.stdout


def test_deadletters_list_on_an_empty_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "dicomweb: {url: 'http://x/dicom-web'}\n"
        f"importer: {{spool: {{path: '{tmp_path / 'spool'}'}}}}\n"
    )
    assert main(["deadletters", "list", "--config", str(site)]) == 0
    assert "0 dead letter(s)" in capsys.readouterr().out
    assert main(["deadletters", "purge", "--config", str(site)]) == 2


# --- CLI habits: one verdict, one-line errors, suggestions -----------------------------------


def _site(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapter.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=REPO,
    )


def test_validate_takes_the_file_as_an_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO / "configs" / "local.yaml")]) == 0
    assert "valid (plugins enabled: exporter, importer)" in capsys.readouterr().out


def test_validate_and_run_refuse_an_empty_file_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = _site(tmp_path, "")
    assert main(["validate", str(empty)]) == 2
    from_validate = capsys.readouterr().err
    assert main(["run", "--config", str(empty)]) == 2
    assert capsys.readouterr().err == from_validate
    assert f"{empty}: no plugin enabled" in from_validate


def test_disabled_plugin_needs_none_of_its_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site(
        tmp_path,
        "dicomweb: {url: 'http://x/dicom-web'}\nimporter: {}\nexporter: {enabled: false}\n",
    )
    assert main(["validate", str(site)]) == 0
    assert "plugins enabled: importer)" in capsys.readouterr().out
    typo = _site(
        tmp_path,
        "importer: {}\ndicomweb: {url: 'http://x/dicom-web'}\n"
        "exporter: {enabled: false, pubsb: {}}\n",
    )
    assert main(["validate", str(typo)]) == 2
    err = capsys.readouterr().err
    assert "exporter.pubsb: unknown key (did you mean 'pubsub'?)" in err
    assert "required key is missing" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--plugin", "importr"], "--plugin importr: unknown plugin (did you mean 'importer'?)"),
        (["--plugin", "exporter"], "--plugin exporter: not enabled in this file"),
    ],
)
def test_deadletters_refuses_a_plugin_it_does_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    site = _site(
        tmp_path,
        "dicomweb: {url: 'http://x/dicom-web'}\n"
        f"importer: {{spool: {{path: '{tmp_path / 'spool'}'}}}}\n",
    )
    assert main(["deadletters", "list", "--config", str(site), *args]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err
    assert "dead letter(s)" not in captured.out


def test_only_names_a_known_and_enabled_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    local = str(REPO / "configs" / "local.yaml")
    assert main(["validate", local, "--only", "exportr"]) == 2
    assert "--only exportr: unknown plugin (did you mean 'exporter'?)" in capsys.readouterr().err
    assert main(["validate", local, "--only", "importer"]) == 0
    assert "plugins enabled: importer)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["validate", "--confg", "x.yaml"],
            "unrecognized argument --confg (did you mean '--config'?)",
        ),
        (["valdate", "x.yaml"], "invalid choice 'valdate' (did you mean 'validate'?)"),
        (["deadletters", "lst", "-c", "x"], "invalid choice 'lst' (did you mean 'list'?)"),
        (["run"], "the following arguments are required: --config"),
    ],
)
def test_usage_errors_are_one_line_with_a_suggestion(argv: list[str], expected: str) -> None:
    result = _cli(*argv)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_mistyped_config_key_gets_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site(
        tmp_path,
        "dicomweb: {url: 'http://x/dicom-web'}\nimportr: {}\n"
        "importer: {dimse: {prot: 1}, ack: after-spoool}\n",
    )
    assert main(["validate", str(site)]) == 2
    err = capsys.readouterr().err
    assert "importr: unknown key (did you mean 'importer'?)" in err
    assert "importer.dimse.prot: unknown key (did you mean 'port'?)" in err
    assert "importer.ack: expected 'after-spool' or 'after-upload', got 'after-spoool'" in err


@pytest.mark.parametrize(
    ("flags", "level"), [([], "WARNING"), (["-v"], "DEBUG"), (["--log-level", "error"], "ERROR")]
)
def test_run_log_level_flags_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], level: str
) -> None:
    import logging

    import adapter.cli as cli

    seen: list[int] = []
    monkeypatch.setattr(
        cli, "run_site", lambda site, only: seen.append(logging.getLogger().level) or 0
    )
    site = _site(
        tmp_path, "log: {level: WARNING}\ndicomweb: {url: 'http://x/dicom-web'}\nimporter: {}\n"
    )
    assert main(["run", "--config", str(site), *flags]) == 0
    assert seen == [getattr(logging, level)]


def test_missing_google_credentials_is_one_line_exit_2(tmp_path: Path) -> None:
    site = _site(
        tmp_path,
        "dicomweb: {url: 'http://127.0.0.1:9/dicom-web'}\n"
        "exporter:\n  pubsub: {project: p, subscription: s}\n"
        "  destination: {kind: dimse, ae_title: PACS, host: 127.0.0.1, port: 9}\n"
        f"  state_dir: '{tmp_path / 'export'}'\n",
    )
    letters = tmp_path / "export" / "deadletter"
    letters.mkdir(parents=True)
    (letters / "1-a.json").write_text('{"id": "1-a", "plugin": "exporter", "reason": "x"}')
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PUBSUB_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")
    }
    env["GCE_METADATA_HOST"] = "127.0.0.1:9"  # no metadata server: ADC fails fast
    env["GCE_METADATA_IP"] = "127.0.0.1:9"
    result = _cli("deadletters", "retry", "--config", str(site), "--all", env=env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "no Google credentials" in line and "exporter.pubsub.emulator_host" in line


def test_readme_error_example_is_what_validate_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("dicom-adapter: site.yaml: invalid configuration:\n", 1)[1].split("```")[0]
    site = _site(
        tmp_path,
        "dicomweb: {url: 'http://x/dicom-web'}\nimporter: {dimse: {port: abc}, spool: {pth: x}}\n",
    )
    assert main(["validate", str(site)]) == 2
    err = capsys.readouterr().err
    for line in block.strip().splitlines():
        assert line.strip() in err
