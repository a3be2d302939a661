"""The dicom-adapter command line: --help everywhere, validate, legacy mode, exit codes."""

from __future__ import annotations

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
    assert "not supported yet" in out or command == "export"


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


def test_refused_legacy_flag_exits_2_with_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--dimse_aet=A",
            "--dicomweb_address=http://x/dicom-web",
            "--store_compress_to_transfer_syntax=1.2.840.10008.1.2.4.90",
        ]
    )
    assert code == 2
    assert "not supported yet: --store_compress_to_transfer_syntax" in capsys.readouterr().err


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
