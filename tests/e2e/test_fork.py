"""Forking a Postgres database over HTTP (docs/adr/0028-fork.md): a new database with a copy of
the source's data and credentials of its own, admitted like a create, the source left running.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from mcp import Client
from spinup_cli.main import main as spinup
from spinup_mcp.api import SpinupApi
from spinup_mcp.server import build_server

from devstack.stack import Stack
from tests.e2e.conftest import SHORT_TTL_S, gateway_with_plans, new_resource
from tests.e2e.test_abuse import ACTIVE_PER_KIND, fresh_client, tight_limits

pytestmark = pytest.mark.e2e

SCHEMA = """
CREATE SEQUENCE invoice_numbers START 1000;
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    invoice int NOT NULL DEFAULT nextval('invoice_numbers'),
    total numeric(10, 2) NOT NULL CHECK (total >= 0)
);
CREATE INDEX orders_by_customer ON orders (customer_id, total);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 50;
INSERT INTO customers (email) SELECT 'c' || n || '@example.com' FROM generate_series(1, 20) n;
INSERT INTO orders (customer_id, total) SELECT 1 + n % 20, n FROM generate_series(1, 100) n;
"""


async def fork(
    http: httpx.AsyncClient, token: str, **request: Any
) -> tuple[httpx.Response, dict[str, Any]]:
    response = await http.post(f"/resources/{token}/fork", **request)
    return response, response.json()


async def snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    """What the tests compare between source and fork."""
    return {
        "customers": [tuple(r) for r in await conn.fetch("SELECT * FROM customers ORDER BY id")],
        "orders": [tuple(r) for r in await conn.fetch("SELECT * FROM orders ORDER BY id")],
        "big": await conn.fetchval("SELECT count(*) FROM big_orders"),
        "index": await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'orders_by_customer'"
        ),
    }


@pytest.fixture
async def source(
    http: httpx.AsyncClient,
) -> AsyncIterator[tuple[dict[str, Any], asyncpg.Connection]]:
    """A database with tables, a sequence, an index and a view, and an open session on it."""
    made = await new_resource(http, "db")
    conn = await asyncpg.connect(made["connection_url"])
    await conn.execute(SCHEMA)
    yield made, conn
    await conn.close()
    await http.delete(f"/resources/{made['token']}")


async def test_fork_holds_the_same_data_and_then_goes_its_own_way(
    http: httpx.AsyncClient, source: tuple[dict[str, Any], asyncpg.Connection]
) -> None:
    made, source_conn = source
    # A transaction left open in the source: the fork neither waits for it nor ends it.
    in_flight = await asyncpg.connect(made["connection_url"])
    busy = in_flight.transaction()
    await busy.start()
    await in_flight.execute("INSERT INTO customers (email) VALUES ('uncommitted@example.com')")

    response, body = await fork(http, made["token"], json={"name": "copy"})
    assert response.status_code == 201, response.text
    assert body["forked_from"] == made["id"]
    assert body["kind"] == "postgres"
    assert body["name"] == "copy"
    assert body["token"] != made["token"]
    assert body["credentials"]["database"] != made["credentials"]["database"]
    assert body["credentials"]["password"] != made["credentials"]["password"]

    # The source's sessions were never cut: the open transaction commits, the other goes on.
    await in_flight.execute("INSERT INTO customers (email) VALUES ('during@example.com')")
    await busy.commit()
    await in_flight.close()
    assert await source_conn.fetchval("SELECT count(*) FROM customers") == 22

    copy = await asyncpg.connect(body["connection_url"])
    try:
        expected = await snapshot(source_conn)
        expected["customers"] = [c for c in expected["customers"] if c[0] <= 20]
        assert await snapshot(copy) == expected
        # The objects are the fork's own: its role owns them and can change them.
        owners = await copy.fetch(
            "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace"
        )
        assert [r["owner"] for r in owners] == [body["credentials"]["username"]]
        await copy.execute("ALTER TABLE orders ADD COLUMN note text")
        # The sequences carry on from where the source's were.
        assert await copy.fetchval("SELECT nextval('invoice_numbers')") == 1100
        # (21 went to the source's then uncommitted insert: sequences are not transactional.)
        assert await copy.fetchval(
            "INSERT INTO customers (email) VALUES ('fork@example.com') RETURNING id"
        ) == 22  # fmt: skip

        # Writes on either side stay there.
        await copy.execute("DELETE FROM orders WHERE total < 10")
        await source_conn.execute("INSERT INTO orders (customer_id, total) VALUES (1, 999)")
        assert await copy.fetchval("SELECT count(*) FROM orders") == 91
        assert await source_conn.fetchval("SELECT count(*) FROM orders") == 101
        assert not await source_conn.fetchval(
            "SELECT EXISTS (SELECT FROM customers WHERE email = 'fork@example.com')"
        )
        assert not await copy.fetchval(
            "SELECT EXISTS (SELECT FROM customers WHERE email = 'during@example.com')"
        )
        assert await source_conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'"
        ) == 0  # fmt: skip
    finally:
        await copy.close()
    await http.delete(f"/resources/{body['token']}")


async def test_the_forks_credentials_cannot_reach_the_source(
    http: httpx.AsyncClient, source: tuple[dict[str, Any], asyncpg.Connection]
) -> None:
    made, _ = source
    response, body = await fork(http, made["token"])
    assert response.status_code == 201, response.text
    credentials = body["credentials"]
    with pytest.raises(
        (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)
    ):
        await asyncpg.connect(
            host=credentials["host"],
            port=credentials["port"],
            user=credentials["username"],
            password=credentials["password"],
            database=made["credentials"]["database"],
        )
    # Nor the source's credentials the fork.
    with pytest.raises(
        (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)
    ):
        await asyncpg.connect(
            host=credentials["host"],
            port=credentials["port"],
            user=made["credentials"]["username"],
            password=made["credentials"]["password"],
            database=credentials["database"],
        )
    await http.delete(f"/resources/{body['token']}")


async def test_a_retry_with_the_same_idempotency_key_returns_the_same_fork(
    http: httpx.AsyncClient, source: tuple[dict[str, Any], asyncpg.Connection]
) -> None:
    made, _ = source
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first, body = await fork(http, made["token"], headers=key)
    again, replayed = await fork(http, made["token"], headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers.get("idempotent-replayed") == "true"
    assert (replayed["id"], replayed["token"], replayed["connection_url"]) == (
        body["id"],
        body["token"],
        body["connection_url"],
    )
    assert replayed["forked_from"] == made["id"]
    # Another key makes another fork.
    other, third = await fork(http, made["token"], headers={"Idempotency-Key": str(uuid.uuid4())})
    assert other.status_code == 201
    assert third["id"] != body["id"]
    for token in (body["token"], third["token"]):
        await http.delete(f"/resources/{token}")


async def test_only_postgres_can_be_forked_and_a_deleted_source_is_not_found(
    http: httpx.AsyncClient,
) -> None:
    cache = await new_resource(http, "cache")
    response, body = await fork(http, cache["token"])
    assert response.status_code == 400, response.text
    assert body["error"] == "invalid_request"
    assert "postgres" in body["message"]
    await http.delete(f"/resources/{cache['token']}")

    database = await new_resource(http, "db")
    await http.delete(f"/resources/{database['token']}")
    response, body = await fork(http, database["token"])
    assert response.status_code == 404, response.text
    assert body["error"] == "not_found"


async def test_an_expired_source_is_gone(short_ttl_http: httpx.AsyncClient) -> None:
    database = await new_resource(short_ttl_http, "db")
    await asyncio.sleep(SHORT_TTL_S + 0.5)
    response, body = await fork(short_ttl_http, database["token"])
    assert response.status_code == 410, response.text
    assert body["error"] == "resource_gone"


@pytest.fixture(scope="module")
def capped_gateway(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway with the abuse tests' tight caps, trusting X-Forwarded-For from this host."""
    directory = tmp_path_factory.mktemp("fork-caps")
    trusting_localhost = {"SPINUP_TRUSTED_PROXIES": "127.0.0.1/32"}
    with gateway_with_plans(stack, directory, tight_limits, trusting_localhost) as gateway:
        yield str(gateway.url)


