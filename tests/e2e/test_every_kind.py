"""What every kind promises alike: the response shape, show, delete, idempotency, honest 503s
for one kind only, and no secret in the logs or the event log.

The kind-specific tests (test_cache.py, test_queue.py...) prove the credentials work and that
tenants cannot reach each other; this module proves the common contract once for all of them.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from devstack.backends import BACKENDS
from devstack.stack import Stack
from shared.contracts.kinds import LIMITS_BY_KIND, ResourceKind
from shared.contracts.subjects import PROVISION_ENDPOINTS
from shared.plans import load_plans
from shared.testing.clients import redis_logs_in

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]

PATHS = {
    ResourceKind.POSTGRES: "/db/new",
    ResourceKind.REDIS: "/cache/new",
    ResourceKind.MONGO: "/nosql/new",
    ResourceKind.NATS: "/queue/new",
    ResourceKind.S3: "/storage/new",
    ResourceKind.WEBHOOK: "/webhook/new",
}
KINDS_WITH_A_CONNECTION_URL = {
    ResourceKind.POSTGRES,
    ResourceKind.REDIS,
    ResourceKind.MONGO,
    ResourceKind.NATS,
}
# Every secret a kind hands out, by credentials field: none may appear in a log or an event.
SECRET_FIELDS = {"password", "secret_key", "user_seed", "connection_url", "creds", "receive_url"}


def test_every_kind_has_a_route() -> None:
    # A stack is made from an upload (POST /stacks/new, tests/e2e/test_stacks.py), not a bare
    # POST: every other kind has its create route here.
    assert set(PATHS) | {ResourceKind.STACK} == set(ResourceKind)


def _kind_of(backend: Any) -> ResourceKind:
    return next(k for k, e in PROVISION_ENDPOINTS.items() if e.queue == backend.worker)


# The workers whose kind has a bare create route (the stack-deployer's is tested with stacks).
ROUTED_BACKENDS = [backend for backend in BACKENDS if _kind_of(backend) in PATHS]


async def create(http: httpx.AsyncClient, kind: ResourceKind, **kwargs: Any) -> dict[str, Any]:
    response = await http.post(PATHS[kind], **kwargs)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("kind", list(PATHS))
async def test_create_show_delete(http: httpx.AsyncClient, kind: ResourceKind) -> None:
    body = await create(http, kind)
    assert body["ok"] is True
    assert body["kind"] == kind.value
    assert body["token"].startswith("spn_")
    assert body["tier"] == "anonymous"
    assert body["credentials"]["type"] == kind.value
    if kind in KINDS_WITH_A_CONNECTION_URL:
        assert body["connection_url"] == body["credentials"]["connection_url"]
    else:
        assert body["connection_url"] is None
    limit_names = {field.name for field in msgspec.structs.fields(LIMITS_BY_KIND[kind])}
    assert set(body["limits"]) == limit_names | {"expires_in"}
    assert 0 < body["limits"]["expires_in"] <= 86400
    assert body["expires_at"]
    assert "claim_url" in body
    assert body["note"]

    shown = await http.get(f"/resources/{body['token']}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "active"
    assert shown.json()["kind"] == kind.value
    assert shown.json()["credentials"] == body["credentials"]

    deleted = await http.delete(f"/resources/{body['token']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"ok": True, "id": body["id"], "status": "deleted"}
    assert (await http.get(f"/resources/{body['token']}")).status_code == 404
    assert (await http.delete(f"/resources/{body['token']}")).status_code == 404


@pytest.mark.parametrize("kind", list(PATHS))
async def test_an_idempotency_key_gives_one_resource_as_it_is_now(
    http: httpx.AsyncClient, kind: ResourceKind
) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = await create(http, kind, headers=headers)
    again = await http.post(PATHS[kind], headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first["id"]
    assert again.json()["credentials"] == first["credentials"]
    # After a rotation, the resource as it is now (ADR 0048), not a copy of the first answer,
    # whose secret the rotation stopped.
    rotated = await http.post(f"/resources/{first['token']}/rotate")
    assert rotated.status_code == 200, rotated.text
    after = await http.post(PATHS[kind], headers=headers)
    assert after.status_code == 201, after.text
    assert after.headers["idempotent-replayed"] == "true"
    assert (after.json()["id"], after.json()["token"]) == (first["id"], first["token"])
    assert after.json()["credentials"] == rotated.json()["credentials"] != first["credentials"]
    assert after.json()["connection_url"] == rotated.json()["connection_url"]
    if kind is ResourceKind.REDIS:
        assert await redis_logs_in(after.json()["connection_url"])
        assert not await redis_logs_in(first["connection_url"])
    await http.delete(f"/resources/{first['token']}")


@pytest.mark.parametrize("backend", ROUTED_BACKENDS, ids=lambda backend: backend.worker)
async def test_a_worker_down_fails_its_kind_only(
    stack: Stack, http: httpx.AsyncClient, backend: Any
) -> None:
    kind = _kind_of(backend)
    other = ResourceKind.WEBHOOK
    stack.stop_service(backend.worker)
    try:
        response = await http.post(PATHS[kind])
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "worker_unavailable"
        assert response.headers["retry-after"]
        still = await create(http, other)
    finally:
        stack.start_service(backend.worker)
    await http.delete(f"/resources/{still['token']}")
    assert (await http.post(PATHS[kind])).status_code == 201


def secrets_in(credentials: dict[str, Any]) -> list[str]:
    found = [str(credentials[name]) for name in SECRET_FIELDS if credentials.get(name)]
    # The secret part of a URL too, in case a log line prints a URL without its scheme.
    for url in list(found):
        found += re.findall(r"://[^:/@]+:([^@]+)@", url)
    return found


async def test_no_secret_reaches_the_logs_or_the_event_log(
    stack: Stack, http: httpx.AsyncClient, platform_db: asyncpg.Pool
) -> None:
    issued: list[str] = []
    for kind in PATHS:
        body = await create(http, kind)
        issued += [body["token"], *secrets_in(body["credentials"])]
    events = await platform_db.fetch("SELECT data::text AS data FROM events")
    stored = "\n".join(row["data"] for row in events)
    logs = {path.name: path.read_text(errors="replace") for path in stack.logs_dir.glob("*.log")}
    for secret in issued:
        assert secret not in stored, "a secret was stored unsealed in the platform database"
        for name, text in logs.items():
            assert secret not in text, f"a secret appeared in {name}"


async def test_plans_are_published_as_loaded(http: httpx.AsyncClient) -> None:
    response = await http.get("/plans")
    assert response.status_code == 200
    body = response.json()
    shipped = load_plans(REPO_ROOT / "plans.yaml")
    assert body["anonymous_tier"] == shipped.anonymous_tier
    assert set(body["tiers"]) == set(shipped.tiers)
    for name, tier in shipped.tiers.items():
        assert body["tiers"][name]["ttl_seconds"] == tier.ttl_seconds
        for kind in ResourceKind:
            published = body["tiers"][name][kind.value]
            # Through JSON, as published: a tuple of names (extensions) reads back as a list.
            limits = msgspec.json.decode(msgspec.json.encode(tier.limits(kind)))
            assert published == {"type": kind.value, **limits}
