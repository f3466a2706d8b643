"""Issue 24: ``GET /metrics`` of a running stack counts exactly the workload it was given.

The stack's gateway runs two HTTP processes (``SPINUP_HTTP_PROCESSES=2``), so every count read
from it is the sum over both: the multiprocess files are read one process at a time to show
that both contributed and that a scrape answers their sum.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from devstack.services import ServiceProcess
from devstack.stack import Stack
from shared.lifecycle import Ceiling
from shared.testing.polling import eventually
from tests.e2e.conftest import gateway_with_plans, new_resource

pytestmark = pytest.mark.e2e

CREATES = {"db": 3, "cache": 2, "webhook": 2}
KIND_OF_PATH = {"db": "postgres", "cache": "redis", "webhook": "webhook", "queue": "nats"}
RATE_PER_MINUTE = 2


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str) -> str:
    """``GET url`` on a connection of its own (with two processes, either may answer)."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def multiprocess_dir(stack: Stack) -> Path:
    """The stack gateway's multiprocess directory: where its forked processes write."""
    pid = stack.services["gateway"].pid
    assert pid is not None
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 2, children  # SPINUP_HTTP_PROCESSES=2
    for directory in (stack.profile.run_dir / "metrics").iterdir():
        if any((directory / f"counter_{child}.db").exists() for child in children):
            return directory
    msg = f"no metrics directory of gateway processes {children}"
    raise AssertionError(msg)


def per_process_requests(directory: Path, route: str) -> dict[str, float]:
    """``spinup_http_requests_total`` of ``route`` in each process's own counter file."""
    counts: dict[str, float] = {}
    for file in directory.glob("counter_*.db"):
        total = 0.0
        for metric in MultiProcessCollector.merge([str(file)]):
            for sample in metric.samples:
                if sample.name == "spinup_http_requests_total" and sample.labels["route"] == route:
                    total += sample.value
        counts[file.stem.removeprefix("counter_")] = total
    return counts


async def test_counters_match_a_known_workload(stack: Stack, http: httpx.AsyncClient) -> None:
    metrics_url = f"{stack.gateway_url}/metrics"
    before = await scrape(metrics_url)

    for path, count in CREATES.items():
        for _ in range(count):
            await new_resource(http, path)

    after = await scrape(metrics_url)
    for path, count in CREATES.items():
        kind = KIND_OF_PATH[path]
        route = f"/{path}/new"
        ok = value(after, "spinup_provisions_total", kind=kind, outcome="ok") - value(
            before, "spinup_provisions_total", kind=kind, outcome="ok"
        )
        assert ok == count, (kind, ok)
        served = value(
            after, "spinup_http_requests_total", route=route, method="POST", status="201"
        ) - value(before, "spinup_http_requests_total", route=route, method="POST", status="201")
        assert served == count, (route, served)
        timed = value(
            after, "spinup_http_request_duration_seconds_count", route=route, method="POST"
        ) - value(before, "spinup_http_request_duration_seconds_count", route=route, method="POST")
        assert timed == count
        endpoint = f"prov.v1.{kind}.provision"
        requests = value(
            after, "spinup_nats_request_duration_seconds_count", endpoint=endpoint
        ) - value(before, "spinup_nats_request_duration_seconds_count", endpoint=endpoint)
        assert requests == count
        assert value(after, "spinup_nats_requests_in_flight", endpoint=endpoint) == 0