async def test_a_fork_counts_against_the_callers_caps(capped_gateway: str) -> None:
    client = fresh_client()
    async with httpx.AsyncClient(base_url=capped_gateway, timeout=60) as capped:
        made = await new_resource(capped, "db", headers=client.headers())
        forks = []
        for _ in range(ACTIVE_PER_KIND - 1):
            response, body = await fork(capped, made["token"], headers=client.headers())
            assert response.status_code == 201, response.text
            forks.append(body)
        response, body = await fork(capped, made["token"], headers=client.headers())
        assert response.status_code == 402, response.text
        assert body["error"] == "plan_limit_reached"
        # Another client forking the same token is admitted on its own caps.
        neighbour = client.neighbour()
        response, other = await fork(capped, made["token"], headers=neighbour.headers())
        assert response.status_code == 201, response.text
        for resource in (made, *forks, other):
            await capped.delete(f"/resources/{resource['token']}")


def test_spinup_fork_prints_the_new_database_and_keeps_its_token(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SPINUP_URL", stack.gateway_url)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("SPINUP_TOKEN", raising=False)
    made = httpx.post(f"{stack.gateway_url}/db/new", timeout=60).json()
    capsys.readouterr()
    assert spinup(["fork", made["token"], "--name", "cli-copy", "--json"]) == 0
    forked = json.loads(capsys.readouterr().out)
    assert (forked["forked_from"], forked["name"]) == (made["id"], "cli-copy")
    assert spinup(["ls", "--local"]) == 0
    assert forked["token"] in capsys.readouterr().out
    for token in (made["token"], forked["token"]):
        httpx.delete(f"{stack.gateway_url}/resources/{token}", timeout=60)


async def test_the_mcp_tool_fork_resource_forks_a_database(
    http: httpx.AsyncClient, source: tuple[dict[str, Any], asyncpg.Connection], stack: Stack
) -> None:
    made, _ = source
    async with Client(build_server(SpinupApi(base_url=stack.gateway_url))) as client:
        result = await client.call_tool("fork_resource", {"resource": made["token"]})
        assert not result.is_error, result.content
        forked: dict[str, Any] = result.structured_content
        assert forked["forked_from"] == made["id"]
        copy = await asyncpg.connect(forked["connection_url"])
        try:
            assert await copy.fetchval("SELECT count(*) FROM orders") == 100
        finally:
            await copy.close()
        cache = await new_resource(http, "cache")
        refused = await client.call_tool("fork_resource", {"resource": cache["token"]})
        assert refused.is_error
    for token in (forked["token"], cache["token"]):
        await http.delete(f"/resources/{token}")


async def test_a_fork_that_cannot_copy_answers_503_and_keeps_nothing(
    http: httpx.AsyncClient,
    source: tuple[dict[str, Any], asyncpg.Connection],
    customer_admin: asyncpg.Connection,
) -> None:
    made, source_conn = source
    database = made["credentials"]["database"]
    tenants = "SELECT count(*) FROM pg_database WHERE datname ~ '^t_'"
    before = await customer_admin.fetchval(tenants)
    # As a hard block does: the source admits no new session, the admin's pg_dump included.
    await customer_admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        response, body = await fork(http, made["token"])
    finally:
        await customer_admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    assert response.status_code == 503, response.text
    assert body["error"] == "backend_error"
    # The new database was removed; the source and its open session are as they were.
    assert await customer_admin.fetchval(tenants) == before
    assert await source_conn.fetchval("SELECT count(*) FROM orders") == 100
