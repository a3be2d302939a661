"""Render, lint and schema-check the Helm chart offline (helm-python-sdk), validate every manifest
against the Kubernetes OpenAPI schemas (kubernetes-validate); check the GKE-specific contract."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from adapter.config import SiteConfig, load_config_text
from adapter.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dicom-adapter"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
RELEASE = "dicom-adapter"
NAMESPACE = "dicom"
# Kubernetes versions to validate against: the chart's minimum (Chart.yaml kubeVersion) and a
# current GKE release. Both must be shipped by the installed kubernetes-validate.
K8S_VERSIONS = ("1.25.0", "1.33.0")
# Custom resources have no schema in kubernetes-validate: checked structurally below instead.
CRD_API_GROUPS = ("monitoring.coreos.com/",)
INTERNAL_LB = "networking.gke.io/load-balancer-type"


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def _load_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def render(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render the chart and return every manifest as a dict (NOTES.txt excluded)."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), path
                docs.append(doc)
    return docs


def notes(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> str:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return next(v for k, v in rendered.items() if k.endswith("NOTES.txt"))


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in kinds(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def port_named(c: dict[str, Any], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    assert name in ports, f"container port {name!r} missing: {ports}"
    return int(ports[name])


def adapter_yaml(docs: list[dict[str, Any]]) -> str:
    cm = one(docs, "ConfigMap")
    text: str = cm["data"]["adapter.yaml"]
    return text


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


VALUE_SETS: dict[str, dict[str, Any] | None] = {"default": None} | {
    p.stem: _load_values(p) for p in EXAMPLES
}


# --- the examples exist ------------------------------------------------------------------------


def test_example_values_files_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"import-only.yaml", "export-only.yaml", "two-way.yaml"}


def test_helm_python_and_kubernetes_validate_versions() -> None:
    assert helm_python.helm_sdk_version().startswith("v")
    shipped = kv_utils.all_versions()
    for version in K8S_VERSIONS:
        assert version in shipped, f"kubernetes-validate ships no schemas for {version}"


# --- lint and Kubernetes schema validation -----------------------------------------------------


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_lint_reports_no_errors(case: str) -> None:
    report = helm_python.lint(CHART, VALUE_SETS[case], namespace=NAMESPACE)
    errors = [m for m in report["messages"] if m["severity"] >= 3]
    assert report["errors"] == [] and errors == [], report
    strict = helm_python.lint(CHART, VALUE_SETS[case], strict=True, kube_version="v1.33.0")
    warnings = [m for m in strict["messages"] if m["severity"] >= 2]
    assert warnings == [], strict


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_every_manifest_validates_against_kubernetes_schema(
    chart: helm_python.Chart, case: str, k8s_version: str
) -> None:
    docs = render(chart, VALUE_SETS[case])
    assert docs
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc["apiVersion"].startswith(CRD_API_GROUPS):
            continue  # no OpenAPI schema shipped for CRDs; see test_service_monitor
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{case}: {name} invalid for Kubernetes {k8s_version}: {exc.message}")
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, name
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", name


def site_config(docs: list[dict[str, Any]], case: str) -> SiteConfig:
    """The rendered adapter.yaml, parsed by the adapter's own validator."""
    try:
        return load_config_text(adapter_yaml(docs), source=f"chart:{case}/adapter.yaml")
    except ConfigError as exc:
        pytest.fail(f"{case}: rendered adapter.yaml rejected by the adapter: {exc}")