async def test_a_worker_that_does_not_answer_is_counted_as_worker_timeout(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    metrics_url = f"{stack.gateway_url}/metrics"
    labels = {"kind": "nats", "outcome": "worker_timeout"}
    before = value(await scrape(metrics_url), "spinup_provisions_total", **labels)
    worker = stack.services["queue-provisioner"]
    assert worker.pid is not None
    # Frozen, not stopped: its subscription stays, so the request waits for a reply in vain.
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        response = await http.post("/queue/new")
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "worker_timeout"
    after = value(await scrape(metrics_url), "spinup_provisions_total", **labels)
    assert after - before == 1


@pytest.fixture(scope="module")
def tight_gateway(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    def tight_rate(plans: dict[str, Any]) -> None:
        tier = plans["anonymous_tier"]
        plans["tiers"][tier]["rate_limit"] = {"provisions_per_minute": RATE_PER_MINUTE}

    directory = tmp_path_factory.mktemp("metrics-plans")
    trusting_localhost = {"SPINUP_TRUSTED_PROXIES": "127.0.0.1/32"}
    with gateway_with_plans(stack, directory, tight_rate, trusting_localhost) as gateway:
        yield gateway


async def test_a_rate_limited_request_is_counted_by_route(tight_gateway: ServiceProcess) -> None:
    # A client network nobody else uses: the rate limit is kept in the shared Redis.
    client = {"X-Forwarded-For": f"100.{64 + secrets.randbelow(64)}.{secrets.randbelow(256)}.9"}
    async with httpx.AsyncClient(base_url=str(tight_gateway.url), timeout=60) as http:
        statuses = [
            (await http.post("/webhook/new", headers=client)).status_code
            for _ in range(RATE_PER_MINUTE + 1)
        ]
    assert statuses == [201] * RATE_PER_MINUTE + [429]

    text = await scrape(f"{tight_gateway.url}/metrics")
    assert value(text, "spinup_rate_limited_total", route="/webhook/new") == 1
    assert value(text, "spinup_provisions_total", kind="webhook", outcome="rate_limited") == 1
    assert value(text, "spinup_provisions_total", kind="webhook", outcome="ok") == RATE_PER_MINUTE
    assert (
        value(text, "spinup_http_requests_total", route="/webhook/new", method="POST", status="429")
        == 1
    )
    assert value(text, "spinup_webhook_captures_total") == 0


async def test_two_gateway_processes_report_their_sum(stack: Stack) -> None:
    route = "/plans"
    directory = multiprocess_dir(stack)
    metrics_url = f"{stack.gateway_url}/metrics"
    before = value(
        await scrape(metrics_url),
        "spinup_http_requests_total",
        route=route,
        method="GET",
        status="200",
    )
    sent = 0

    async def one_request() -> None:
        # A connection each, so the kernel hands them to whichever process accepts first.
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(f"{stack.gateway_url}{route}")
        assert response.status_code == 200

    async def both_processes_served() -> bool:
        nonlocal sent
        await asyncio.gather(*(one_request() for _ in range(20)))
        sent += 20
        return sum(1 for count in per_process_requests(directory, route).values() if count) >= 2

    assert await eventually(both_processes_served, within=60)
    per_process = per_process_requests(directory, route)
    # A request is counted before its answer's last byte leaves, so a client holding every
    # answer finds every one counted.
    assert sum(per_process.values()) - before == sent
    for _ in range(4):  # whichever process answers the scrape reports the same sum
        total = value(
            await scrape(metrics_url),
            "spinup_http_requests_total",
            route=route,
            method="GET",
            status="200",
        )
        assert total == sum(per_process.values())
    assert total - before == sent


#: A ceiling of each kind's shared server its worker reports (ADR 0063).
SHARED_SERVER_CEILINGS = [
    ("pg-provisioner", "postgres", Ceiling.CONNECTIONS),
    ("redis-provisioner", "redis", Ceiling.CONNECTIONS),
    ("redis-provisioner", "redis", Ceiling.MEMORY_BYTES),
    ("mongo-provisioner", "mongo", Ceiling.CONNECTIONS),
    ("queue-provisioner", "nats", Ceiling.CONNECTIONS),
    ("queue-provisioner", "nats", Ceiling.JETSTREAM_STORAGE_RESERVED_BYTES),
    ("storage-provisioner", "s3", Ceiling.VOLUMES),
]


async def test_every_worker_and_the_reaper_serve_their_metrics(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    await new_resource(http, "db")
    urls = stack.metrics_urls
    assert set(urls) >= {"gateway", "reaper", "pg-provisioner", "redis-provisioner"}

    async def pg_provisioner_reports() -> bool:
        text = await scrape(urls["pg-provisioner"])
        return (
            value(text, "spinup_backend_up", backend="postgres") == 1
            and value(text, "spinup_eventlog_append_duration_seconds_count") > 0
            and ("spinup_pool_available", frozenset({("kind", "postgres")})) in samples(text)
        )

    assert await eventually(pg_provisioner_reports, within=30)

    async def every_shared_server_reported() -> bool:
        for service, backend, ceiling in SHARED_SERVER_CEILINGS:
            text = await scrape(urls[service])
            labels = {"backend": backend, "ceiling": ceiling.value}
            used = value(text, "spinup_backend_capacity_used", **labels)
            if not 0 <= used <= value(text, "spinup_backend_capacity_limit", **labels) > 0:
                return False
        return True

    assert await eventually(every_shared_server_reported, within=30)
    reaper = samples(await scrape(urls["reaper"]))
    assert ("spinup_reaper_backlog", frozenset()) in reaper
    gateway = samples(await scrape(urls["gateway"]))
    assert ("spinup_relay_lag_events", frozenset()) in gateway
