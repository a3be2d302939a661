"""Operator commands from a second terminal: no environment beyond what the site YAML says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.peers.pubsub import PubSubEmulator

REPO = Path(__file__).resolve().parents[2]


def test_deadletters_retry_reaches_the_emulator_named_in_the_yaml(
    tmp_path: Path, pubsub_emulator: PubSubEmulator
) -> None:
    pubsub_emulator.create_topic("cli-topic")
    pubsub_emulator.create_subscription("cli-sub", "cli-topic")
    local = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    exporter = local["exporter"]
    assert exporter["pubsub"]["emulator_host"] == "127.0.0.1:8085"  # what run-local.sh starts
    exporter["pubsub"].update(
        project=pubsub_emulator.project, subscription="cli-sub", emulator_host=pubsub_emulator.host
    )
    exporter["state_dir"] = str(tmp_path / "export")
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"dicomweb": local["dicomweb"], "exporter": exporter}))
    letters = tmp_path / "export" / "deadletter"
    letters.mkdir(parents=True)
    entry = {"id": "1-abc", "plugin": "exporter", "reason": "x", "extra": {"resource": "r/1"}}
    (letters / "1-abc.json").write_text(json.dumps(entry))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUBSUB_", "GOOGLE_"))}
    result = subprocess.run(
        [sys.executable, "-m", "adapter.cli", "deadletters", "retry", "-c", str(site), "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "exporter: requeued 1" in result.stdout
    (message,) = pubsub_emulator.pull("cli-sub", timeout=20)
    assert message.message.data == b"r/1"