VARIANTS: dict[str, dict[str, Any]] = {
    "kitchen-sink": {
        "existingSecret": "dicomweb-creds",
        "existingSecretEnvFrom": True,
        "extraEnv": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "ca-bundle"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/custom", "readOnly": True}],
        "imagePullSecrets": ["regcred"],
        "image": {"digest": "sha256:" + "a" * 64},
        "networkPolicy": {"enabled": True, "pacsCidrs": ["10.0.0.0/8"]},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "service": {
            "loadBalancerSourceRanges": ["10.0.0.0/8"],
            "loadBalancerIP": "10.1.2.3",
            "allowGlobalAccess": True,
            "annotations": {"example.com/x": "y"},
        },
        "importer": {
            "persistence": {"storageClass": "-"},
            "priorityClassName": "high",
            "tolerations": [{"key": "dicom", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "commonLabels": {"team": "imaging"},
    },
    "no-persistence-nodeport": {
        "importer": {"persistence": {"enabled": False}, "preStopSleepSeconds": 0},
        "service": {"type": "NodePort", "nodePort": 30575},
        "podDisruptionBudget": {"enabled": False},
        "metrics": {"podAnnotations": False, "service": {"enabled": False}},
        "serviceAccount": {"create": False, "name": "existing-ksa"},
    },
    "two-way-separate": {
        "config": {
            "exporter": {  # no "enabled": a present section is enabled, as in the adapter
                "pubsub": {"project": "p", "subscription": "s"},
                "destination": {"kind": "dimse", "ae_title": "PACS", "host": "pacs", "port": 104},
            }
        },
        "exporter": {"colocated": False, "replicas": 3},
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_render_valid_kubernetes(chart: helm_python.Chart, variant: str) -> None:
    values = VARIANTS[variant]
    docs = render(chart, values)
    assert_plugins_match(docs, site_config(docs, variant))
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_API_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    report = helm_python.lint(CHART, values, strict=True)
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def assert_plugins_match(docs: list[dict[str, Any]], site: SiteConfig) -> None:
    """Each plugin the adapter would enable runs in exactly one workload, and no other does."""
    run: list[str] = []
    for wl in workloads(docs):
        args = container(wl)["args"]
        run += [args[i + 1] for i, a in enumerate(args) if a == "--only"]
    assert sorted(run) == sorted(site.enabled_plugins())


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_configmap_accepted_by_adapter_config_validator(
    chart: helm_python.Chart, case: str
) -> None:
    docs = render(chart, VALUE_SETS[case])
    site = site_config(docs, case)
    assert site.dicomweb is not None
    assert site.dicomweb.url.startswith("https://healthcare.googleapis.com/v1/projects/")
    assert_plugins_match(docs, site)


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_every_directory_the_adapter_writes_is_a_writable_mount(
    chart: helm_python.Chart, case: str
) -> None:
    docs = render(chart, VALUE_SETS[case])
    site = site_config(docs, case)
    for wl in workloads(docs):
        c = container(wl)
        args = c["args"]
        plugins = {args[i + 1] for i, a in enumerate(args) if a == "--only"}
        needed = {str(site.core.state_dir), "/tmp"}
        if "importer" in plugins:
            importer = site.plugins["importer"]
            needed |= {str(importer.spool.path), str(importer.dead_letter_dir)}  # type: ignore[attr-defined]
        if "exporter" in plugins:
            needed.add(str(site.plugins["exporter"].state_dir))  # type: ignore[attr-defined]
        writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        assert needed <= writable, f"{wl['metadata']['name']}: not writable: {needed - writable}"
        volumes = {v["name"] for v in wl["spec"]["template"]["spec"]["volumes"]}
        claims = {t["metadata"]["name"] for t in wl["spec"].get("volumeClaimTemplates", [])}
        assert {m["name"] for m in c["volumeMounts"]} <= volumes | claims


# --- GKE Service / DIMSE -----------------------------------------------------------------------


def test_internal_load_balancer_by_default_on_port_2575(chart: helm_python.Chart) -> None:
    svc = one(render(chart), "Service", RELEASE)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"][INTERNAL_LB] == "Internal"
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 2575
    assert port["targetPort"] == "dimse"
    sts = one(render(chart), "StatefulSet")
    assert port_named(container(sts), "dimse") == 2575


def test_internal_annotation_switchable(chart: helm_python.Chart) -> None:
    svc = one(render(chart, {"service": {"internal": False}}), "Service", RELEASE)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert INTERNAL_LB not in (svc["metadata"].get("annotations") or {})
    svc = one(render(chart, {"service": {"type": "ClusterIP"}}), "Service", RELEASE)
    assert INTERNAL_LB not in (svc["metadata"].get("annotations") or {})
    assert "externalTrafficPolicy" not in svc["spec"]


def test_source_ranges_and_global_access(chart: helm_python.Chart) -> None:
    values = {"service": {"loadBalancerSourceRanges": ["10.0.0.0/8"], "allowGlobalAccess": True}}
    svc = one(render(chart, values), "Service", RELEASE)
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    annotations = svc["metadata"]["annotations"]
    assert annotations["networking.gke.io/internal-load-balancer-allow-global-access"] == "true"


def test_dimse_port_follows_config_and_service_port(chart: helm_python.Chart) -> None:
    values = {"config": {"importer": {"dimse": {"port": 11112}}}, "service": {"port": 104}}
    docs = render(chart, values)
    assert port_named(container(one(docs, "StatefulSet")), "dimse") == 11112
    svc = one(docs, "Service", RELEASE)
    assert svc["spec"]["ports"][0]["port"] == 104
    assert svc["spec"]["ports"][0]["targetPort"] == "dimse"


def test_headless_service_governs_the_statefulset(chart: helm_python.Chart) -> None:
    docs = render(chart)
    sts = one(docs, "StatefulSet")
    headless = one(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


# --- workloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_workloads_match_enabled_plugins(chart: helm_python.Chart, case: str) -> None:
    values = VALUE_SETS[case] or {}
    config = merged(chart.values["config"], values.get("config", {}))
    importer_on = "importer" in config and config["importer"].get("enabled", True)
    exporter_on = "exporter" in config and config["exporter"].get("enabled", True)
    colocated = importer_on and exporter_on and values.get("exporter", {}).get("colocated", False)
    docs = render(chart, values)
    assert len(kinds(docs, "StatefulSet")) == int(importer_on)
    assert len(kinds(docs, "Deployment")) == int(exporter_on and not colocated)
    lb = [s for s in kinds(docs, "Service") if s["spec"]["type"] == "LoadBalancer"]
    assert len(lb) == int(importer_on)
    for wl in workloads(docs):
        plugins = ["importer"] if wl["kind"] == "StatefulSet" else ["exporter"]
        if wl["kind"] == "StatefulSet" and colocated:
            plugins.append("exporter")
        c = container(wl)
        argv = c["command"] + c["args"]
        expected = ["dicom-adapter", "run", "--config", "/etc/dicom-adapter/adapter.yaml"]
        for plugin in plugins:
            expected += ["--only", plugin]
        assert argv == expected
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/etc/dicom-adapter"]["readOnly"] is True
        assert "/tmp" in mounts
        assert wl["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_export_only_has_no_dimse_listener(chart: helm_python.Chart) -> None:
    docs = render(chart, VALUE_SETS["export-only"])
    deploy = one(docs, "Deployment")
    c = container(deploy)
    assert "dimse" not in {p["name"] for p in c["ports"]}
    assert not kinds(docs, "StatefulSet")
    state_dir = "/var/lib/dicom-adapter/export"
    assert state_dir in {m["mountPath"] for m in c["volumeMounts"]}
    assert deploy["spec"]["replicas"] == 2
    assert not kinds(docs, "PersistentVolumeClaim")


def test_two_way_colocated_shares_the_echo_guard(chart: helm_python.Chart) -> None:
    values = VALUE_SETS["two-way"]
    assert values is not None and values["exporter"]["colocated"] is True
    docs = render(chart, values)
    assert not kinds(docs, "Deployment")
    c = container(one(docs, "StatefulSet"))
    assert c["args"][-4:] == ["--only", "importer", "--only", "exporter"]
    subpaths = {m["subPath"] for m in c["volumeMounts"] if m["name"] == "data"}
    assert subpaths == {"spool", "deadletter", "export", "state"}
    assert "exported back" not in notes(chart, values)


def test_two_way_separate_deployment_warns_about_echo(chart: helm_python.Chart) -> None:
    values = merged(VALUE_SETS["two-way"] or {}, {"exporter": {"colocated": False}})
    docs = render(chart, values)
    assert container(one(docs, "StatefulSet"))["args"][-2:] == ["--only", "importer"]
    assert container(one(docs, "Deployment"))["args"][-2:] == ["--only", "exporter"]
    assert len(kinds(docs, "PodDisruptionBudget")) == 2
    assert "exported back" in notes(chart, values)


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_probes_use_health_port_from_config(chart: helm_python.Chart, case: str) -> None:
    values = VALUE_SETS[case] or {}
    health_port = merged(chart.values["config"], values.get("config", {}))["health"]["port"]
    docs = render(chart, values)
    for wl in workloads(docs):
        c = container(wl)
        assert port_named(c, "health") == health_port
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        annotations = wl["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(health_port)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_health_port_change_moves_probes_and_metrics(chart: helm_python.Chart) -> None:
    docs = render(chart, {"config": {"health": {"port": 9090}}})
    c = container(one(docs, "StatefulSet"))
    assert port_named(c, "health") == 9090
    assert c["readinessProbe"]["httpGet"]["port"] == "health"
    metrics_svc = one(docs, "Service", f"{RELEASE}-metrics")
    assert metrics_svc["spec"]["ports"][0]["port"] == 9090
    assert yaml.safe_load(adapter_yaml(docs))["health"]["port"] == 9090


def test_health_bound_to_loopback_is_refused(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"config\.health\.bind"):
        render(chart, {"config": {"health": {"bind": "127.0.0.1"}}})


def test_spool_pvc_template_mounted_at_spool_path(chart: helm_python.Chart) -> None:
    values = {
        "config": {"importer": {"spool": {"path": "/data/spool"}}},
        "importer": {"persistence": {"size": "50Gi", "storageClass": "premium-rwo"}},
    }
    sts = one(render(chart, values), "StatefulSet")
    (pvc,) = sts["spec"]["volumeClaimTemplates"]
    assert pvc["metadata"]["name"] == "data"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert pvc["spec"]["storageClassName"] == "premium-rwo"
    mounts = {m["subPath"]: m for m in container(sts)["volumeMounts"] if "subPath" in m}
    assert mounts["spool"]["mountPath"] == "/data/spool"
    assert mounts["spool"]["name"] == "data"
    assert mounts["deadletter"]["mountPath"] == "/data/deadletter"  # <dir of spool>/deadletter
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    # default path
    sts = one(render(chart), "StatefulSet")
    mounts = {m["subPath"]: m for m in container(sts)["volumeMounts"] if "subPath" in m}
    assert mounts["spool"]["mountPath"] == "/var/lib/dicom-adapter/spool"
    assert mounts["state"]["mountPath"] == "/var/lib/dicom-adapter/state"
    assert "storageClassName" not in sts["spec"]["volumeClaimTemplates"][0]["spec"]


def test_spool_without_persistence_is_an_emptydir(chart: helm_python.Chart) -> None:
    values = {"importer": {"persistence": {"enabled": False}}}
    sts = one(render(chart, values), "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]
    assert "the spool is an emptyDir" in notes(chart, values)


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_security_context_hardened(chart: helm_python.Chart, case: str) -> None:
    docs = render(chart, VALUE_SETS[case])
    for wl in workloads(docs):
        pod = wl["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["runAsUser"] == 10001
        assert psc["fsGroup"] == 10001
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        csc = container(wl)["securityContext"]
        assert csc["runAsNonRoot"] is True
        assert csc["readOnlyRootFilesystem"] is True
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"]["drop"] == ["ALL"]
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp


def test_config_change_rolls_pods(chart: helm_python.Chart) -> None:
    def checksum(values: dict[str, Any] | None) -> str:
        sts = one(render(chart, values), "StatefulSet")
        value: str = sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    base = checksum(None)
    assert len(base) == 64
    assert checksum(None) == base
    assert checksum({"config": {"log": {"level": "DEBUG"}}}) != base


def test_configmap_renders_values_config_verbatim(chart: helm_python.Chart) -> None:
    docs = render(chart, VALUE_SETS["two-way"])
    parsed = yaml.safe_load(adapter_yaml(docs))
    expected = merged(chart.values["config"], VALUE_SETS["two-way"]["config"])  # type: ignore[index]
    assert parsed == expected


# --- identity and secrets ----------------------------------------------------------------------


def test_workload_identity_annotation(chart: helm_python.Chart) -> None:
    gsa = "dicom-adapter@my-project.iam.gserviceaccount.com"
    docs = render(chart, {"serviceAccount": {"gcpServiceAccount": gsa}})
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == gsa
    for wl in workloads(docs):
        assert wl["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    sa = one(render(chart), "ServiceAccount")
    assert "iam.gke.io/gcp-service-account" not in (sa["metadata"].get("annotations") or {})


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_chart_never_renders_a_secret(chart: helm_python.Chart, case: str) -> None:
    assert not kinds(render(chart, VALUE_SETS[case]), "Secret")


def test_existing_secret_is_referenced_not_inlined(chart: helm_python.Chart) -> None:
    values = {
        "existingSecret": "dicomweb-creds",
        "existingSecretEnvFrom": True,
        "config": {"dicomweb": {"auth": {"kind": "bearer", "token_env": "DICOMWEB_TOKEN"}}},
        "extraEnv": [
            {
                "name": "BASIC_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "other-secret", "key": "password"}},
            }
        ],
    }
    docs = render(chart, values)
    assert not kinds(docs, "Secret")
    sts = one(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    creds = next(v for v in pod["volumes"] if v["name"] == "credentials")
    assert creds["secret"]["secretName"] == "dicomweb-creds"
    c = container(sts)
    assert {"secretRef": {"name": "dicomweb-creds"}} in c["envFrom"]
    assert "/var/run/secrets/dicom-adapter" in {m["mountPath"] for m in c["volumeMounts"]}
    env = {e["name"]: e for e in c["env"]}
    assert env["BASIC_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "other-secret"
    assert "value" not in env["BASIC_PASSWORD"]


@pytest.mark.parametrize("key", ["token", "password"])
def test_inline_secret_in_config_is_refused(chart: helm_python.Chart, key: str) -> None:
    values = {"config": {"dicomweb": {"auth": {"kind": "basic", key: "hunter2"}}}}
    with pytest.raises(helm_python.HelmRenderError, match=rf"config\.dicomweb\.auth\.{key}"):
        render(chart, values)


# --- PDB, NetworkPolicy, monitoring ------------------------------------------------------------


def test_pod_disruption_budget_per_workload(chart: helm_python.Chart) -> None:
    docs = render(chart, merged(VALUE_SETS["two-way"] or {}, {"exporter": {"colocated": False}}))
    pdbs = kinds(docs, "PodDisruptionBudget")
    assert len(pdbs) == 2
    selectors = [p["spec"]["selector"]["matchLabels"] for p in pdbs]
    for wl in workloads(docs):
        assert wl["spec"]["selector"]["matchLabels"] in selectors
    assert all(p["spec"]["maxUnavailable"] == 1 for p in pdbs)
    assert not kinds(
        render(chart, {"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget"
    )


def test_network_policy_off_by_default(chart: helm_python.Chart) -> None:
    assert not kinds(render(chart), "NetworkPolicy")


def test_network_policy_limits_dimse_to_pacs_cidrs(chart: helm_python.Chart) -> None:
    cidrs = ["10.10.0.0/16", "192.168.5.7/32"]
    docs = render(chart, {"networkPolicy": {"enabled": True, "pacsCidrs": cidrs}})
    (policy,) = kinds(docs, "NetworkPolicy")
    sts = one(docs, "StatefulSet")
    assert policy["spec"]["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    dimse = [r for r in rules if {"port": "dimse", "protocol": "TCP"} in r["ports"]]
    assert len(dimse) == 1
    assert [f["ipBlock"]["cidr"] for f in dimse[0]["from"]] == cidrs
    health = [r for r in rules if {"port": "health", "protocol": "TCP"} in r["ports"]]
    assert len(health) == 1 and health[0]["from"] == [{"namespaceSelector": {}}]


def test_network_policy_without_cidrs_is_refused(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"networkPolicy\.pacsCidrs"):
        render(chart, {"networkPolicy": {"enabled": True}})


def test_service_monitor_optional(chart: helm_python.Chart) -> None:
    assert not kinds(render(chart), "ServiceMonitor")
    docs = render(chart, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"r": "p"}}}})
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["r"] == "p"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "health" and endpoint["path"] == "/metrics"
    metrics_svc = one(docs, "Service", f"{RELEASE}-metrics")
    labels = metrics_svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


# --- NOTES -------------------------------------------------------------------------------------


def test_notes_tell_lb_address_and_dcmsend(chart: helm_python.Chart) -> None:
    text = notes(chart)
    assert f"kubectl get svc --namespace {NAMESPACE} {RELEASE}" in text
    assert "dcmsend -aec IMPORTADAPTER <LB-IP> 2575 +sd DIR" in text
    assert "placeholder" in text  # default dicomweb.url must be replaced
    text = notes(chart, VALUE_SETS["export-only"])
    assert "dcmsend" not in text and "dicom-export" in text


# --- values.schema.json ------------------------------------------------------------------------


def test_schema_is_draft_07(chart: helm_python.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"service": {"port": "abc"}}, "/service/port"),
        ({"service": {"port": 70000}}, "/service/port"),
        ({"service": {"type": "ExternalName"}}, "/service/type"),
        ({"servcie": {"port": 2575}}, "servcie"),
        ({"exporter": {"enabled": True}}, "enabled"),
        ({"config": {"health": {"port": "8080"}}}, "/config/health/port"),
        ({"config": {"importer": {"dimse": {"port": "2575"}}}}, "/config/importer/dimse/port"),
        ({"config": {"importer": {"dimse": {"ae_title": "A" * 17}}}}, "ae_title"),
        ({"config": {"dicomweb": {"auth": {"kind": "oauth"}}}}, "/config/dicomweb/auth/kind"),
        ({"networkPolicy": {"pacsCidrs": ["pacs.local"]}}, "/networkPolicy/pacsCidrs/0"),
        ({"importer": {"replicas": "one"}}, "/importer/replicas"),
        ({"config": {"health": {"enabled": False}}}, "/config/health/enabled"),
        ({"exporter": {"colocated": "yes"}}, "/exporter/colocated"),
        ({"config": {"importer": {"dimse": {"prot": 104}}}}, "'prot' not allowed"),
        ({"config": {"importer": {"ack": "after-spoool"}}}, "/config/importer/ack"),
        ({"config": {"retry": {"max_attempts": -1}}}, "/config/retry/max_attempts"),
        ({"config": {"exporter": {"pubsub": {"project": "p"}}}}, "/config/exporter"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(
    chart: helm_python.Chart, values: dict[str, Any], needle: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as info:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert needle in str(info.value)
    report = helm_python.lint(CHART, values)
    assert any(needle in e for e in report["errors"]), report


def test_bad_values_file_is_rejected(tmp_path: Path, chart: helm_python.Chart) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("service:\n  port: abc\nunknownTopLevel: true\n")
    values = helm_python.values_from_yaml(bad.read_text())
    with pytest.raises(helm_python.HelmValuesError) as info:
        chart.validate_schema(values)
    message = str(info.value)
    assert "/service/port" in message
    assert "unknownTopLevel" in message


def test_default_values_pass_schema(chart: helm_python.Chart) -> None:
    chart.validate_schema(chart.values)
    for case in VALUE_SETS:
        chart.validate_schema(chart.merge_values(VALUE_SETS[case]))


def test_gke_guide_points_at_real_files_and_values() -> None:
    guide = (ROOT / "docs" / "gke.md").read_text()
    for example in ("import-only.yaml", "export-only.yaml", "two-way.yaml"):
        assert f"charts/dicom-adapter/examples/{example}" in guide or f"examples/{example}" in guide
    assert "networking.gke.io/load-balancer-type" in guide
    assert "--dimse_aet=IMPORTADAPTER" in guide and "--dicomweb_address=" in guide
    assert "dcmsend -aec IMPORTADAPTER" in guide
    for role in ("roles/healthcare.dicomEditor", "roles/pubsub.subscriber"):
        assert role in guide
