"""k8s/ NetworkPolicies hold the containment rules, checked on the rendered overlays.

Rendered by `kubectl kustomize` (test_k8s.kustomize). A small evaluator answers "may pod A open
port P on pod B" from the policies (both ends' policies, in one namespace, as Kubernetes does)
for sample pods labelled as each server and service is.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from devstack.images import SERVICE_IMAGES
from shared.observability import metrics
from tests.deploy.test_k8s import kustomize

SERVICES = set(SERVICE_IMAGES)
SEAWEEDFS_INTERNAL = [9333, 19333, 8080, 18080, 8888, 18888]
CUSTOMER_PORTS = {
    "customer-postgres": 5432,
    "customer-redis": 6379,
    "customer-nats": 4222,
    "mongo": 27017,
}
PLATFORM_PORTS = {"platform-postgres": 5432, "platform-redis": 6379, "platform-nats": 4222}
FORBIDDEN_FOR_TENANTS = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "fc00::/7",
    "fe80::/10",
]
#: Ports a platform pod might listen on: every client, cluster, monitor, metrics and HTTP port.
ANY_PORT = [80, 443, 2376, 4222, 5432, 6222, 6379, 8080, 8222, 8333, 27017, metrics.DEFAULT_PORT]
Pod = dict[str, str]


def _pods() -> dict[str, Pod]:
    """Sample pods: every service, server and SeaweedFS component, and a tenants' engine."""
    # Every pod says it is part of Spinup: a policy must not trust that label alone.
    spinup = {"app.kubernetes.io/part-of": "spinup"}
    pods: dict[str, Pod] = {name: {**spinup, "app.kubernetes.io/name": name} for name in SERVICES}
    for server in [*PLATFORM_PORTS, *CUSTOMER_PORTS]:
        pods[server] = {**spinup, "app.kubernetes.io/name": server, "spinup.io/server": server}
    for component in ("master", "volume", "filer", "s3"):
        pods[f"seaweedfs-{component}"] = {
            **spinup,
            "spinup.io/server": "seaweedfs",
            "app.kubernetes.io/component": component,
        }
    pods["tenant-engine"] = {**spinup, "spinup.io/server": "container-engine"}
    pods["tenant-engine-internet"] = {
        **pods["tenant-engine"],
        "spinup.io/internet": "public",
    }
    pods["stranger"] = {}
    return pods


