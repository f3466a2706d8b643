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

from tests.e2e.conftest import new_resource

pytestmark = pytest.mark.e2e


async def ready_members(platform_db: asyncpg.Pool) -> int:
    """Pool members whose stream ends in Ready (the stack's pool, per the log)."""
    count: int = await platform_db.fetchval(
        "SELECT count(*) FROM events e WHERE e.stream_id LIKE 'pool-%'"
        " AND e.event_type = 'PoolMemberReady' AND NOT EXISTS (SELECT 1 FROM events later"
        " WHERE later.stream_id = e.stream_id AND later.version > e.version)"
    )
    return count


async def test_new_database_comes_from_the_warm_pool_and_works(
    http: httpx.AsyncClient, platform_db: asyncpg.Pool
) -> None:
    deadline = time.monotonic() + 60
    while await ready_members(platform_db) == 0:
        assert time.monotonic() < deadline, "the stack's warm pool never had a member"
        await asyncio.sleep(0.2)

    db = await new_resource(http, "db")

    taken = await platform_db.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'PoolMemberTaken'"
        " AND data->>'resource_id' = $1",
        db["id"],
    )
    assert taken == 1
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
