"""docs/gke.md walked on loopback: render the chart with the guide's example values, run the
adapter on the rendered config as the StatefulSet does, then run the guide's own echoscu/dcmsend
lines, the NOTES lines and the `helm test` pod's probe against it. The guide cannot drift again.

What differs from a pod, and only that, is replaced: bind addresses and ports (free loopback
ports), the volume paths (tmp), the store (Orthanc instead of the Healthcare API, no auth).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import DCMTK_BIN_DIR, dcmtk_env
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "dicom-adapter"
GUIDE = (REPO / "docs" / "gke.md").read_text()
EXAMPLE = yaml.safe_load((CHART / "examples" / "import-only.yaml").read_text())
RELEASE, NAMESPACE = "dicom-adapter", "dicom"


def guide_lines(tool: str) -> list[str]:
    """The guide's shell lines that run ``tool`` (inside ```sh blocks), comments stripped."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", GUIDE, flags=re.S):
        for line in block.splitlines():
            if line.startswith(f"{tool} "):
                lines.append(line.split("  #", 1)[0].strip())
    assert lines, f"docs/gke.md has no {tool} line"
    return lines


def rendered(dicomweb_url: str) -> dict[str, str]:
    """The chart rendered with the example plus the guide's --set of the store URL."""
    values = yaml.safe_load(yaml.safe_dump(EXAMPLE))
    values["config"]["dicomweb"] = {"url": dicomweb_url, "auth": {"kind": "none"}}
    with helm_python.Chart.load(CHART) as chart:
        return dict(chart.render(values, name=RELEASE, namespace=NAMESPACE))


def manifests(files: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for name, text in files.items():
        if not name.endswith("NOTES.txt"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


@pytest.fixture(scope="module")
def walk(
    orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AdapterProcess, dict[str, str], list[dict[str, Any]]]]:
    files = rendered(orthanc.dicomweb_url)
    docs = manifests(files)
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    site = yaml.safe_load(cm["data"]["adapter.yaml"])
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    tmp = tmp_path_factory.mktemp("guide")
    site["health"].update(bind="127.0.0.1", port=free_port())
    site["importer"]["dimse"].update(bind="127.0.0.1", port=free_port())
    site["importer"]["spool"]["path"] = str(tmp / "spool")
    site["importer"]["dead_letter_path"] = str(tmp / "deadletter")
    site["state_dir"] = str(tmp / "state")
    config = tmp / "adapter.yaml"
    config.write_text(yaml.safe_dump(site))
    argv = [str(config) if a == "/etc/dicom-adapter/adapter.yaml" else a for a in args]
    proc = AdapterProcess(None, tmp, argv=argv, dimse_port=site["importer"]["dimse"]["port"])
    with proc:
        yield proc, files, docs


def local(line: str, port: int, directory: Path) -> list[str]:
    """A guide/NOTES line with the load balancer replaced by the local adapter."""
    line = line.replace('"$LB_IP"', "127.0.0.1").replace("<LB-IP>", "127.0.0.1")
    argv = shlex.split(line)
    argv = [str(port) if a == "2575" else str(directory) if a == "DIR" else a for a in argv]
    argv[0] = str(DCMTK_BIN_DIR / argv[0])  # dcmtk's, not the venv's pynetdicom apps
    return argv


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=dcmtk_env(), check=False
    )


def test_the_guides_echoscu_and_dcmsend_lines_work_against_the_example(
    walk: tuple[AdapterProcess, dict[str, str], list[dict[str, Any]]],
    orthanc: OrthancPeer,
    tmp_path: Path,
) -> None:
    adapter, _files, _docs = walk
    files = make_ct_series(tmp_path / "study", 2, rows=16, cols=16, patient_id="GKE-GUIDE")
    (echo,) = guide_lines("echoscu")
    result = run(local(echo, adapter.port, tmp_path / "study"))
    assert result.returncode == 0, f"{echo}\n{result.stdout}{result.stderr}"
    before = orthanc.instance_count()
    (send,) = guide_lines("dcmsend")
    result = run(local(send, adapter.port, tmp_path / "study"))
    assert result.returncode == 0, f"{send}\n{result.stdout}{result.stderr}"
    orthanc.wait_for_instance_count(before + len(files), timeout=60)


def test_the_notes_lines_work_against_the_example(
    walk: tuple[AdapterProcess, dict[str, str], list[dict[str, Any]]], tmp_path: Path
) -> None:
    adapter, files, _docs = walk
    notes = next(text for name, text in files.items() if name.endswith("NOTES.txt"))
    make_ct_series(tmp_path / "study", 1, rows=16, cols=16)
    lines = [
        ln.strip() for ln in notes.splitlines() if ln.strip().startswith(("echoscu", "dcmsend"))
    ]
    assert len(lines) == 2, notes
    for line in lines:
        result = run(local(line, adapter.port, tmp_path / "study"))
        assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"


def test_the_helm_test_pod_passes_against_the_example(
    walk: tuple[AdapterProcess, dict[str, str], list[dict[str, Any]]],
) -> None:
    adapter, _files, docs = walk
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    args = pod["spec"]["containers"][0]["args"]
    health = adapter.health_url
    assert health is None  # argv mode: read the port from the config the adapter runs
    site = yaml.safe_load(Path(adapter.argv[adapter.argv.index("--config") + 1]).read_text())  # type: ignore[union-attr]
    local_args = []
    for arg in args:
        arg = arg.replace(f"@{RELEASE}:2575", f"@127.0.0.1:{adapter.port}")
        arg = re.sub(r"http://[^/]+/", f"http://127.0.0.1:{site['health']['port']}/", arg)
        local_args.append(arg)
    result = subprocess.run(
        [sys.executable, "-m", "adapter.cli", *local_args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: C-ECHO IMPORTADAPTER@" in result.stdout and "as PACS: success" in result.stdout
    assert "/readyz: 200" in result.stdout


def test_the_example_admits_the_test_vm_the_guide_describes() -> None:
    vpc = ipaddress.ip_network("10.128.0.0/9")  # the guide: subnets of an auto-mode VPC
    assert "10.128.0.0/9" in GUIDE
    for cidrs in (
        EXAMPLE["service"]["loadBalancerSourceRanges"],
        EXAMPLE["networkPolicy"]["pacsCidrs"],
    ):
        assert any(vpc.subnet_of(ipaddress.ip_network(c)) for c in cidrs), cidrs
    (echo,) = guide_lines("echoscu")
    calling = shlex.split(echo)[shlex.split(echo).index("-aet") + 1]
    assert calling in EXAMPLE["config"]["importer"]["dimse"]["allowed_calling_aets"]
