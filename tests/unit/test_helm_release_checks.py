"""What an operator gets beyond the workloads: `helm test`, chart metadata, every value
documented in values.yaml, and the optional Grafana dashboard."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from typing import Any

import helm_python
import pytest
import yaml

from tests.unit.test_helm_chart import CHART, NAMESPACE, RELEASE, VALUE_SETS, kinds, render

ROOT = CHART.parents[1]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def test_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (pod,) = [
        d for d in kinds(docs, "Pod") if d["metadata"]["annotations"]["helm.sh/hook"] == "test"
    ]
    return pod


test_pod.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def probe_args(docs: list[dict[str, Any]]) -> list[str]:
    (c,) = test_pod(docs)["spec"]["containers"]
    assert c["command"] == ["dicom-adapter"]
    args: list[str] = c["args"]
    assert args[0] == "probe"
    return args


def test_helm_test_echoes_the_dimse_service_and_gets_readyz(chart: helm_python.Chart) -> None:
    docs = render(chart)
    args = probe_args(docs)
    assert args[args.index("--echo") + 1] == f"IMPORTADAPTER@{RELEASE}:2575"
    assert args[args.index("--calling-ae") + 1] == "HELMTEST"
    assert args[args.index("--http") + 1] == f"http://{RELEASE}-metrics:8080/readyz"
    pod = test_pod(docs)
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] is True


def test_helm_test_calls_as_an_allowed_ae_through_the_network_policy(
    chart: helm_python.Chart,
) -> None:
    docs = render(chart, VALUE_SETS["import-only"])
    args = probe_args(docs)
    assert args[args.index("--calling-ae") + 1] == "PACS"  # the first allowed calling AE
    (policy,) = kinds(docs, "NetworkPolicy")
    dimse = next(
        r for r in policy["spec"]["ingress"] if {"port": "dimse", "protocol": "TCP"} in r["ports"]
    )
    selectors = [f["podSelector"]["matchLabels"] for f in dimse["from"] if "podSelector" in f]
    expected = {"app.kubernetes.io/name": "dicom-adapter", "app.kubernetes.io/instance": RELEASE}
    assert selectors == [expected | {"app.kubernetes.io/component": "test"}]
    assert all(test_pod(docs)["metadata"]["labels"][k] == v for k, v in selectors[0].items())


def test_helm_test_of_an_export_only_release_only_gets_readyz(chart: helm_python.Chart) -> None:
    args = probe_args(render(chart, VALUE_SETS["export-only"]))
    assert "--echo" not in args
    assert args[args.index("--http") + 1].endswith(":8080/readyz")


def test_chart_metadata_points_at_this_project() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert meta["home"] == urls["Homepage"]
    assert meta["sources"] == [urls["Source"]]
    assert "GoogleCloudPlatform" not in json.dumps(meta)
    assert meta["icon"].startswith(
        urls["Source"].replace("github.com", "raw.githubusercontent.com")
    )
    icon = CHART / meta["icon"].split("/main/charts/dicom-adapter/", 1)[1]
    assert icon.is_file() and icon.read_text().lstrip().startswith("<svg")


def _schema_paths(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Chart value paths (config: excluded: docs/configuration.md; $refs are Kubernetes types)."""
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        if path in ("global",):
            continue
        yield path
        if path != "config":
            yield from _schema_paths(sub, f"{path}.")


def _values_lines() -> dict[str, tuple[int, list[str]]]:
    """key path -> (line number, lines) of values.yaml, tracking indentation."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    found: dict[str, tuple[int, list[str]]] = {}
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):", line)
        if not match:
            continue
        indent = len(match[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match[2]))
        found[".".join(k for _, k in stack)] = (number, lines)
    return found


def _commented(number: int, lines: list[str]) -> bool:
    if "#" in lines[number].split(":", 1)[1]:
        return True
    previous = number - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    return previous >= 0 and lines[previous].lstrip().startswith("#")


def test_every_chart_value_is_in_values_yaml_with_a_comment() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    present = _values_lines()
    paths = list(_schema_paths(schema))
    assert "service.nodePort" in paths
    missing = [p for p in paths if p not in present]
    assert missing == [], f"in values.schema.json but not in values.yaml: {missing}"
    bare = [p for p in paths if not _commented(*present[p])]
    assert bare == [], f"values.yaml keys without a comment: {bare}"


def test_template_refuses_a_mistyped_config_key_naming_it(chart: helm_python.Chart) -> None:
    for values, needle in (
        ({"config": {"importer": {"dimse": {"prot": 104}}}}, "prot"),
        ({"config": {"importer": {"ack": "after-spoool"}}}, "/config/importer/ack"),
    ):
        with pytest.raises(helm_python.HelmValuesError) as info:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
        assert needle in str(info.value)


def test_disabled_exporter_needs_no_keys_in_the_chart(chart: helm_python.Chart) -> None:
    docs = render(chart, {"config": {"exporter": {"enabled": False}}})
    assert not kinds(docs, "Deployment")


def _metric_names() -> set[str]:
    from adapter import metrics

    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names |= {sample.name for sample in family.samples} | {family.name}
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
    return names


def test_grafana_dashboard_ships_as_an_optional_labelled_configmap(
    chart: helm_python.Chart,
) -> None:
    assert not [
        c for c in kinds(render(chart), "ConfigMap") if "dashboard" in c["metadata"]["name"]
    ]
    docs = render(
        chart, {"metrics": {"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}}
    )
    (cm,) = [c for c in kinds(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["dicom-adapter.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "dicom-adapter.json").read_text())


def test_grafana_dashboard_queries_only_metrics_the_adapter_exports() -> None:
    dashboard = json.loads((CHART / "dashboards" / "dicom-adapter.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(dicom_adapter_\w+)", e)}
    exported = _metric_names()
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for needle in (
        "received",
        "delivered per destination",
        "failed per destination",
        "spool depth",
        "spool oldest age",
    ):
        assert needle in titles
    assert any("by (destination" in e for e in exprs)
