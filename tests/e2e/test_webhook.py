"""A user's view of webhook receivers: send anything, read it back, follow it live, lose it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from devstack.procs import free_ports
from devstack.stack import Stack
from gateway.webhooks.driver import WebhookDriver
from shared.testing.polling import eventually
from tests.e2e.conftest import SHORT_TTL_S, gateway_with_plans

pytestmark = pytest.mark.e2e

BINARY = bytes(range(256)) + b"\xff\xfe\x00\x80"
JSON_TEXT = '{"hello": "wörld", "n": [1, 2]}'


@pytest.fixture
async def webhooks(env: dict[str, str]) -> AsyncIterator[WebhookDriver]:
    """The platform Redis seen through the gateway's own key names, to check what is stored."""
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    yield WebhookDriver(redis, content_url=env["SPINUP_CONTENT_URL"], token_key=b"unused" * 6)
    await redis.aclose()


async def new_receiver(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.post("/webhook/new")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def receive_url(receiver: dict[str, Any]) -> str:
    url: str = receiver["credentials"]["receive_url"]
    return url


async def requests_of(http: httpx.AsyncClient, token: str, **params: Any) -> list[dict[str, Any]]:
    response = await http.get(f"/webhook/{token}/requests", params=params)
    assert response.status_code == 200, response.text
    requests: list[dict[str, Any]] = response.json()["requests"]
    return requests


async def test_new_receiver_has_a_receive_url_without_the_token(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    receiver = await new_receiver(http)
    assert receiver["kind"] == "webhook"
    assert receiver["credentials"]["type"] == "webhook"
    assert receiver["connection_url"] is None
    url = receive_url(receiver)
    assert url.startswith(f"{stack.content_url}/webhook/receive/whk_")
    assert receiver["token"] not in url
    assert set(receiver["limits"]) == {
        "requests_kept",
        "max_body_kb",
        "response_delay_ms_max",
        "expires_in",
    }
    shown = (await http.get(f"/resources/{receiver['token']}")).json()
    assert shown["kind"] == "webhook"
    assert shown["credentials"]["receive_url"] == url
    assert (await http.get(f"/webhook/{receiver['token']}/requests")).json()["requests"] == []
    paths = (await http.get("/schema/openapi.json")).json()["paths"]
    assert {
        "/webhook/receive/{key}",
        "/webhook/{token}/requests",
        "/webhook/{token}/stream",
    } <= set(paths)


async def test_every_method_and_body_is_stored_intact_newest_first(
    http: httpx.AsyncClient,
) -> None:
    a, b = await new_receiver(http), await new_receiver(http)
    url = receive_url(a)
    sent = [
        await http.get(url, params=[("event", "push"), ("event", "ping"), ("x", "1")]),
        await http.post(
            f"{url}/github/push",
            content=JSON_TEXT.encode(),
            headers={"X-Hub": "sig", "Content-Type": "application/json"},
        ),
        await http.put(url, content=BINARY, headers={"TE": "trailers", "Connection": "keep-alive"}),
        await http.head(url),
    ]
    assert [r.status_code for r in sent] == [200] * 4
    assert sent[3].content == b""
    ids = [r.json()["id"] for r in sent[:3]] + [sent[3].headers["x-webhook-request-id"]]

    stored = await requests_of(http, a["token"])
    assert [r["id"] for r in stored] == ids[::-1]
    head, put, post, get = stored
    assert [r["method"] for r in stored] == ["HEAD", "PUT", "POST", "GET"]

    assert get["query"] == "event=push&event=ping&x=1"
    assert get["query_params"] == {"event": ["push", "ping"], "x": ["1"]}
    assert get["path"] == "/"
    assert get["size"] == 0

    assert post["path"] == "/github/push"
    assert post["body_encoding"] == "utf-8"
    assert post["body"] == JSON_TEXT
    assert post["size"] == len(JSON_TEXT.encode())
    assert ["x-hub", "sig"] in post["headers"]
    assert ["content-type", "application/json"] in post["headers"]

    assert put["body_encoding"] == "base64"
    assert base64.b64decode(put["body"]) == BINARY
    assert put["size"] == len(BINARY)
    names = {name for name, _ in put["headers"]}
    assert "host" in names
    assert not names & {"te", "connection", "transfer-encoding", "keep-alive", "upgrade"}

    assert head["body"] == ""
    for request in stored:
        assert request["client_ip"] == "127.0.0.1"
        assert datetime.fromisoformat(request["received_at"]).utcoffset() is not None
    assert [r["id"] for r in await requests_of(http, a["token"], limit=2)] == ids[:1:-1]
    assert await requests_of(http, b["token"]) == []


async def test_every_method_is_captured(http: httpx.AsyncClient) -> None:
    receiver = await new_receiver(http)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    for method in methods:
        response = await http.request(method, receive_url(receiver), content=b"")
        assert response.status_code == 200, (method, response.text)
    stored = await requests_of(http, receiver["token"])
    assert [r["method"] for r in stored] == methods[::-1]


async def test_receivers_are_isolated_and_keys_cannot_be_forged(http: httpx.AsyncClient) -> None:
    a, b = await new_receiver(http), await new_receiver(http)
    assert (await http.post(receive_url(a), content=b"for a")).status_code == 200
    assert (await http.post(receive_url(b), content=b"for b")).status_code == 200
    assert [r["body"] for r in await requests_of(http, a["token"])] == ["for a"]
    assert [r["body"] for r in await requests_of(http, b["token"])] == ["for b"]

    key_a, key_b = receive_url(a).rsplit("/", 1)[1], receive_url(b).rsplit("/", 1)[1]
    base = receive_url(a).rsplit("/", 1)[0]
    last = key_a[-1]
    forged = [
        key_a[:-1] + ("0" if last != "0" else "1"),  # tampered MAC
        key_a[:36] + key_b[36:],  # A's id with B's MAC
        key_b[:36] + key_a[36:],  # B's id with A's MAC
        f"whk_{uuid.UUID(a['id']).hex}",  # no MAC at all
        key_a.upper(),
        a["token"],  # the management token is not a receive key
    ]
    for key in forged:
        response = await http.post(f"{base}/{key}", content=b"forged")
        assert response.status_code == 404, key
        assert response.json()["error"] == "not_found"
    assert [r["body"] for r in await requests_of(http, a["token"])] == ["for a"]
    assert [r["body"] for r in await requests_of(http, b["token"])] == ["for b"]

    # The receive key manages nothing.
    for key in (key_a, f"whk_{a['id']}"):
        assert (await http.get(f"/resources/{key}")).status_code == 404
        assert (await http.delete(f"/resources/{key}")).status_code == 404
        assert (await http.get(f"/webhook/{key}/requests")).status_code == 404
    assert (await http.get(f"/resources/{a['token']}")).json()["status"] == "active"


async def test_only_the_newest_requests_kept_survive(http: httpx.AsyncClient) -> None:
    receiver = await new_receiver(http)
    kept = receiver["limits"]["requests_kept"]
    for n in range(kept + 3):
        assert (await http.post(receive_url(receiver), content=str(n))).status_code == 200
    stored = await requests_of(http, receiver["token"])
    assert [int(r["body"]) for r in stored] == list(range(kept + 2, 2, -1))
    assert len(await requests_of(http, receiver["token"], limit=kept * 10)) == kept


async def test_body_over_the_plan_limit_is_413_and_not_stored(http: httpx.AsyncClient) -> None:
    receiver = await new_receiver(http)
    limit = receiver["limits"]["max_body_kb"] * 1024
    too_big = await http.post(receive_url(receiver), content=b"x" * (limit + 1))
    assert too_big.status_code == 413
    assert too_big.json()["error"] == "payload_too_large"
    far_too_big = await http.put(receive_url(receiver), content=b"x" * (limit * 64))
    assert far_too_big.status_code == 413
    assert far_too_big.json()["error"] == "payload_too_large"
    assert await requests_of(http, receiver["token"]) == []
    assert (await http.post(receive_url(receiver), content=b"x" * limit)).status_code == 200
    assert [r["size"] for r in await requests_of(http, receiver["token"])] == [limit]


async def read_events(response: httpx.Response, into: asyncio.Queue[dict[str, str]]) -> None:
    """Parse ``event:``/``id:``/``data:`` blocks; comments become ``{"comment": ...}``."""
    event: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if event:
                await into.put(event)
            event = {}
        elif line.startswith(":"):
            await into.put({"comment": line[1:].strip()})
        else:
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")
    await into.put({"ended": "true"})


async def next_event(events: asyncio.Queue[dict[str, str]]) -> dict[str, str]:
    while True:
        event = await asyncio.wait_for(events.get(), timeout=10)
        if "comment" not in event:
            return event


async def test_stream_shows_new_requests_and_delete_ends_it_and_removes_everything(
    http: httpx.AsyncClient, webhooks: WebhookDriver
) -> None:
    receiver = await new_receiver(http)
    rid = uuid.UUID(receiver["id"])
    events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    async with http.stream("GET", f"/webhook/{receiver['token']}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_events(response, events))
        try:
            sent = await http.post(receive_url(receiver), json={"live": True})
            event = await next_event(events)
            assert event["event"] == "request"
            # The event's id is its cursor (for Last-Event-ID); the request's own id is in data.
            assert json.loads(event["data"])["id"] == sent.json()["id"]
            assert json.loads(json.loads(event["data"])["body"]) == {"live": True}
            assert await webhooks.stored_keys(rid) == 2

            deleted = await http.delete(f"/resources/{receiver['token']}")
            assert deleted.status_code == 200
            assert (await next_event(events))["event"] == "closed"
            assert await next_event(events) == {"ended": "true"}
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    gone = await http.post(receive_url(receiver), content=b"late")
    assert gone.status_code == 404
    assert gone.json()["error"] == "not_found"
    assert await webhooks.stored_keys(rid) == 0
    assert (await http.get(f"/webhook/{receiver['token']}/requests")).status_code == 404
    assert (await http.get(f"/webhook/{receiver['token']}/stream")).status_code == 404


async def test_a_client_leaving_the_stream_unsubscribes_it(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    receiver = await new_receiver(http)
    channel = f"webhook:t_{uuid.UUID(receiver['id']).hex}:live"
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    try:

        async def subscribers() -> int:
            counts = dict(await redis.pubsub_numsub(channel))
            return int(counts[channel.encode()])

        async with http.stream("GET", f"/webhook/{receiver['token']}/stream") as response:
            assert response.status_code == 200
            assert await subscribers() == 1

        async def unsubscribed() -> bool:
            return await subscribers() == 0

        assert await eventually(unsubscribed), "the stream's subscription outlived its client"
    finally:
        await redis.aclose()


async def test_clients_that_hang_up_at_once_leave_no_subscription(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    # A client that sends the request and closes its socket without reading: the gateway has
    # subscribed before the response starts, and the body may never be asked for its first piece.
    receiver = await new_receiver(http)
    channel = f"webhook:t_{uuid.UUID(receiver['id']).hex}:live"
    url = httpx.URL(str(http.base_url))
    request = (
        f"GET /webhook/{receiver['token']}/stream HTTP/1.1\r\nHost: {url.host}\r\n\r\n"
    ).encode()
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    try:
        for _ in range(20):
            reader, writer = await asyncio.open_connection(url.host, url.port)
            writer.write(request)
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the headers: the subscription is open
            writer.close()
            await writer.wait_closed()

        async def unsubscribed() -> bool:
            counts = dict(await redis.pubsub_numsub(channel))
            return int(counts[channel.encode()]) == 0

        assert await eventually(unsubscribed), "a hung-up stream's subscription outlived it"
    finally:
        await redis.aclose()


async def test_a_gateway_with_open_streams_still_stops_gracefully(stack: Stack) -> None:
    gateway = stack.start_extra_gateway(free_ports(1)[0])
    try:
        async with httpx.AsyncClient(base_url=str(gateway.url), timeout=30) as client:
            receiver = await new_receiver(client)
            async with client.stream("GET", f"/webhook/{receiver['token']}/stream") as response:
                assert response.status_code == 200
                await asyncio.to_thread(gateway.stop)
                assert [line async for line in response.aiter_lines() if line] == []
    finally:
        gateway.stop()
    # Stopped by its SIGTERM, not killed: the lifespan's shutdown ran to the end.
    assert '"gateway.stopped"' in gateway.log_path.read_text()


async def test_expired_receiver_answers_410_and_its_requests_are_gone(
    http: httpx.AsyncClient, short_ttl_http: httpx.AsyncClient, webhooks: WebhookDriver
) -> None:
    receiver = await new_receiver(short_ttl_http)
    assert receiver["limits"]["expires_in"] <= SHORT_TTL_S
    assert (await http.post(receive_url(receiver), content=b"before")).status_code == 200

    async def expired() -> bool:
        return (await http.post(receive_url(receiver), content=b"after")).status_code == 410

    assert await eventually(expired), "the reaper did not expire the receiver"
    response = await http.get(receive_url(receiver))
    assert response.json()["error"] == "resource_gone"
    assert await webhooks.stored_keys(uuid.UUID(receiver["id"])) == 0
    assert (await http.get(f"/webhook/{receiver['token']}/requests")).status_code == 410


async def test_platform_redis_down_fails_webhooks_only_and_receivers_return_after(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    before = await new_receiver(http)
    stack.stop_server("redis")
    try:
        created = await http.post("/webhook/new")
        assert created.status_code == 503, created.text
        assert created.json()["error"] == "backend_unavailable"
        received = await http.post(receive_url(before), content=b"while down")
        assert received.status_code == 503
        assert received.json()["error"] == "backend_unavailable"
        assert (await http.post("/db/new")).status_code == 201
    finally:
        stack.start_server("redis")
    # The restarted Redis is empty: the receiver is reopened from the event log on first use.
    assert (await http.post(receive_url(before), content=b"after")).status_code == 200
    assert [r["body"] for r in await requests_of(http, before["token"])] == ["after"]
    assert (await http.post("/webhook/new")).status_code == 201


async def test_behind_a_trusted_proxy_the_sender_address_comes_from_x_forwarded_for(
    http: httpx.AsyncClient, stack: Stack, tmp_path: Path
) -> None:
    trusting = {"SPINUP_TRUSTED_PROXIES": "127.0.0.1/32"}
    with gateway_with_plans(stack, tmp_path, lambda _: None, trusting) as proxied:
        async with httpx.AsyncClient(base_url=str(proxied.url), timeout=30) as client:
            receiver = await new_receiver(client)
            forwarded = {"X-Forwarded-For": "203.0.113.9"}
            # The receive URL names the public address, not this replica: its path, sent to
            # this replica under the content host's name (ADR 0067).
            url = httpx.URL(receive_url(receiver))
            replica = httpx.URL(str(proxied.url)).copy_with(host=url.host, path=url.path)
            assert (await client.post(replica, headers=forwarded)).status_code == 200
    # The main gateway trusts no proxy: the same header sent to it is the sender's own claim.
    assert (await http.post(receive_url(receiver), headers=forwarded)).status_code == 200
    [direct, through_proxy] = await requests_of(http, receiver["token"])
    assert through_proxy["client_ip"] == "203.0.113.9"
    assert direct["client_ip"] == "127.0.0.1"
