"""Bad input gets a clear JSON error with a stable code, and creates nothing."""

from __future__ import annotations

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
