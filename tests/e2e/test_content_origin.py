"""Tenant content on a host of its own (ADR 0067).

Stack apps and webhook receivers serve what tenants wrote or what anyone sent them. On the
console's host a browser would send them a visitor's console session cookie (an account
takeover, found by an exploratory attack on 2026-12-07). The dev stack serves them on
``localhost``, the API and console on ``127.0.0.1``: the same gateway under two host names,
which browsers keep apart, cookies included.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from devstack.stack import Stack
from tests.e2e.conftest import new_resource

pytestmark = pytest.mark.e2e


async def test_a_receiver_takes_requests_on_the_content_host_only(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    receiver = await new_resource(http, "webhook")
    url: str = receiver["credentials"]["receive_url"]
    assert url.startswith(f"{stack.content_url}/webhook/receive/")
    assert httpx.URL(url).host != httpx.URL(stack.gateway_url).host
    on_api_host = url.replace(stack.content_url, stack.gateway_url)
    async with httpx.AsyncClient(timeout=30) as client:
        # A console cookie, as a signed-in browser would send on the API's host: redirected to
        # the content host (308 keeps the method and body), where the browser sends none.
        moved = await client.post(
            f"{on_api_host}/orders?from=shop",
            content=b"sent to the wrong host",
            headers={"Cookie": "spinup_session=the-console-session"},
        )
        assert moved.status_code == 308
        assert moved.headers["location"] == f"{url}/orders?from=shop"
        captured = await http.get(f"/webhook/{receiver['token']}/requests")
        assert captured.json()["requests"] == []
        taken = await client.post(moved.headers["location"], content=b"sent to its host")
        assert taken.status_code == 200, taken.text
    captured = await http.get(f"/webhook/{receiver['token']}/requests")
    assert [request["body"] for request in captured.json()["requests"]] == ["sent to its host"]


async def test_an_app_url_on_the_api_host_is_redirected_to_the_content_host(
    stack: Stack,
) -> None:
    path = f"/apps/{uuid.uuid4()}/web/page?x=1"
    async with httpx.AsyncClient(timeout=30) as client:
        moved = await client.delete(f"{stack.gateway_url}{path}")
    assert moved.status_code == 308
    assert moved.headers["location"] == f"{stack.content_url}{path}"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/console/login"),
        ("POST", "/console/login"),
        ("POST", "/db/new"),
        ("POST", "/auth/login"),
        ("GET", "/resources/anything"),
        ("GET", "/llms.txt"),
    ],
)
async def test_the_api_and_console_are_not_served_on_the_content_host(
    stack: Stack, method: str, path: str
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.request(method, f"{stack.content_url}{path}")
        page = await client.request(
            method, f"{stack.content_url}{path}", headers={"Accept": "text/html"}
        )
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == "not_found"
    assert stack.gateway_url in answer.json()["message"]
    # A browser gets the same as a page (the console's routes answer browsers in HTML).
    assert page.status_code == 404, page.text
    assert stack.gateway_url in page.text
    # Nothing on this host may set a cookie the console reads.
    assert "set-cookie" not in answer.headers
    assert "set-cookie" not in page.headers
