"""Hostile input: SQL injection, path traversal, header injection, huge values, unicode tricks.

Each is either refused with the documented error JSON (never a 5xx, never a traceback) or
harmless: stored and shown back verbatim as data, reaching no other resource and no backend
name. After each attack a real resource made before it is still there and unchanged.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, new_email, new_resource

pytestmark = pytest.mark.e2e

SQL = [
    "' OR '1'='1",
    "'; DROP TABLE events; --",
    "spn_' UNION SELECT token FROM resources --",
    '1" OR 1=1 --',
    "$$; SELECT pg_sleep(5); $$",
]
TRAVERSAL = ["../../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/", "....//....//"]
CRLF = ["spn_x%0d%0aSet-Cookie:%20stolen=1", "%0d%0aX-Injected:%201", "%E5%98%8A%E5%98%8Dx"]
UNICODE = [
    "\u202espn_evil",  # right-to-left override
    "spn_\u0430bc",  # Cyrillic a, a homoglyph of Latin a
    "spn_\ufeffabc",  # zero-width no-break space
    "spn_\U0001f600",
]
OVERLONG_UTF8 = ["%c0%af", "%e0%80%af", "%c0%ae%c0%ae%c0%af", "%ff%fe", "%00", "spn_%00abc"]
HUGE = ["A" * 8_000, "spn_" + "%41" * 2_000]


def assert_refused(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A documented error: an expected status, the error JSON, an id, no traceback."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    body: dict[str, Any] = response.json()
    assert body["ok"] is False
    assert body["error"]
    assert body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    assert "set-cookie" not in response.headers
    assert "x-injected" not in response.headers
    return body


@pytest.fixture(scope="module")
async def bystander(http: httpx.AsyncClient) -> dict[str, Any]:
    """A real database every attack must leave alone."""
    return await new_resource(http, "db")


async def assert_untouched(http: httpx.AsyncClient, bystander: dict[str, Any]) -> None:
    shown = await http.get(f"/resources/{bystander['token']}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "active"
    assert shown.json()["connection_url"] == bystander["connection_url"]


@pytest.mark.parametrize(
    "token", SQL + TRAVERSAL + CRLF + UNICODE + OVERLONG_UTF8 + HUGE, ids=lambda t: repr(t[:24])
)
async def test_hostile_resource_token_is_not_found_and_touches_nothing(
    http: httpx.AsyncClient, bystander: dict[str, Any], token: str
) -> None:
    # Sent as raw as the URL allows: percent-escapes are kept, everything else is escaped once.
    path = quote(token, safe="%/")
    for method in ("GET", "DELETE"):
        response = await http.request(method, f"/resources/{path}")
        assert_refused(response, 400, 404, 405, 414)
    assert_refused(await http.post(f"/resources/{path}/rotate"), 400, 404, 405, 414)
    assert_refused(await http.get(f"/webhook/{path}/requests"), 400, 404, 414)
    await assert_untouched(http, bystander)


async def test_a_homoglyph_of_a_real_token_is_not_that_token(
    http: httpx.AsyncClient, bystander: dict[str, Any]
) -> None:
    token: str = bystander["token"]
    # The random part of a token may hold no letter with a Cyrillic twin: the prefix's "s" has.
    lookalike = "\u0455" + token[1:]  # Cyrillic dze, drawn as Latin s
    for forged in (lookalike, token.upper(), token + "\u200b", "\u202e" + token, token + "%00"):
        response = await http.get(f"/resources/{quote(forged, safe='%')}")
        assert_refused(response, 404)
        assert_refused(await http.delete(f"/resources/{quote(forged, safe='%')}"), 404)
    await assert_untouched(http, bystander)


@pytest.mark.parametrize(
    "name",
    [
        *SQL,
        "a\x00b",
        "\u202etxt.exe",
        "x\r\nSet-Cookie: stolen=1",
        "x" * 65,
        "x" * 100_000,
        "<script>alert(1)</script>",
        "${jndi:ldap://x/a}",
    ],
    ids=lambda n: repr(n[:24]),
)
async def test_hostile_name_is_refused(
    http: httpx.AsyncClient, bystander: dict[str, Any], name: str
) -> None:
    body = assert_refused(await http.post("/db/new", json={"name": name}), 400, 413)
    assert body["error"] in {"invalid_request", "payload_too_large"}
    await assert_untouched(http, bystander)


@pytest.mark.parametrize("name", ["../../etc/passwd", "\u0430dmin", "postgres", "t_00 template1"])
async def test_a_name_the_schema_allows_is_only_a_label(http: httpx.AsyncClient, name: str) -> None:
    made = await new_resource(http, "db", json={"name": name})
    shown = (await http.get(f"/resources/{made['token']}")).json()
    assert shown["name"] == name
    # The backend object is named from the resource id, never from what the client chose.
    database = made["connection_url"].rsplit("/", 1)[1]
    assert name not in database
    assert database.endswith(made["id"].replace("-", ""))
    assert (await http.delete(f"/resources/{made['token']}")).status_code == 200


@pytest.mark.parametrize("key", ["a b", "x" * 256, "ключ", "\u202ekey"], ids=lambda k: repr(k[:16]))
async def test_hostile_idempotency_key_is_refused(http: httpx.AsyncClient, key: str) -> None:
    encoded = key.encode()  # httpx would refuse to send non-ASCII as it stands
    response = await http.post("/db/new", headers=[(b"Idempotency-Key", encoded)])
    assert assert_refused(response, 400)["error"] == "invalid_idempotency_key"


@pytest.mark.parametrize(
    "request_bytes",
    [
        (
            b"POST /db/new HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\x7f\x00\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        # A method the HTTP parser does not know, sent to a webhook receiver's address.
        b"FOO /webhook/receive/anything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
    ids=["control character in a header", "unknown method"],
)
async def test_a_request_that_is_not_http_gets_the_error_json(
    http: httpx.AsyncClient, request_bytes: bytes
) -> None:
    # The server's parser refuses it before the app; the answer still has the API's shape.
    answer = await raw_request(str(http.base_url).rstrip("/"), request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)
    assert error["ok"] is False
    assert error["error"] == "invalid_request"
    assert "HTTP/1.1" in error["message"]
    assert f"x-request-id: {error['request_id']}".encode() in head.lower()


async def raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` as bytes on a fresh connection; the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1 << 20), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_crlf_in_a_request_header_never_reaches_a_response_header(
    http: httpx.AsyncClient,
) -> None:
    answer = await raw_request(
        str(http.base_url).rstrip("/"),
        b"GET /resources/nope HTTP/1.1\r\nHost: x\r\n"
        b"X-Request-ID: abcdefgh\rSet-Cookie: stolen=1\r\nConnection: close\r\n\r\n",
    )
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert not head.startswith(b"http/1.1 5")
    assert b"set-cookie" not in head
    # A client request id with anything but the safe characters is replaced, not echoed.
    echoed = await http.get("/healthz", headers={"X-Request-ID": "abc<script>defgh"})
    assert "<" not in echoed.headers["x-request-id"]


async def test_overlong_utf8_and_invalid_bytes_in_a_body_are_a_400(http: httpx.AsyncClient) -> None:
    for content in (b'{"name": "\xc0\xaf"}', b'{"name": "\xff\xfe"}', b'{"name": "a\\u0000b"}'):
        response = await http.post(
            "/db/new", content=content, headers={"content-type": "application/json"}
        )
        assert_refused(response, 400)


async def test_deeply_nested_or_huge_json_is_refused(http: httpx.AsyncClient) -> None:
    for content in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"name": 1e999999}',
        b'{"name": "' + b"\\u0041" * 200_000 + b'"}',
    ):
        response = await http.post(
            "/db/new", content=content, headers={"content-type": "application/json"}
        )
        assert_refused(response, 400, 413)


@pytest.mark.parametrize("email", [*SQL, "a@b.c\x00", "\u202e@example.com", "x" * 5000])
async def test_hostile_email_or_password_is_refused_not_a_crash(
    http: httpx.AsyncClient, email: str
) -> None:
    for route in ("/auth/register", "/auth/login"):
        response = await http.post(route, json={"email": email, "password": PASSWORD})
        assert_refused(response, 400, 401, 413)


async def test_huge_password_is_refused_and_sql_in_a_password_is_only_a_password(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/auth/register", json={"email": new_email(), "password": "x" * 200_000}
    )
    assert_refused(response, 400, 413)
    email, password = new_email(), "' OR '1'='1'; --\u202e\u0430"
    assert (
        await http.post("/auth/register", json={"email": email, "password": password})
    ).status_code == 201
    assert (
        await http.post("/auth/login", json={"email": email, "password": password})
    ).status_code == 200
    wrong = await http.post("/auth/login", json={"email": email, "password": "' OR '1'='1"})
    assert_refused(wrong, 401)


@pytest.mark.parametrize("token", [*SQL, "../../claim", "\u202e", "x" * 5000])
async def test_hostile_claim_token_is_refused(http: httpx.AsyncClient, token: str) -> None:
    assert_refused(await http.get("/claim/preview", params={"t": token}), 400, 404, 410)


async def test_hostile_bearer_tokens_are_401(http: httpx.AsyncClient) -> None:
    for bearer in [*SQL, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "spp_" + "A" * 5000]:
        response = await http.get("/auth/user", headers={"Authorization": f"Bearer {bearer}"})
        assert_refused(response, 401)


async def test_webhook_keeps_hostile_bytes_and_paths_as_data(http: httpx.AsyncClient) -> None:
    receiver = await new_resource(http, "webhook")
    url = receiver["credentials"]["receive_url"]
    body = "'; DROP TABLE events; --\x00\u202e\u0430 \r\nSet-Cookie: x"
    sent = await http.post(f"{url}/..%2F..%2Fadmin", content=body.encode())
    assert sent.status_code == 200, sent.text
    assert "set-cookie" not in sent.headers
    listed = await http.get(f"/webhook/{receiver['token']}/requests")
    stored = listed.json()["requests"][0]
    assert stored["body"] == body
    assert json.dumps(stored)  # plain JSON, nothing executed or unescaped
    assert (await http.delete(f"/resources/{receiver['token']}")).status_code == 200
