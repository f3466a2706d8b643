"""Failure modes: honest 503s, nothing half-made, expiry, and the relay and projections."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NatsClient

from devstack.procs import free_ports
from devstack.stack import Stack
from pg_provisioner.driver import PostgresDriver
from shared.contracts.events import RecordedEvent
from shared.contracts.subjects import EVENTS_STREAM
from shared.eventlog.projections import ResourceReadModel
from shared.eventlog.relayed import unpack
from shared.testing.polling import eventually
from tests.e2e.conftest import SHORT_TTL_S, new_resource

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]


async def resource_id_of_request(platform_db: asyncpg.Pool, request_id: str) -> uuid.UUID:
    stream = await platform_db.fetchval(
        "SELECT stream_id FROM events WHERE correlation_id = $1 LIMIT 1", request_id
    )
    assert stream, f"no event recorded for request {request_id}"
    return uuid.UUID(stream.removeprefix("resource-"))


async def test_worker_down_gives_503_quickly_and_recovery_after(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    stack.stop_service("pg-provisioner")
    try:
        started = time.monotonic()
        response = await http.post("/db/new")
        assert response.status_code == 503
        assert response.json()["error"] == "worker_unavailable"
        assert response.headers["retry-after"]
        assert time.monotonic() - started < 5
    finally:
        stack.start_service("pg-provisioner")
    assert (await http.post("/db/new")).status_code == 201


async def test_customer_postgres_down_gives_503_and_leaves_nothing_behind(
    stack: Stack, http: httpx.AsyncClient, platform_db: asyncpg.Pool, driver: PostgresDriver
) -> None:
    stack.stop_server("customer-pg")
    try:
        response = await http.post("/db/new")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "backend_unavailable"
    finally:
        stack.start_server("customer-pg")
    resource_id = await resource_id_of_request(platform_db, response.headers["x-request-id"])
    read_model = ResourceReadModel(platform_db)

    async def settled() -> bool:
        state = await read_model.by_id(resource_id)
        return (
            state is not None
            and not state.needs_cleanup
            and state.status.value in {"failed", "deleted"}
        )

    assert await eventually(settled), "the failed provision was never cleaned up"
    assert not await driver.exists(resource_id)
    assert (await http.post("/db/new")).status_code == 201


async def test_expired_database_is_reaped_and_then_gone(
    http: httpx.AsyncClient, short_ttl_http: httpx.AsyncClient, driver: PostgresDriver
) -> None:
    db = await new_resource(short_ttl_http, "db")
    assert db["limits"]["expires_in"] <= SHORT_TTL_S
    conn = await asyncpg.connect(db["connection_url"])
    await conn.close()

    async def gone() -> bool:
        return (await http.get(f"/resources/{db['token']}")).status_code == 410

    assert await eventually(gone), "the reaper did not expire the database"
    body = (await http.get(f"/resources/{db['token']}")).json()
    assert body["error"] == "resource_gone"
    assert not await driver.exists(uuid.UUID(db["id"]))
    with pytest.raises(
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        await asyncpg.connect(db["connection_url"])
    assert (await http.delete(f"/resources/{db['token']}")).status_code == 410


async def relayed_events(nc: NatsClient) -> list[RecordedEvent]:
    js = nc.jetstream()
    info = await js.stream_info(EVENTS_STREAM)
    relayed = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(EVENTS_STREAM, seq)
        relayed += unpack(message.subject or "", message.data or b"")
    return relayed


async def assert_relayed_exactly_once_in_order(nc: NatsClient, platform_db: asyncpg.Pool) -> None:
    """Once the relay has caught up with the log as it is now, the stream holds the log's
    events, each once, in relay order: by appending transaction, then position (ADR 0012).
    Later appends may still be on their way."""
    present = {row["position"] for row in await platform_db.fetch("SELECT position FROM events")}

    async def caught_up() -> list[RecordedEvent] | None:
        relayed = await relayed_events(nc)
        return relayed if present <= {event.position for event in relayed} else None

    relayed = await eventually(caught_up)
    assert relayed, "the relay did not catch up"
    stored = await platform_db.fetch(
        "SELECT event_id, position FROM events"
        " WHERE (txid, position) <= (SELECT txid, position FROM events WHERE position = $1)"
        " ORDER BY txid, position",
        relayed[-1].position,
    )
    assert [(r.event_id, r.position) for r in relayed] == [
        (row["event_id"], row["position"]) for row in stored
    ]


async def test_relay_delivers_every_event_once_in_log_order(
    http: httpx.AsyncClient, nc: NatsClient, platform_db: asyncpg.Pool
) -> None:
    for _ in range(3):
        db = await new_resource(http, "db")
        assert (await http.delete(f"/resources/{db['token']}")).status_code == 200
    await assert_relayed_exactly_once_in_order(nc, platform_db)


async def test_relay_resumes_on_another_gateway_when_the_first_dies(
    stack: Stack, nc: NatsClient, platform_db: asyncpg.Pool
) -> None:
    stack.kill_service("gateway")
    standby = stack.start_extra_gateway(free_ports(1)[0])
    try:
        async with httpx.AsyncClient(base_url=str(standby.url), timeout=30) as client:
            for _ in range(2):
                assert (await client.post("/db/new")).status_code == 201
        await assert_relayed_exactly_once_in_order(nc, platform_db)
    finally:
        standby.stop()
        stack.start_service("gateway")


async def log_is_quiet(platform_db: asyncpg.Pool, quiet_for: float = 1.0) -> bool:
    last = await platform_db.fetchval("SELECT max(position) FROM events")
    await asyncio.sleep(quiet_for)
    return bool(last == await platform_db.fetchval("SELECT max(position) FROM events"))


async def test_rebuilt_projection_equals_the_live_one(
    stack: Stack, env: dict[str, str], platform_db: asyncpg.Pool
) -> None:
    # The reaper is the only writer besides the test: pause it so live and rebuilt see one log.
    stack.stop_service("reaper")
    try:
        assert await eventually(lambda: log_is_quiet(platform_db))
        await compare_rebuild_with_live(env, platform_db)
    finally:
        stack.start_service("reaper")


async def compare_rebuild_with_live(env: dict[str, str], platform_db: asyncpg.Pool) -> None:
    read_model = ResourceReadModel(platform_db)
    before = await read_model.all_rows()
    assert before
    rebuild = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.eventlog",
        "rebuild",
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await rebuild.communicate()
    assert rebuild.returncode == 0
    assert f"{len(before)} rows" in stdout.decode()
    assert await read_model.all_rows() == before
