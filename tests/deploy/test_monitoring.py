"""monitoring/: the alert rules and the dashboard, checked offline, and how compose/ runs them.

`promtool` (Debian's prometheus package, which scripts/setup.sh installs) checks the rules and
runs their unit tests (alerts.test.yml: series in, alerts out). The rules and the dashboard may
name only metrics that shared.observability.metrics defines, and the dashboard shows every one
of them. k8s/ renders both as ConfigMaps (tests/deploy/test_k8s.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from devstack.images import SERVICE_IMAGES
from shared.observability import metrics
from tests.deploy.test_k8s import kustomize

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "monitoring" / "prometheus"
DASHBOARD = REPO / "monitoring" / "grafana" / "spinup-platform.json"
OPERATIONS = REPO / "docs" / "operations.md"
#: stack-deployer runs in the host's network under compose: the compose Prometheus cannot reach it.
COMPOSE_SCRAPED = set(SERVICE_IMAGES) - {"stack-deployer"}
_METRIC = re.compile(r"\b(spinup_[a-z0-9_]+)")
#: The sample names each metric type exposes.
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/setup.sh installs Debian's prometheus package")
    return subprocess.run(  # noqa: S603  (our own arguments)
        [promtool, *args], capture_output=True, text=True, check=False, cwd=cwd
    )


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _dashboard_queries() -> list[str]:
    return [
        target["expr"] for panel in _dashboard()["panels"] for target in panel.get("targets", [])
    ]


def _exported() -> dict[str, set[str]]:
    """Each metric shared.observability.metrics defines, with the sample names Prometheus stores."""
    families: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                families[family.name] = {family.name + s for s in _SUFFIXES[family.type]}
    return families


def _slugs(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    slugs = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return slugs


def test_promtool_accepts_the_alert_rules() -> None:
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_rules_unit_tests_pass() -> None:
    done = _promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for rule in _rules():
        mine = [check for check in checks if check["alertname"] == rule["alert"]]
        assert any(check["exp_alerts"] for check in mine), f"{rule['alert']} never fires"
        assert any(not check["exp_alerts"] for check in mine), f"{rule['alert']} never quiet"


def test_the_issue_s_alerts_exist() -> None:
    names = {rule["alert"] for rule in _rules()}
    assert {
        "SpinupWorkerTimeouts",
        "SpinupRelayLag",
        "SpinupReaperBacklog",
        "SpinupPoolEmpty",
        "SpinupHighServerErrorRate",
        "SpinupBackendDown",
    } <= names


def test_every_alert_has_a_summary_a_description_and_a_runbook_section() -> None:
    sections = _slugs(OPERATIONS.read_text())
    for rule in _rules():
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in {"page", "warning"}, rule["alert"]
        document, _, anchor = annotations["runbook_url"].partition("#")
        assert document == "docs/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in sections, f"docs/operations.md has no section #{anchor}"


def test_rules_and_dashboard_name_only_metrics_the_services_export() -> None:
    samples = set().union(*_exported().values())
    expressions = [rule["expr"] for rule in _rules()] + _dashboard_queries()
    for expression in expressions:
        for name in _METRIC.findall(expression):
            assert name in samples, (
                f"{name} is not defined in shared/observability/metrics.py: {expression}"
            )


def test_the_dashboard_shows_every_metric() -> None:
    queries = "\n".join(_dashboard_queries())
    for family, samples in _exported().items():
        assert any(sample in queries for sample in samples), f"no panel shows {family}"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses PromQL only inside rules: each query becomes a recording rule.
    queries = _dashboard_queries()
    assert queries
    rules = [
        {"record": f"dashboard:query{index}", "expr": expr.replace("$__rate_interval", "5m")}
        for index, expr in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = _promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "spinup-platform"
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["title"]
            assert panel["description"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"]


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    done = _promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_prometheus_scrapes_every_reachable_service_as_its_own_job(
    config: dict[str, Any],
) -> None:
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: [
            target for static in job["static_configs"] for target in static["targets"]
        ]
        for job in scrape["scrape_configs"]
    }
    assert set(jobs) == COMPOSE_SCRAPED
    services = config["services"]
    gateway_port = {str(port).split(":")[-1].split("/")[0] for port in services["gateway"]["ports"]}
    for job, targets in jobs.items():
        port = gateway_port.pop() if job == "gateway" else str(metrics.DEFAULT_PORT)
        assert targets == [f"{job}:{port}"], job
    # The `metrics` network joins Prometheus to the services it scrapes, and nothing else.
    members = {name for name, spec in services.items() if "metrics" in (spec.get("networks") or {})}
    assert members == COMPOSE_SCRAPED | {"prometheus"}
    assert config["networks"]["metrics"].get("internal") is True
    deployer = services["stack-deployer"]["environment"]
    assert deployer[metrics.HOST_SETTING] == "127.0.0.1"


def test_compose_prometheus_is_opt_in_and_loads_the_rules(config: dict[str, Any]) -> None:
    prometheus = config["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mounts = {
        volume.split(":")[1]: Path(volume.split(":")[0])
        for volume in prometheus["volumes"]
        if volume.startswith("/")
    }
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS / "prometheus.yml"
    assert mounts["/etc/prometheus/rules/spinup-alerts.yml"] == PROMETHEUS / "alerts.yml"
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_the_kubernetes_scrape_config_is_valid_prometheus_config(tmp_path: Path) -> None:
    # Debian's Prometheus is built without Kubernetes discovery: static targets stand in for it,
    # and everything else (relabelling, rule files) is checked as written.
    scrape = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())
    for job in scrape["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [
            {"role": "pod", "namespaces": {"names": ["spinup"]}}
        ]
        job["static_configs"] = [{"targets": ["10.0.0.1:9464"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(scrape))
    done = _promtool("check", "config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_kubernetes_scrape_config_reads_the_annotations_the_pods_carry() -> None:
    (job,) = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())[
        "scrape_configs"
    ]
    read = {label for rule in job["relabel_configs"] for label in rule["source_labels"]}
    meta = "__meta_kubernetes_pod_"
    for resource in kustomize("prod"):
        if resource["kind"] != "Deployment":
            continue
        template = resource["spec"]["template"]["metadata"]
        for annotation in template["annotations"]:
            name = re.sub(r"[^a-zA-Z0-9_]", "_", annotation)
            assert f"{meta}annotation_{name}" in read, annotation
        assert "app.kubernetes.io/name" in template["labels"]
    assert f"{meta}label_app_kubernetes_io_name" in read
    (job_rule,) = [rule for rule in job["relabel_configs"] if rule.get("target_label") == "job"]
    assert job_rule["source_labels"] == [f"{meta}label_app_kubernetes_io_name"]
