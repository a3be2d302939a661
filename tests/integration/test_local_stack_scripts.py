"""scripts/local-stack.sh and install-pubsub-emulator.sh on a machine without the emulator
(pointed at a missing path): one clear line, Orthanc only, import-only; a failed `up` leaves
nothing running. The real install (Google's apt repository) cannot run here; its steps are
checked as text."""

from __future__ import annotations

import os
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.ports import LOOPBACK, free_port

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "scripts" / "local-stack.sh"
INSTALL = REPO / "scripts" / "install-pubsub-emulator.sh"
EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")


def stack_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "LOCAL_STACK_DIR": str(tmp_path / "stack"),
        "LOCAL_STACK_NO_INSTALL": "1",
        "ORTHANC_HTTP_PORT": str(free_port()),
        "ORTHANC_DICOM_PORT": str(free_port()),
        "PUBSUB_PORT": str(free_port()),
        "ORTHANC_PYTHON_SCRIPT": "",
        "LOCAL_STACK_TIMEOUT": "60",
    }
    env.update(extra)
    return env


def stack(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK), command],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def alive(pid_file: Path) -> bool:
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    environment = stack_env(tmp_path, PUBSUB_EMULATOR_BIN=str(tmp_path / "no-emulator"))
    try:
        yield environment
    finally:
        stack(environment, "down")  # stops only what the pid files in tmp_path name


def test_without_the_emulator_up_starts_orthanc_only_and_says_so(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = stack(env, "up")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [ln for ln in result.stdout.splitlines() if "import-only" in ln]
    assert len(lines) == 1 and "no Pub/Sub emulator" in lines[0]
    assert "not available" in result.stderr and "no-emulator" in result.stderr
    state = tmp_path / "stack"
    assert (state / "import-only").exists()
    assert alive(state / "orthanc.pid") and not (state / "pubsub.pid").exists()
    assert "PUBSUB_EMULATOR_HOST" not in (state / "env").read_text()
    assert stack(env, "status").returncode == 0
    assert stack(env, "down").returncode == 0
    assert not alive(state / "orthanc.pid")


@pytest.mark.skipif(not EMULATOR.exists(), reason="needs the emulator (CI installs it)")
def test_a_failed_up_leaves_nothing_running(tmp_path: Path) -> None:
    env = stack_env(tmp_path, PUBSUB_EMULATOR_BIN=str(EMULATOR))
    with socket.socket() as busy:  # the emulator's port is taken: up fails after Orthanc started
        busy.bind((LOOPBACK, int(env["PUBSUB_PORT"])))
        busy.listen()
        try:
            result = stack(env, "up")
        finally:
            stack(env, "down")
    assert result.returncode != 0
    assert "already in use" in result.stderr
    assert "up failed: stopping what it started" in result.stdout
    assert "orthanc: stopping pid" in result.stdout
    assert not (tmp_path / "stack" / "orthanc.pid").exists()


def test_install_script_skips_a_present_emulator_and_explains_a_missing_one(
    tmp_path: Path,
) -> None:
    fake = tmp_path / "cloud-pubsub-emulator"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    env = {**os.environ, "PUBSUB_EMULATOR_BIN": str(fake), "LOCAL_STACK_NO_INSTALL": "1"}
    present = subprocess.run(
        ["bash", str(INSTALL)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert present.returncode == 0 and "present" in present.stdout
    env["PUBSUB_EMULATOR_BIN"] = str(tmp_path / "missing")
    missing = subprocess.run(
        ["bash", str(INSTALL)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert missing.returncode == 1
    (line,) = missing.stdout.strip().splitlines()
    assert "not available" in line and "missing" in line


def test_install_script_uses_the_google_cloud_cli_apt_repository() -> None:
    text = INSTALL.read_text()
    assert "https://packages.cloud.google.com/apt cloud-sdk main" in text
    assert "https://packages.cloud.google.com/apt/doc/apt-key.gpg" in text
    assert "KEYRING=/usr/share/keyrings/cloud.google.gpg" in text and "signed-by=$KEYRING" in text
    assert "google-cloud-cli-pubsub-emulator default-jre-headless" in text
    for script in (STACK, REPO / ".ci" / "run"):
        assert "install-pubsub-emulator.sh" in script.read_text()
    for script in (
        STACK,
        REPO / ".ci" / "run",
        REPO / "scripts" / "run-local.sh",
        REPO / "README.md",
    ):
        assert "machine kind" not in script.read_text()


def test_package_license_is_an_spdx_expression() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"  # no setuptools deprecation warning
    assert "setuptools>=77" in pyproject["build-system"]["requires"]
