"""Building against a receiver: it answers like the real endpoint and checks signatures."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.e2e.test_webhook import new_receiver, next_event, read_events, receive_url, requests_of

pytestmark = pytest.mark.e2e

GITHUB_SECRET = "spinup-e2e-github-signing-secret-4f1c"


def github_signature(secret: str, body: bytes) -> str:
    """GitHub's documented recipe (X-Hub-Signature-256), computed here independently."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_a_custom_response_is_exactly_what_the_sender_sees(http: httpx.AsyncClient) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    custom = {
        "status": 418,
        "headers": {"Content-Type": "application/json", "X-Provider-Ack": "yes please"},
        "body": '{"received": true}',
        "delay_ms": 300,
    }
    put = await http.put(f"/webhook/{token}/response", json=custom)
    assert put.status_code == 200, put.text
    assert put.json()["custom"] is True
    shown = await http.get(f"/webhook/{token}/response")
    assert shown.json()["response"] == custom

    started = time.monotonic()
    answer = await http.post(f"{url}/stripe", content=b'{"id": "evt_1"}')
    waited = time.monotonic() - started
    assert answer.status_code == 418
    assert answer.content == b'{"received": true}'
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-provider-ack"] == "yes please"
    # Served from the API's origin, a tenant's body runs in a sandbox of its own in a browser.
    assert answer.headers["content-security-policy"] == "sandbox"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert waited >= custom["delay_ms"] / 1000
    head = await http.head(url)
    assert head.status_code == 418
    assert head.content == b""
    stored = await requests_of(http, token)
    assert [r["method"] for r in stored] == ["HEAD", "POST"]
    assert stored[1]["id"] == answer.headers["x-webhook-request-id"]

    reset = await http.delete(f"/webhook/{token}/response")
    assert reset.status_code == 200, reset.text
    assert (await http.get(f"/webhook/{token}/response")).json()["custom"] is False
    default = await http.post(url, content=b"again")
    assert default.status_code == 200
    assert default.json() == {"ok": True, "id": default.headers["x-webhook-request-id"]}


