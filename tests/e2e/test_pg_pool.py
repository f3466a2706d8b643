"""``/db/new`` served from pg-provisioner's warm pool, used like any other database."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid

import asyncpg
import httpx
import pytest

from bench.pg_pool import served_from_pool
from shared.naming import pool_stream, resource_stream
from tests.e2e.conftest import new_resource

pytestmark = pytest.mark.e2e


async def test_new_database_comes_from_the_warm_pool_and_works(
    http: httpx.AsyncClient, platform_db: asyncpg.Pool
) -> None:
    # The worker's pool fills in the background, and members other processes made (the
    # integration tests' pools) are adopted only at its next reconcile: ask until one is pooled.
    deadline = time.monotonic() + 60
    while True:
        db = await new_resource(http, "db")
        if await served_from_pool(platform_db, [db["id"]]):
            break
        await http.delete(f"/resources/{db['token']}")
        assert time.monotonic() < deadline, "no /db/new was served from the warm pool in 60 s"
        await asyncio.sleep(0.5)
    # Taken by its rename, then recorded with its intent in one append (ADR 0032, 0047): one
    # time, one command; the member's own stream ends where it was made ready.
    recorded = await platform_db.fetch(
        "SELECT event_type, recorded_at, command_id, data->>'pool_member' AS member FROM events"
        " WHERE stream_id = $1 ORDER BY version",
        resource_stream(uuid.UUID(db["id"])),
    )
    assert [row["event_type"] for row in recorded] == [
        "ResourceProvisionRequested",
        "ResourceProvisioned",
    ]
    assert len({(row["recorded_at"], row["command_id"]) for row in recorded}) == 1
    member_events = await platform_db.fetch(
        "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version",
        pool_stream(uuid.UUID(recorded[-1]["member"])),
    )
    assert [row["event_type"] for row in member_events] == [
        "PoolMemberRequested",
        "PoolMemberReady",
    ]

    conn = await asyncpg.connect(db["connection_url"])
    await conn.execute("CREATE TABLE notes (body text)")
    await conn.execute("INSERT INTO notes VALUES ('pooled')")
    assert await conn.fetchval("SELECT body FROM notes") == "pooled"
    assert await conn.fetchval("SELECT current_user") == f"t_{uuid.UUID(db['id']).hex}"
    await conn.close()
    psql = shutil.which("psql")
    assert psql is not None, "psql is not installed"
    done = await asyncio.create_subprocess_exec(
        psql,
        db["connection_url"],
        "-w",
        "-tAc",
        "SELECT body FROM notes",
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(done.communicate(), 30)
    assert done.returncode == 0, err.decode()
    assert out.decode().strip() == "pooled"

    deleted = await http.delete(f"/resources/{db['token']}")
    assert deleted.status_code == 200, deleted.text
    with pytest.raises(asyncpg.PostgresError):
        await asyncpg.connect(db["connection_url"])
