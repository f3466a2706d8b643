"""A user's view: create databases over HTTP, use them with asyncpg, try to break isolation."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

pytestmark = pytest.mark.e2e


async def new_db(http: httpx.AsyncClient, **kwargs: Any) -> dict[str, Any]:
    response = await http.post("/db/new", **kwargs)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_new_database_answers_with_everything_a_user_needs(http: httpx.AsyncClient) -> None:
    response = await http.post("/db/new")
    assert response.status_code == 201
    assert response.headers["x-request-id"]
    body = response.json()
    assert body["ok"] is True
    assert body["token"].startswith("spn_")
    assert body["tier"] == "anonymous"
    assert body["kind"] == "postgres"
    assert set(body["limits"]) == {
        "storage_mb",
        "connections",
        "statement_timeout_ms",
        "temp_file_limit_mb",
        "extensions",
        "expires_in",
    }
    assert body["credentials"]["type"] == "postgres"
    assert body["credentials"]["connection_url"] == body["connection_url"]
    assert 0 < body["limits"]["expires_in"] <= 86400
    assert body["expires_at"]
    assert "claim_url" in body
    assert body["note"]
    uuid.UUID(body["id"])


async def test_two_databases_each_work_and_keep_their_own_data(http: httpx.AsyncClient) -> None:
    a, b = await new_db(http), await new_db(http)
    for db, value in ((a, "from a"), (b, "from b")):
        conn = await asyncpg.connect(db["connection_url"])
        await conn.execute("CREATE TABLE notes (body text)")
        await conn.execute("INSERT INTO notes VALUES ($1)", value)
        await conn.close()
    for db, value in ((a, "from a"), (b, "from b")):
        conn = await asyncpg.connect(db["connection_url"])
        assert await conn.fetchval("SELECT array_agg(body) FROM notes") == [value]
        await conn.close()


# Isolation (other databases, the maintenance ones, escalation): tests/e2e/test_escape_matrix.py


async def test_connection_limit_from_the_plan_is_enforced_by_postgres(
    http: httpx.AsyncClient,
) -> None:
    db = await new_db(http)
    limit = db["limits"]["connections"]
    open_conns = [await asyncpg.connect(db["connection_url"]) for _ in range(limit)]
    try:
        with pytest.raises(asyncpg.TooManyConnectionsError):
            await asyncpg.connect(db["connection_url"])
    finally:
        for conn in open_conns:
            await conn.close()


async def test_show_returns_status_limits_and_the_working_url(http: httpx.AsyncClient) -> None:
    db = await new_db(http, json={"name": "my app"})
    shown = (await http.get(f"/resources/{db['token']}")).json()
    assert shown["status"] == "active"
    assert shown["kind"] == "postgres"
    assert shown["name"] == "my app"
    assert shown["connection_url"] == db["connection_url"]
    assert shown["id"] == db["id"]


async def test_delete_stops_the_credentials_at_once_and_drops_open_connections(
    http: httpx.AsyncClient,
) -> None:
    db = await new_db(http)
    conn = await asyncpg.connect(db["connection_url"])
    response = await http.delete(f"/resources/{db['token']}")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "id": db["id"], "status": "deleted"}
    # The server terminated the session: asyncpg reports it as closed or lost, or (when the
    # termination notice lands while it starts the query) as its own protocol in disarray.
    with pytest.raises(
        (
            asyncpg.ConnectionDoesNotExistError,
            asyncpg.AdminShutdownError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        )
    ):
        await conn.fetchval("SELECT 1")
    await conn.close()
    with pytest.raises(
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        await asyncpg.connect(db["connection_url"])
    assert (await http.get(f"/resources/{db['token']}")).status_code == 404
    again = await http.delete(f"/resources/{db['token']}")
    assert again.status_code == 404
    assert again.json()["error"] == "not_found"


async def test_same_idempotency_key_returns_the_same_database_once(
    http: httpx.AsyncClient, customer_admin: asyncpg.Connection
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await http.post("/db/new", headers=key)
    second = await http.post("/db/new", headers=key)
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert first.json() == second.json() | {"limits": first.json()["limits"]}
    name = "t_" + uuid.UUID(first.json()["id"]).hex
    assert (
        await customer_admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
        == 1
    )
    conn = await asyncpg.connect(second.json()["connection_url"])
    await conn.close()
    other = await http.post("/db/new", headers={"Idempotency-Key": str(uuid.uuid4())})
    assert other.json()["id"] != first.json()["id"]


async def test_reusing_an_idempotency_key_after_delete_is_a_clear_conflict(
    http: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    db = (await http.post("/db/new", headers=key)).json()
    await http.delete(f"/resources/{db['token']}")
    again = await http.post("/db/new", headers=key)
    assert again.status_code == 409
    assert again.json()["error"] == "idempotency_key_reused"


async def test_a_statement_runs_no_longer_than_the_plan_allows_whatever_its_session_sets(
    http: httpx.AsyncClient,
) -> None:
    # The role's statement_timeout is a default a tenant may turn off; pg-provisioner keeps the
    # plan's limit from outside (ADR 0065), within its 5 s check.
    made = await new_db(http)
    limit_s = made["limits"]["statement_timeout_ms"] / 1000
    conn = await asyncpg.connect(made["connection_url"])
    try:
        await conn.execute("ALTER ROLE current_user SET statement_timeout = 0")
        await conn.execute("SET statement_timeout = 0")
        began = time.monotonic()
        with pytest.raises(asyncpg.QueryCanceledError):
            await conn.execute(f"SELECT pg_sleep({limit_s + 60})")
        took = time.monotonic() - began
        assert limit_s <= took <= limit_s + 15, took
        assert await conn.fetchval("SELECT 1") == 1  # the statement ended, not the session
    finally:
        await conn.close()
        await http.delete(f"/resources/{made['token']}")