def _selects(selector: dict[str, Any] | None, labels: Pod) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def _port_allowed(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(
        entry.get("protocol", "TCP") == "TCP"
        and (
            entry.get("port") is None
            or entry["port"] <= port <= entry.get("endPort", entry["port"])
        )
        for entry in ports
    )


def _peer_matches(peer: dict[str, Any], pod: Pod | None, address: str | None) -> bool:
    """Does a `from`/`to` peer match a pod of this namespace, or an address outside it?"""
    if "ipBlock" in peer:
        if address is None:
            return False  # pods are matched by selectors; ipBlocks are for the outside
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(address)
        inside = ip in ipaddress.ip_network(block["cidr"])
        return inside and not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if pod is None or "namespaceSelector" in peer:
        return False  # another namespace's pods: none of our sample pods
    return _selects(peer.get("podSelector"), pod)


def _within(inner: ipaddress.IPv4Network | ipaddress.IPv6Network, outer: str) -> bool:
    """Is ``inner`` inside the network ``outer`` (same IP version)?"""
    net = ipaddress.ip_network(outer, strict=False)
    return (
        inner.version == net.version
        and int(net.network_address) <= int(inner.network_address)
        and int(inner.broadcast_address) <= int(net.broadcast_address)
    )


class Policies:
    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.all = [r for r in resources if r["kind"] == "NetworkPolicy"]

    def _applying(self, pod: Pod, direction: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.all
            if _selects(p["spec"]["podSelector"], pod)
            and direction in p["spec"].get("policyTypes", ["Ingress"])
        ]

    def ingress(
        self, source: Pod | None, target: Pod, port: int, address: str | None = None
    ) -> bool:
        """May ``source`` (a pod, or None for ``address`` outside the cluster) reach target:port?"""
        applying = self._applying(target, "Ingress")
        if not applying:
            return True
        return any(
            _port_allowed(rule, port)
            and (
                not rule.get("from")
                or any(_peer_matches(peer, source, address) for peer in rule["from"])
            )
            for policy in applying
            for rule in policy["spec"].get("ingress") or []
        )

    def egress(
        self, source: Pod, target: Pod | None, port: int, address: str | None = None
    ) -> bool:
        applying = self._applying(source, "Egress")
        if not applying:
            return True
        return any(
            _port_allowed(rule, port)
            and (
                not rule.get("to")
                or any(_peer_matches(peer, target, address) for peer in rule["to"])
            )
            for policy in applying
            for rule in policy["spec"].get("egress") or []
        )

    def reaches(self, source: Pod, target: Pod, port: int) -> bool:
        return self.egress(source, target, port) and self.ingress(source, target, port)


@pytest.fixture(scope="module", params=["dev", "prod"])
def resources(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(request.param)


@pytest.fixture(scope="module")
def policies(resources: list[dict[str, Any]]) -> Policies:
    return Policies(resources)


def test_every_pod_is_selected_by_a_default_deny(resources: list[dict[str, Any]]) -> None:
    workloads = [r for r in resources if r["kind"] in {"Deployment", "StatefulSet", "DaemonSet"}]
    assert workloads
    denies = [
        r
        for r in resources
        if r["kind"] == "NetworkPolicy"
        and set(r["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not r["spec"].get("ingress")
        and not r["spec"].get("egress")
    ]
    namespaces = {r["metadata"].get("namespace") for r in workloads}
    for namespace in namespaces:
        assert any(
            d["metadata"].get("namespace") == namespace and d["spec"]["podSelector"] == {}
            for d in denies
        ), f"no default-deny in {namespace}"
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(
            d["metadata"].get("namespace") == workload["metadata"].get("namespace")
            and _selects(d["spec"]["podSelector"], labels)
            for d in denies
        ), workload["metadata"]["name"]


def test_seaweedfs_internals_are_reached_only_by_seaweedfs_and_storage_provisioner(
    policies: Policies,
) -> None:
    pods = _pods()
    insiders = {f"seaweedfs-{c}" for c in ("master", "volume", "filer", "s3")}
    for component in ("master", "volume", "filer"):
        target = pods[f"seaweedfs-{component}"]
        for port in SEAWEEDFS_INTERNAL:
            assert not policies.ingress(None, target, port, "203.0.113.9"), (component, port)
            # Its own ingress rules decide, whatever the source's egress would allow.
            for name, source in pods.items():
                if policies.ingress(source, target, port):
                    assert name in insiders | {"storage-provisioner"}, (name, component, port)
    # storage-provisioner gets the master and the filer (weed shell), not the volume server.
    provisioner = pods["storage-provisioner"]
    assert policies.reaches(provisioner, pods["seaweedfs-master"], 19333)
    assert policies.reaches(provisioner, pods["seaweedfs-filer"], 18888)
    assert not policies.reaches(provisioner, pods["seaweedfs-volume"], 8080)
    assert policies.reaches(pods["seaweedfs-s3"], pods["seaweedfs-filer"], 18888)


def test_only_s3_faces_tenants_and_no_tenant_facing_rule_selects_the_filer(
    policies: Policies,
) -> None:
    pods = _pods()
    tenant = pods["tenant-engine"]
    for component in ("master", "volume", "filer", "s3"):
        target = pods[f"seaweedfs-{component}"]
        for port in [8333, *SEAWEEDFS_INTERNAL, 18333]:
            expected = component == "s3" and port == 8333
            assert policies.reaches(tenant, target, port) == expected, (component, port)
            assert policies.ingress(tenant, target, port) == expected, (component, port)
            outside = policies.ingress(None, target, port, "203.0.113.9")
            assert outside == expected, (component, port)


def test_platform_servers_are_reached_only_by_platform_services(policies: Policies) -> None:
    pods = _pods()
    for server, port in PLATFORM_PORTS.items():
        target = pods[server]
        assert not policies.ingress(None, target, port, "203.0.113.9"), server
        for name, source in pods.items():
            if name != server and policies.ingress(source, target, port):
                assert name in SERVICES, (name, server)
        assert not policies.ingress(pods["tenant-engine"], target, port)


def test_tenant_egress_is_dns_customer_servers_and_maybe_the_public_internet(
    policies: Policies,
) -> None:
    pods = _pods()
    for name in ("tenant-engine", "tenant-engine-internet"):
        tenant = pods[name]
        for server, port in CUSTOMER_PORTS.items():
            assert policies.reaches(tenant, pods[server], port), (name, server)
        for target in [*PLATFORM_PORTS, *SERVICES]:
            for port in ANY_PORT:
                assert not policies.egress(tenant, pods[target], port), (name, target, port)
        for forbidden in FORBIDDEN_FOR_TENANTS:
            network = ipaddress.ip_network(forbidden)
            for address in (network[1], network[-2]):
                assert not policies.egress(tenant, None, 443, str(address)), (name, address)
        assert not policies.egress(tenant, None, 80, "169.254.169.254"), name
        assert not policies.egress(tenant, None, 443, "::ffff:169.254.169.254"), name
    assert not policies.egress(pods["tenant-engine"], None, 443, "93.184.216.34")
    assert policies.egress(pods["tenant-engine-internet"], None, 443, "93.184.216.34")


def test_tenant_ip_blocks_name_their_exceptions(resources: list[dict[str, Any]]) -> None:
    pods = _pods()
    for policy in resources:
        if policy["kind"] != "NetworkPolicy":
            continue
        if not _selects(policy["spec"]["podSelector"], pods["tenant-engine-internet"]):
            continue
        for rule in policy["spec"].get("egress") or []:
            for peer in rule.get("to") or []:
                block = peer.get("ipBlock")
                if block is None:
                    continue
                for forbidden in map(ipaddress.ip_network, FORBIDDEN_FOR_TENANTS):
                    if _within(forbidden, block["cidr"]):
                        excepted = block.get("except", [])
                        assert any(_within(forbidden, e) for e in excepted), (
                            policy["metadata"]["name"],
                            forbidden,
                        )


def test_no_pod_of_the_namespace_reaches_a_workers_metrics_port(policies: Policies) -> None:
    # Prometheus, in the `monitoring` namespace, is the one peer: not a tenant, not a service.
    pods = _pods()
    for service in SERVICES - {"gateway"}:
        for name, source in pods.items():
            assert not policies.reaches(source, pods[service], metrics.DEFAULT_PORT), (
                name,
                service,
            )
        assert not policies.ingress(None, pods[service], metrics.DEFAULT_PORT, "203.0.113.9")
