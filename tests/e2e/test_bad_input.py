"""Bad input gets a clear JSON error with a stable code, and creates nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest

pytestmark = pytest.mark.e2e


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["error"] == code
    assert body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_json"),
        (b'{"name": "ok", "colour": "red"}', "invalid_request"),
        (b'{"name": 42}', "invalid_request"),
        (b'{"name": ""}', "invalid_request"),
        (b"[1, 2]", "invalid_request"),
    ],
)
async def test_malformed_or_unknown_body_is_a_400(
    http: httpx.AsyncClient, content: bytes, code: str
) -> None:
    response = await http.post(
        "/db/new", content=content, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, code)


async def test_oversized_body_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/db/new",
        content=b'{"name": "' + b"x" * 100_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("token", ["nope", "spn_" + "A" * 43, "spn_%27%3B--", "x" * 5000])
async def test_unknown_tokens_are_404(http: httpx.AsyncClient, token: str) -> None:
    assert_error(await http.get(f"/resources/{token}"), 404, "not_found")
    assert_error(await http.delete(f"/resources/{token}"), 404, "not_found")


async def test_unknown_route_and_wrong_method_are_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/no/such/route"), 404, "not_found")
    assert_error(await http.get("/db/new"), 405, "method_not_allowed")


async def test_invalid_idempotency_key_is_refused(http: httpx.AsyncClient) -> None:
    assert_error(
        await http.post("/db/new", headers={"Idempotency-Key": "has space"}),
        400,
        "invalid_idempotency_key",
    )


async def test_client_request_id_is_echoed(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz", headers={"X-Request-ID": "trace-1234567"})
    assert response.headers["x-request-id"] == "trace-1234567"


async def test_health_readiness_and_openapi(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json()["ok"] is True
    ready = (await http.get("/readyz")).json()
    assert ready["checks"]["nats"] == ready["checks"]["postgres"] == "ok"
    schema = (await http.get("/schema/openapi.json")).json()
    assert "/db/new" in schema["paths"]


@pytest.mark.parametrize(
    ("content", "field", "says"),
    [
        (b'{"name": 42}', "`name`", "got a number"),
        (b'{"name": "a/b\\u0000"}', "`name`", "1 to 64 characters"),
        (b'{"name": "   "}', "`name`", "not starting or ending with a space"),
        (b'{"name": " padded"}', "`name`", "not starting or ending with a space"),
        (b'{"colour": "red"}', "`colour`", "This body takes: `name`"),
        (b"[1, 2]", "JSON object", "not an array"),
    ],
)
async def test_a_bad_field_is_named_with_what_it_takes(
    http: httpx.AsyncClient, content: bytes, field: str, says: str
) -> None:
    response = await http.post(
        "/db/new", content=content, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request")
    message = response.json()["message"]
    assert field in message, message
    assert says in message, message
    # Never the schema's raw regex or msgspec's type notation.
    assert "^[" not in message, message
    assert "str | null" not in message, message


async def test_a_missing_field_is_named_as_required(http: httpx.AsyncClient) -> None:
    made = await http.post("/webhook/new")
    assert made.status_code == 201, made.text
    response = await http.post(f"/resources/{made.json()['token']}/extend", json={})
    assert_error(response, 400, "invalid_request")
    assert response.json()["message"].startswith("`ttl_seconds` is required."), response.text


async def test_a_wrong_method_is_told_the_methods_the_route_takes(http: httpx.AsyncClient) -> None:
    response = await http.get("/db/new")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"].split(", ")
    assert "POST" in response.json()["message"]


async def test_an_oversized_body_is_told_the_limit(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/db/new",
        content=b'{"name": "' + b"x" * 100_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")
    message = response.json()["message"]
    assert "at most" in message, message
    assert any(word.isdigit() for word in message.split()), message


async def test_the_name_asked_for_is_echoed_in_the_201(http: httpx.AsyncClient) -> None:
    created = await http.post("/webhook/new", json={"name": "orders hook"})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "orders hook"
    unnamed = await http.post("/webhook/new")
    assert unnamed.status_code == 201, unnamed.text
    assert unnamed.json()["name"] is None
    for made in (created, unnamed):
        await http.delete(f"/resources/{made.json()['token']}")


async def test_an_idempotency_key_reused_with_another_body_is_a_422(
    http: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": f"i25-{uuid.uuid4()}"}
    first = await http.post("/webhook/new", json={"name": "first"}, headers=key)
    assert first.status_code == 201, first.text
    again = await http.post("/webhook/new", json={"name": "first"}, headers=key)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert (again.json()["id"], again.json()["token"]) == (
        first.json()["id"],
        first.json()["token"],
    )
    for other in ({"name": "second"}, None):
        refused = await http.post("/webhook/new", json=other, headers=key)
        assert_error(refused, 422, "idempotency_key_mismatch")
        assert "Idempotency-Key" in refused.json()["message"]
        assert refused.json()["agent_action"]
        assert first.json()["token"] not in refused.text
    # Equivalent bodies are the same request: an explicit null is the field left out.
    bare_key = {"Idempotency-Key": f"i25-{uuid.uuid4()}"}
    bare = await http.post("/webhook/new", headers=bare_key)
    assert bare.status_code == 201, bare.text
    same = await http.post("/webhook/new", json={"name": None}, headers=bare_key)
    assert same.status_code == 201, same.text
    assert same.json()["id"] == bare.json()["id"]
    for made in (first, bare):
        await http.delete(f"/resources/{made.json()['token']}")
