"""A temporary resource's lifetime over HTTP: chosen at create, extended, warned about.

A gateway of its own serves plans whose anonymous ``lifetime`` is seconds long, so a resource
created with ``ttl_seconds`` a few seconds long is warned about, expires and is reaped within
the test. Notifications go to a receiver this test runs on 127.0.0.2: notify URLs on loopback
are refused, and the test stack alone lets that one address through
(``SPINUP_NOTIFY_ALLOWED_NETWORKS`` in devstack's test overrides). Webhook receivers are the
resources: the cheapest kind, and the lifetime code is the same for every kind.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from devstack.stack import Stack
from shared.eventlog.schema import NOTIFIER_LOCK
from tests.e2e.conftest import anonymous_tier, gateway_with_plans

pytestmark = pytest.mark.e2e

TTL_MIN_S = 5
TTL_MAX_S = 120
TOTAL_MAX_S = 150
EXTENSIONS = 3
LEAD_S = 6
RECEIVER_HOST = "127.0.0.2"
T = TypeVar("T")


async def until(found: Callable[[], T | None], within: float, what: Callable[[], object]) -> T:
    """Poll ``found`` until it returns something; fail showing ``what()`` after ``within`` s."""
    deadline = time.monotonic() + within
    while (result := found()) is None:
        assert time.monotonic() < deadline, what()
        await asyncio.sleep(0.1)
    return result


def seconds_long_lifetime(plans: dict[str, Any]) -> None:
    # A cache of 1 MB: a few writes put it over quota (resource.over_quota).
    anonymous_tier(plans)["redis"]["memory_mb"] = 1
    anonymous_tier(plans)["lifetime"] = {
        "ttl_min_seconds": TTL_MIN_S,
        "ttl_max_seconds": TTL_MAX_S,
        "total_max_seconds": TOTAL_MAX_S,
        "extensions": EXTENSIONS,
        "notify_lead_seconds": [LEAD_S],
    }


@pytest.fixture(scope="module")
def lifetime_gateway_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("lifetime")
    with gateway_with_plans(stack, directory, seconds_long_lifetime) as gateway:
        yield str(gateway.url)


@pytest.fixture
async def short(lifetime_gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=lifetime_gateway_url, timeout=60) as client:
        yield client


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.2 that records every request; some paths misbehave."""

    base: str = ""
    received: list[Received] = field(default_factory=list)
    fail_first: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body))
        if request.path.startswith("/redirect"):
            # A redirect to loopback (the receiver's own other path): must not be followed.
            landing = f"http://127.0.0.1:{self.base.rsplit(':', 1)[1]}/landing"
            raise web.HTTPFound(landing)
        if request.path in self.failing:
            return web.Response(status=503, text="down")
        if request.path in self.fail_first:
            self.fail_first.discard(request.path)
            return web.Response(status=500, text="down for a moment")
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, RECEIVER_HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    found.base = f"http://{RECEIVER_HOST}:{port}"
    try:
        yield found
    finally:
        await runner.cleanup()


def signature_valid(secret: str, received: Received) -> bool:
    """The Standard Webhooks check, as its reference libraries make it."""
    message_id = received.headers["webhook-id"]
    timestamp = received.headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1)[1] for part in received.headers["webhook-signature"].split()]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