async def test_a_plain_text_body_and_an_empty_204(http: httpx.AsyncClient) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    await http.put(f"/webhook/{token}/response", json={"body": "thanks"})
    answer = await http.get(url)
    assert (answer.status_code, answer.text) == (200, "thanks")
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    latin = {"body": "merci", "headers": {"Content-Type": "text/html; charset=iso-8859-1"}}
    await http.put(f"/webhook/{token}/response", json=latin)
    assert (await http.get(url)).headers["content-type"] == "text/html; charset=iso-8859-1"
    await http.put(f"/webhook/{token}/response", json={"status": 204})
    empty = await http.post(url, content=b"x")
    assert empty.status_code == 204
    assert "content-type" not in empty.headers


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": 700}, "status"),
        ({"status": 199}, "status"),
        ({"status": "ok"}, "status"),
        ({"status": 204, "body": "not allowed"}, "body"),
        ({"headers": {"Content-Length": "5"}}, "headers"),
        ({"headers": {"Transfer-Encoding": "chunked"}}, "headers"),
        ({"headers": {"Bad Name": "x"}}, "headers"),
        ({"headers": {"X-Split": "a\r\nSet-Cookie: s=1"}}, "headers"),
        ({"headers": {"Content-Security-Policy": "default-src *"}}, "headers"),
        ({"headers": {"Clear-Site-Data": '"*"'}}, "headers"),
        ({"headers": {"Refresh": "0; url=https://example.com/"}}, "headers"),
        ({"body": "x" * (64 * 1024 + 1)}, "body"),
        ({"delay_ms": 10**9}, "delay_ms"),
        ({"delay_ms": -1}, "delay_ms"),
        ({"stauts": 200}, "stauts"),
    ],
)
async def test_an_invalid_custom_response_is_a_400_naming_the_field(
    http: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    receiver = await new_receiver(http)
    answer = await http.put(f"/webhook/{receiver['token']}/response", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert field in answer.json()["message"]
    assert (await http.get(f"/webhook/{receiver['token']}/response")).json()["custom"] is False


async def test_settings_of_an_unknown_receiver_are_404(http: httpx.AsyncClient) -> None:
    for path in ("response", "verify"):
        answer = await http.get(f"/webhook/tok_nonexistent/{path}")
        assert answer.status_code in {400, 404}, answer.text


async def test_signatures_are_recorded_valid_invalid_or_missing(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    before = await http.post(url, content=b"before the check")
    put = await http.put(
        f"/webhook/{token}/verify", json={"scheme": "github", "secret": GITHUB_SECRET}
    )
    assert put.status_code == 200, put.text
    assert put.json()["scheme"] == "github"
    assert GITHUB_SECRET not in put.text

    body = b'{"action": "opened"}'
    signed = await http.post(
        url, content=body, headers={"X-Hub-Signature-256": github_signature(GITHUB_SECRET, body)}
    )
    tampered = await http.post(
        url,
        content=body + b" ",
        headers={"X-Hub-Signature-256": github_signature(GITHUB_SECRET, body)},
    )
    wrong_secret = await http.post(
        url, content=body, headers={"X-Hub-Signature-256": github_signature("not it", body)}
    )
    malformed = await http.post(url, content=body, headers={"X-Hub-Signature-256": "sha1=00"})
    unsigned = await http.post(url, content=body)
    verdicts = {r["id"]: r["signature"] for r in await requests_of(http, token)}
    assert verdicts[before.json()["id"]] is None
    assert verdicts[signed.json()["id"]] == {"status": "valid", "reason": None}
    assert verdicts[tampered.json()["id"]] == {"status": "invalid", "reason": "signature_mismatch"}
    assert verdicts[wrong_secret.json()["id"]]["reason"] == "signature_mismatch"
    assert verdicts[malformed.json()["id"]] == {"status": "invalid", "reason": "malformed_header"}
    assert verdicts[unsigned.json()["id"]]["status"] == "missing"

    shown = await http.get(f"/webhook/{token}/verify")
    assert shown.json()["scheme"] == "github"
    assert GITHUB_SECRET not in shown.text
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    try:
        stored: list[bytes] = []
        async for key in redis.scan_iter(match="webhook:*"):
            if await redis.type(key) == b"hash":
                stored += [*(await redis.hgetall(key)).values()]
        assert any(b"secret_sealed" in value for value in stored)
        assert not any(GITHUB_SECRET.encode() in value for value in stored)
    finally:
        await redis.aclose()

    off = await http.delete(f"/webhook/{token}/verify")
    assert off.status_code == 200, off.text
    assert off.json()["scheme"] is None
    assert all(r["signature"] is None for r in await requests_of(http, token))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scheme": "paypal", "secret": "x" * 20}, "scheme"),
        ({"scheme": "github"}, "secret"),
        ({"scheme": "github", "secret": ""}, "secret"),
        ({"scheme": "standard-webhooks", "secret": "whsec_not base64!"}, "secret"),
        ({"scheme": "stripe", "secret": "whsec_x", "tolerance_s": 0}, "tolerance_s"),
    ],
)
async def test_an_invalid_signature_check_is_a_400_naming_the_field(
    http: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    receiver = await new_receiver(http)
    answer = await http.put(f"/webhook/{receiver['token']}/verify", json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["message"]


async def test_deleting_the_receiver_removes_its_settings(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    receiver = await new_receiver(http)
    token = receiver["token"]
    await http.put(f"/webhook/{token}/response", json={"status": 202})
    await http.put(f"/webhook/{token}/verify", json={"scheme": "github", "secret": GITHUB_SECRET})
    assert (await http.delete(f"/resources/{token}")).status_code == 200
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    try:
        assert [key async for key in redis.scan_iter(match=f"webhook:*{receiver['id'][:8]}*")] == []
    finally:
        await redis.aclose()
    assert (await http.post(receive_url(receiver))).status_code in {404, 410}


async def test_the_new_routes_are_in_the_openapi_document(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/schema/openapi.json")).json()["paths"]
    assert set(paths["/webhook/{token}/response"]) == {"get", "put", "delete"}
    assert set(paths["/webhook/{token}/verify"]) == {"get", "put", "delete"}
    for method in ("put",):
        for path in ("/webhook/{token}/response", "/webhook/{token}/verify"):
            operation = paths[path][method]
            assert "requestBody" in operation
            assert {"400", "404", "503"} <= set(operation["responses"])


async def test_the_live_stream_shows_each_request_with_its_signature(
    http: httpx.AsyncClient,
) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    await http.put(f"/webhook/{token}/verify", json={"scheme": "github", "secret": GITHUB_SECRET})
    events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    async with http.stream("GET", f"/webhook/{token}/stream") as response:
        reader = asyncio.create_task(read_events(response, events))
        try:
            body = b'{"zen": "Keep it logically awesome."}'
            signature = github_signature(GITHUB_SECRET, body)
            await http.post(url, content=body, headers={"X-Hub-Signature-256": signature})
            event = await next_event(events)
            assert json.loads(event["data"])["signature"] == {"status": "valid", "reason": None}
            await http.post(url, content=body + b"!", headers={"X-Hub-Signature-256": signature})
            event = await next_event(events)
            assert json.loads(event["data"])["signature"]["reason"] == "signature_mismatch"
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
