"""The metric names are a contract (alerts and dashboards use them); their labels stay bounded."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

import httpx
from litestar import Litestar, get
from litestar.params import FromPath
from prometheus_client.parser import text_string_to_metric_families

from devstack.__main__ import _banner
from devstack.stack import Stack
from gateway.http.middleware import request_id_middleware
from shared.contracts.errors import ErrorCode
from shared.contracts.kinds import DeprovisionReason, ResourceKind
from shared.contracts.subjects import ENDPOINTS, STACK_CONTROL
from shared.lifecycle import Ceiling
from shared.observability import metrics

#: name -> (type, labels): what alert rules and the dashboard are written against.
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "spinup_http_requests": ("counter", ("route", "method", "status")),
    "spinup_http_request_duration_seconds": ("histogram", ("route", "method")),
    "spinup_provisions": ("counter", ("kind", "outcome")),
    "spinup_deprovisions": ("counter", ("kind", "outcome")),
    "spinup_rotations": ("counter", ("kind", "outcome")),
    "spinup_claims": ("counter", ("outcome",)),
    "spinup_nats_request_duration_seconds": ("histogram", ("endpoint",)),
    "spinup_nats_requests_in_flight": ("gauge", ("endpoint",)),
    "spinup_pool_available": ("gauge", ("kind",)),
    "spinup_pool_refills": ("counter", ("kind",)),
    "spinup_relay_lag_events": ("gauge", ()),
    "spinup_reaper_backlog": ("gauge", ()),
    "spinup_reaper_deletes": ("counter", ("kind", "reason")),
    "spinup_quota_sweeps": ("counter", ("kind", "outcome")),
    "spinup_webhook_captures": ("counter", ()),
    "spinup_webhook_stream_dropped": ("counter", ()),
    "spinup_eventlog_append_duration_seconds": ("histogram", ()),
    "spinup_backend_up": ("gauge", ("backend",)),
    "spinup_backend_capacity_used": ("gauge", ("backend", "ceiling")),
    "spinup_backend_capacity_limit": ("gauge", ("backend", "ceiling")),
    "spinup_s3_gateway_reloads": ("counter", ()),
    "spinup_s3_identities_restored": ("counter", ()),
    "spinup_usage_measures": ("counter", ("kind", "measure")),
    "spinup_rate_limited": ("counter", ("route",)),
}

KINDS = {kind.value for kind in ResourceKind}
SUBJECTS = {
    getattr(endpoints, field.name).subject
    for endpoints in ENDPOINTS.values()
    for field in dataclasses.fields(endpoints)
} | {STACK_CONTROL.subject, metrics.OTHER_ENDPOINT}
ROUTES = {"/resources/{token}", "/plans", metrics.UNMATCHED_ROUTE}
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", metrics.OTHER_METHOD}
#: Every closed set a label may take its values from.
ALLOWED: dict[str, set[str]] = {
    "kind": KINDS,
    "backend": KINDS,
    "outcome": {metrics.OK} | {code.value for code in ErrorCode},
    "endpoint": SUBJECTS,
    "reason": {reason.value for reason in DeprovisionReason},
    "method": METHODS,
    "status": {str(status) for status in range(100, 600)},
    "route": ROUTES,
    "measure": {metrics.USAGE_MEASURED, metrics.USAGE_STANDING},
    "ceiling": {ceiling.value for ceiling in Ceiling},
}


def exposed() -> list[tuple[str, dict[str, str]]]:
    """Every spinup_ sample this process would answer a scrape with."""
    return [
        (sample.name, sample.labels)
        for family in text_string_to_metric_families(metrics.render().decode())
        if family.name.startswith("spinup_")
        for sample in family.samples
    ]


def test_every_metric_of_the_contract_is_defined_once_with_its_labels() -> None:
    defined = {
        value.describe()[0].name: (value.describe()[0].type, tuple(value._labelnames))
        for value in vars(metrics).values()
        if isinstance(value, metrics.Counter | metrics.Gauge | metrics.Histogram)
    }
    assert defined == CONTRACT


def test_route_labels_are_templates_and_methods_a_closed_set() -> None:
    assert metrics.route_label("/resources/{token:str}") == "/resources/{token}"
    assert metrics.route_label("/webhook/{token:str}/requests/{seq:int}") == (
        "/webhook/{token}/requests/{seq}"
    )
    assert metrics.route_label(None) == metrics.UNMATCHED_ROUTE
    assert metrics.method_label("PROPFIND") == metrics.OTHER_METHOD
    assert metrics.method_label("POST") == "POST"


async def test_hostile_requests_add_no_token_path_or_method_to_any_label() -> None:
    @get("/resources/{token:str}", sync_to_thread=False)
    def show(token: FromPath[str]) -> str:
        return token

    @get("/plans", sync_to_thread=False)
    def plans() -> str:
        return "plans"

    # The registry is the process's: other tests in this run may have counted real routes.
    before = {labels["route"] for _, labels in exposed() if "route" in labels}
    app = request_id_middleware(Litestar([show, plans]))
    secret = f"spn_{secrets.token_urlsafe(24)}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        await client.get(f"/resources/{secret}")
        await client.get(f"/resources/{secrets.token_hex(16)}")
        await client.get(f"/{secret}/../etc/passwd")
        await client.get(f"/nowhere/{secrets.token_hex(8)}?token={secret}")
        await client.request("PROPFIND", "/plans")
        await client.request(secrets.token_hex(4).upper(), f"/resources/{secret}")
        await client.post("/plans")
        await client.get("/plans")

    text = metrics.render().decode()
    assert secret not in text
    routes = {labels["route"] for name, labels in exposed() if "route" in labels}
    assert routes >= ROUTES
    assert routes - before <= ROUTES


def test_command_outcomes_are_ok_or_an_error_code_whatever_the_subject() -> None:
    for subject in SUBJECTS | {"prov.v1.unknown.provision", f"x.{secrets.token_hex(8)}"}:
        for code in [None, *ErrorCode]:
            metrics.record_command(subject, code)
    for name, labels in exposed():
        for label, label_value in labels.items():
            # A histogram's bucket bound; a route, which commands never set (and which other
            # tests of this process may have counted from a real gateway app).
            if label in {"le", "route"}:
                continue
            assert label_value in ALLOWED[label], (name, label, label_value)


def test_make_run_prints_where_to_scrape_every_service(tmp_path: Path) -> None:
    stack = Stack.for_dev(tmp_path)  # make run's ports; its secrets file goes to tmp_path
    printed = _banner(stack)
    urls = stack.metrics_urls
    assert set(urls) == set(stack.services)
    assert urls["gateway"] == f"{stack.gateway_url}/metrics"
    ports = {
        int(url.split(":")[2].split("/")[0]) for name, url in urls.items() if name != "gateway"
    }
    assert len(ports) == len(stack.services) - 1  # one port each
    for url in urls.values():
        assert url in printed
    reaper_env = stack.process_env("reaper")
    assert reaper_env["SPINUP_METRICS_PORT"] in urls["reaper"]
