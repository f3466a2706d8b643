"""The OpenAPI document as served: complete, JSON, and a docs page that needs nothing else.

Conformance: every operation declares the body it reads, the Idempotency-Key header where it
honours one, and exactly the error statuses its codes map to (ADR 0026).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from gateway.errors import HTTP_STATUS
from gateway.http.openapi import IDEMPOTENCY_HEADER, operation_doc, operation_errors
from shared.contracts.errors import ErrorCode

pytestmark = pytest.mark.e2e

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
#: Operations that take no body at all (everything else that writes declares one).
BODILESS = {
    "POST /auth/logout",
    "POST /resources/{token}/rotate",
    "DELETE /resources/{token}",
}


async def served_document(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, item[method])
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    ]


async def test_the_document_is_served_as_json_with_every_route(http: httpx.AsyncClient) -> None:
    document = await served_document(http)
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path in ("/db/new", "/resources/{token}", "/stacks/new", "/auth/tokens", "/llms.txt"):
        assert path in paths, path


async def test_every_operation_is_in_the_table_of_what_it_returns(
    http: httpx.AsyncClient,
) -> None:
    missing = [
        f"{method} {path}"
        for method, path, _ in operations(await served_document(http))
        if operation_doc(method, path) is None
    ]
    assert not missing, f"add these to gateway.http.openapi.OPERATIONS: {missing}"


async def test_every_operation_lists_exactly_the_errors_it_can_return(
    http: httpx.AsyncClient,
) -> None:
    for method, path, operation in operations(await served_document(http)):
        codes = operation_errors(method, path) or ()
        doc = operation_doc(method, path)
        own = {str(status) for status in (doc.own if doc else ())}
        expected = {str(HTTP_STATUS[code]) for code in codes} | own
        declared = {status for status in operation["responses"] if int(status) >= 400}
        assert declared == expected, f"{method} {path}: {sorted(declared)} != {sorted(expected)}"
        for status in declared - own:
            description = operation["responses"][status]["description"]
            named = set(re.findall(r"`([a-z_]+)`", description.split("is one of", 1)[-1]))
            assert named == {c.value for c in codes if str(HTTP_STATUS[c]) == status}, (
                f"{method} {path} {status}: {description}"
            )


async def test_no_operation_lists_every_error(http: httpx.AsyncClient) -> None:
    every = {str(status) for status in HTTP_STATUS.values()}
    for method, path, operation in operations(await served_document(http)):
        declared = {status for status in operation["responses"] if int(status) >= 400}
        assert declared != every, f"{method} {path} lists every error status"


async def test_every_write_declares_its_body_and_creates_the_idempotency_key(
    http: httpx.AsyncClient,
) -> None:
    for method, path, operation in operations(await served_document(http)):
        key = f"{method} {path}"
        doc = operation_doc(method, path)
        assert doc is not None, key
        reads_json = ErrorCode.INVALID_JSON in doc.errors
        if (method in {"POST", "PUT", "PATCH"} and key not in BODILESS) or reads_json:
            assert operation.get("requestBody"), f"{key} declares no requestBody"
            assert operation["requestBody"]["content"], key
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert (IDEMPOTENCY_HEADER in headers) == doc.idempotent, key


async def test_every_create_declares_the_idempotency_errors(http: httpx.AsyncClient) -> None:
    document = await served_document(http)
    create = document["paths"]["/db/new"]["post"]
    assert "422" in create["responses"]
    assert "idempotency_key_mismatch" in create["responses"]["422"]["description"]
    header = next(p for p in create["parameters"] if p["name"] == IDEMPOTENCY_HEADER)
    assert header["in"] == "header"
    assert header["schema"]["maxLength"] == 255
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body, create["requestBody"]


#: The operations that answer with Server-Sent Events.
EVENT_STREAMS = {
    "GET /resources/{token}/events",
    "GET /resources/{token}/logs",
    "GET /webhook/{token}/stream",
}


async def test_every_event_stream_is_documented_as_one(http: httpx.AsyncClient) -> None:
    # A stream documented as JSON is an undocumented content type to every client generator
    # (and to the fuzzer, which found GET /resources/{token}/logs so).
    streams = {
        f"{method} {path}"
        for method, path, operation in operations(await served_document(http))
        if "text/event-stream" in operation["responses"].get("200", {}).get("content", {})
    }
    assert streams == EVENT_STREAMS


async def test_the_docs_page_loads_nothing_from_elsewhere(http: httpx.AsyncClient) -> None:
    page = await http.get("/schema")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "/schema/openapi.json" in html
    assert "/db/new" in html
    assert "Create a Postgres database" in html
    # No script, stylesheet, font or icon from any other origin: it works offline.
    assert "<script" not in html
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", html), html[:500]
    assert "@import" not in html
    yaml = await http.get("/schema/openapi.yaml")
    assert yaml.status_code == 200
    assert "/db/new" in yaml.text