async def new_receiver(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/webhook/new", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_ttl_at_create_is_held_to_the_plan_bounds(
    short: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    for asked in (TTL_MIN_S - 1, TTL_MAX_S + 1):
        refused = await short.post("/webhook/new", json={"ttl_seconds": asked})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_request"
        assert f"between {TTL_MIN_S} " in refused.json()["message"]
        assert f"and {TTL_MAX_S} " in refused.json()["message"]
    made = await new_receiver(short, ttl_seconds=60)
    assert 50 <= made["limits"]["expires_in"] <= 60, made
    # The repository's own plans: 10 minutes to 24 hours for anonymous resources.
    refused = await http.post("/cache/new", json={"ttl_seconds": 60})
    assert refused.status_code == 400, refused.text
    assert "between 600 (10 min) and 86400 (24 h)" in refused.json()["message"]


async def test_extend_up_to_the_plan_then_402_saying_to_claim(short: httpx.AsyncClient) -> None:
    made = await new_receiver(short, ttl_seconds=60)
    token, created_expiry = made["token"], datetime.fromisoformat(made["expires_at"])
    # A number no plan allows is a 400 naming the field, never date arithmetic (the fuzzer's).
    absurd = await short.post(f"/resources/{token}/extend", json={"ttl_seconds": 505055026204686})
    assert absurd.status_code == 400, absurd.text
    assert "ttl_seconds" in absurd.json()["message"]
    first = await short.post(f"/resources/{token}/extend", json={"ttl_seconds": 30})
    assert first.status_code == 200, first.text
    assert datetime.fromisoformat(first.json()["expires_at"]) == created_expiry + timedelta(
        seconds=30
    )
    assert first.json()["extensions_left"] == EXTENSIONS - 1
    shown = (await short.get(f"/resources/{token}")).json()
    assert shown["expires_at"] == first.json()["expires_at"]
    # Past the total lifetime: moved up to it, not beyond.
    second = await short.post(f"/resources/{token}/extend", json={"ttl_seconds": 3600})
    assert second.status_code == 200, second.text
    latest = datetime.fromisoformat(second.json()["latest_expires_at"])
    assert datetime.fromisoformat(second.json()["expires_at"]) == latest
    assert "not by all 3600 s asked for" in second.json()["note"], second.json()
    assert first.json()["note"] is None
    assert latest - datetime.fromisoformat(shown["created_at"]) == timedelta(seconds=TOTAL_MAX_S)
    refused = await short.post(f"/resources/{token}/extend", json={"ttl_seconds": 30})
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"] == "plan_limit_reached"
    assert "claim" in refused.json()["agent_action"].lower()
    # The count of extensions is a limit of its own.
    other = (await new_receiver(short, ttl_seconds=10))["token"]
    for _ in range(EXTENSIONS):
        extended = await short.post(f"/resources/{other}/extend", json={"ttl_seconds": 5})
        assert extended.status_code == 200, extended.text
    refused = await short.post(f"/resources/{other}/extend", json={"ttl_seconds": 5})
    assert refused.status_code == 402, refused.text
    assert f"all {EXTENSIONS} extensions" in refused.json()["message"]


async def test_signed_notifications_before_and_at_expiry_retried_once(
    short: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.fail_first.add("/hook")
    made = await new_receiver(short, ttl_seconds=LEAD_S + 4, notify_url=f"{receiver.base}/hook")
    secret = made["notify_secret"]
    assert secret.startswith("whsec_")

    def expiring() -> list[Received] | None:
        found = [r for r in receiver.at("/hook") if r.json["type"] == "resource.expiring"]
        return found if len(found) == 2 else None

    attempts = await until(expiring, 30, lambda: receiver.received)
    assert attempts[0].headers["webhook-id"] == attempts[1].headers["webhook-id"]
    assert all(signature_valid(secret, attempt) for attempt in attempts)
    assert not signature_valid("whsec_" + base64.b64encode(b"x" * 32).decode(), attempts[1])
    warned = attempts[1].json
    assert warned["data"]["resource_id"] == made["id"]
    assert warned["data"]["lead_seconds"] == LEAD_S
    # Warned before the expiry it names.
    arrived = datetime.fromisoformat(warned["timestamp"])
    assert arrived < datetime.fromisoformat(made["expires_at"])

    def expired() -> Received | None:
        found = [r for r in receiver.at("/hook") if r.json["type"] == "resource.expired"]
        return found[0] if found else None

    gone = await until(expired, 60, lambda: receiver.received)
    assert signature_valid(secret, gone)
    assert gone.json["data"]["reason"] == "expired"
    assert (await short.get(f"/resources/{made['token']}")).status_code == 410

    # Every notification is an event of the resource, readable as Server-Sent Events, even now.
    async with short.stream("GET", f"/resources/{made['token']}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = (await asyncio.wait_for(stream.aread(), timeout=30)).decode()
    events = [
        line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event:")
    ]
    assert events == ["resource.expiring", "resource.expired"], text
    assert json.dumps(warned["data"]["resource_id"]) in text


async def test_deleted_notification_and_a_target_set_later(
    short: httpx.AsyncClient, receiver: Receiver
) -> None:
    made = await new_receiver(short, ttl_seconds=TTL_MAX_S)
    assert made["notify_secret"] is None
    token = made["token"]
    target = await short.put(f"/resources/{token}/notify", json={"url": f"{receiver.base}/late"})
    assert target.status_code == 200, target.text
    secret = target.json()["secret"]
    assert "resource.deleted" in target.json()["types"]
    # A new target, a new secret: the first one no longer signs.
    again = await short.put(f"/resources/{token}/notify", json={"url": f"{receiver.base}/late"})
    assert again.json()["secret"] != secret
    deleted = await short.delete(f"/resources/{token}")
    assert deleted.status_code == 200, deleted.text

    def notified() -> Received | None:
        found = receiver.at("/late")
        return found[0] if found else None

    notice = await until(notified, 30, lambda: receiver.received)
    assert notice.json["type"] == "resource.deleted"
    assert signature_valid(again.json()["secret"], notice)
    assert not signature_valid(secret, notice)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://192.168.1.1/hook",
        "ftp://example.com/hook",
        "http://user:pass@example.com/hook",
    ],
)
async def test_a_private_or_malformed_notify_url_is_refused(
    short: httpx.AsyncClient, url: str
) -> None:
    refused = await short.post("/webhook/new", json={"ttl_seconds": 60, "notify_url": url})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_request"
    assert "notify_url" in refused.json()["message"]
    token = (await new_receiver(short, ttl_seconds=60))["token"]
    refused = await short.put(f"/resources/{token}/notify", json={"url": url})
    assert refused.status_code == 400, refused.text


async def test_a_redirect_is_not_followed(short: httpx.AsyncClient, receiver: Receiver) -> None:
    token = (await new_receiver(short, ttl_seconds=60, notify_url=f"{receiver.base}/redirect"))[
        "token"
    ]
    assert (await short.delete(f"/resources/{token}")).status_code == 200

    def tried_again() -> bool | None:
        return True if len(receiver.at("/redirect")) >= 2 else None

    # The 302 is a failed attempt (retried later), never a request to where it points.
    await until(tried_again, 30, lambda: receiver.received)
    assert receiver.at("/landing") == []


async def test_a_queued_notification_survives_the_notifier_losing_its_session(
    stack: Stack, short: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.failing.add("/crash")
    token = (await new_receiver(short, ttl_seconds=60, notify_url=f"{receiver.base}/crash"))[
        "token"
    ]
    assert (await short.delete(f"/resources/{token}")).status_code == 200
    await until(lambda: receiver.at("/crash") or None, 30, lambda: receiver.received)
    # The leader's database session ends, as when its process dies: its lock passes on (or back
    # to it, reconnected) and what it held in memory is gone; the outbox in the log is not.
    conn = await asyncpg.connect(stack.env()["SPINUP_PLATFORM_DSN"])
    try:
        ended = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory'"
            " AND granted AND classid = $1 AND objid = $2 AND objsubid = 1",
            NOTIFIER_LOCK >> 32,
            NOTIFIER_LOCK & 0xFFFFFFFF,
        )
    finally:
        await conn.close()
    assert ended == 1
    tried = len(receiver.at("/crash"))
    receiver.failing.discard("/crash")

    def delivered() -> list[Received] | None:
        found = receiver.at("/crash")
        return found if len(found) > tried else None

    attempts = await until(delivered, 30, lambda: receiver.received)
    assert {attempt.headers["webhook-id"] for attempt in attempts} == {
        attempts[0].headers["webhook-id"]
    }
    assert attempts[-1].json["type"] == "resource.deleted"


async def test_over_quota_is_notified(short: httpx.AsyncClient, receiver: Receiver) -> None:
    response = await short.post(
        "/cache/new", json={"ttl_seconds": 60, "notify_url": f"{receiver.base}/quota"}
    )
    assert response.status_code == 201, response.text
    made = response.json()
    prefix = made["credentials"]["key_prefix"]
    client = aioredis.Redis.from_url(made["connection_url"])
    try:
        blob = os.urandom(300 * 1024)
        for i in range(5):
            await client.set(f"{prefix}fill:{i}", blob)
    finally:
        await client.aclose()

    def over() -> Received | None:
        found = [r for r in receiver.at("/quota") if r.json["type"] == "resource.over_quota"]
        return found[0] if found else None

    notice = await until(over, 60, lambda: receiver.received)
    assert signature_valid(made["notify_secret"], notice)
    assert notice.json["data"]["usage_bytes"] >= notice.json["data"]["quota_bytes"]
    await short.delete(f"/resources/{made['token']}")


async def test_a_stack_and_its_backing_resources_extend_together(
    stack: Stack, short: httpx.AsyncClient
) -> None:
    # The deploy itself may fail at once: the lifetime is the stack resource's, not its build's.
    dockerfile = b"FROM spinup/base:bookworm\nRUN exit 1\n"
    refused = await short.post(
        f"/deploy/new?ttl_seconds={TTL_MAX_S + 1}", files={"Dockerfile": ("Dockerfile", dockerfile)}
    )
    assert refused.status_code == 400, refused.text
    response = await short.post(
        "/deploy/new?ttl_seconds=60",
        files={"Dockerfile": ("Dockerfile", dockerfile)},
        data={"resources": "redis"},
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert 50 <= created["limits"]["expires_in"] <= 60, created
    try:
        extended = await short.post(
            f"/resources/{created['token']}/extend", json={"ttl_seconds": 30}
        )
        assert extended.status_code == 200, extended.text
        backing = extended.json()["extended_with"]
        assert len(backing) == 1
        conn = await asyncpg.connect(stack.env()["SPINUP_PLATFORM_DSN"])
        try:
            rows = await conn.fetch(
                "SELECT id, expires_at FROM resources WHERE id = $1 OR parent_id = $1",
                created["id"],
            )
        finally:
            await conn.close()
        expiries = {row["expires_at"] for row in rows}
        assert expiries == {datetime.fromisoformat(extended.json()["expires_at"])}, rows
        assert len(rows) == 2
    finally:
        await short.delete(f"/resources/{created['token']}")
