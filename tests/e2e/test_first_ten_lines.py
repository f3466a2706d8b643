"""The first code a developer writes for each kind, copied from its client library's README.

Each test makes a fresh resource over HTTP and runs that snippet unchanged, with only the
credentials filled in (issue 25, ADR 0025). What a shared server cannot allow safely is asserted
as the refusal the README, ``/llms.txt`` and ADR 0025 document: Redis ``SCAN`` and arbitrary Lua.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import nats
import pytest
import redis.asyncio as aioredis
from aiobotocore.session import get_session
from nats.aio.client import RawCredentials
from pymongo import AsyncMongoClient
from redis.exceptions import NoPermissionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.bus import Bus
from tests.e2e.conftest import new_resource
from tests.e2e.test_quotas import usage_after_sweep

pytestmark = pytest.mark.e2e

KIB = 1024


@contextlib.asynccontextmanager
async def fresh(http: httpx.AsyncClient, path: str) -> AsyncIterator[dict[str, Any]]:
    """A new resource of ``path``'s kind, deleted afterwards."""
    resource = await new_resource(http, path)
    try:
        yield resource
    finally:
        await http.delete(f"/resources/{resource['token']}")


# --- Postgres ------------------------------------------------------------------------------------


async def test_asyncpg_default_pool_opens_and_serves_all_its_connections(
    http: httpx.AsyncClient,
) -> None:
    async with fresh(http, "db") as db:
        # asyncpg's README, with create_pool's defaults: ten connections opened at once.
        pool = await asyncpg.create_pool(db["connection_url"])
        try:
            async with pool.acquire() as con:
                await con.execute("CREATE TABLE mytable (id serial PRIMARY KEY, name text)")
                await con.execute("INSERT INTO mytable (name) VALUES ($1)", "first")
            assert pool.get_size() == pool.get_max_size() == 10

            async def one(index: int) -> int:
                async with pool.acquire() as con:
                    await con.execute("SELECT pg_sleep(0.05)")
                    value: int = await con.fetchval("SELECT $1::int", index)
                    return value

            assert await asyncio.gather(*(one(i) for i in range(20))) == list(range(20))
            values = await pool.fetch("SELECT * FROM mytable WHERE id = $1", 1)
            assert [row["name"] for row in values] == ["first"]
        finally:
            await pool.close()
        assert db["limits"]["connections"] >= pool.get_max_size()


async def test_sqlalchemy_async_engine_with_its_default_pool(http: httpx.AsyncClient) -> None:
    async with fresh(http, "db") as db:
        url = db["connection_url"].replace("postgresql://", "postgresql+asyncpg://", 1)
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE note (body text)"))
                await conn.execute(text("INSERT INTO note VALUES ('hi')"))

            async def one() -> object:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT pg_sleep(0.05)"))
                    return (await conn.execute(text("SELECT body FROM note"))).scalar()

            concurrent = db["limits"]["connections"]
            assert await asyncio.gather(*(one() for _ in range(concurrent))) == ["hi"] * concurrent
        finally:
            await engine.dispose()


async def test_an_empty_database_uses_almost_none_of_its_quota(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    bus = await Bus.connect(env["SPINUP_NATS_URL"], name="test-first-ten-lines")
    try:
        async with fresh(http, "db") as db:
            conn = await asyncpg.connect(db["connection_url"])
            await conn.close()
            usage = await usage_after_sweep(http, bus, db)
            # The template's ~7.5 MB of catalogs is not the tenant's (ADR 0025).
            assert 0 <= usage["bytes"] < usage["quota_bytes"] // 10, usage
            assert not usage["over_quota"]
    finally:
        await bus.close()


async def test_connection_limit_still_holds_past_the_default_pool(
    http: httpx.AsyncClient,
) -> None:
    async with fresh(http, "db") as db:
        limit = db["limits"]["connections"]
        held = [await asyncpg.connect(db["connection_url"]) for _ in range(limit)]
        try:
            with pytest.raises(asyncpg.TooManyConnectionsError):
                await asyncpg.connect(db["connection_url"])
        finally:
            for conn in held:
                await conn.close()


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
async def cache(http: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    async with fresh(http, "cache") as resource:
        yield resource


async def test_redis_py_get_set_and_lock_acquire_extend_release(cache: dict[str, Any]) -> None:
    prefix = cache["credentials"]["key_prefix"]
    r = aioredis.Redis.from_url(cache["connection_url"], decode_responses=True)
    other = aioredis.Redis.from_url(cache["connection_url"], decode_responses=True)
    try:
        assert await r.set(f"{prefix}foo", "bar")
        assert await r.get(f"{prefix}foo") == "bar"
        # redis-py's Lock as its docs write it: SET NX to acquire, its Lua scripts by EVALSHA
        # to extend and release.
        async with r.lock(f"{prefix}my-lock", timeout=10, blocking_timeout=1) as lock:
            assert await lock.owned()
            assert await lock.extend(5)
            assert await lock.reacquire()
            assert not await other.lock(f"{prefix}my-lock", blocking_timeout=0.1).acquire()
        assert await r.exists(f"{prefix}my-lock") == 0, "the lock was not released"
        assert await other.lock(f"{prefix}my-lock", timeout=1).acquire()
        assert (await r.memory_usage(f"{prefix}foo") or 0) > 0
    finally:
        await r.aclose()
        await other.aclose()


async def test_redis_scan_and_arbitrary_lua_are_refused_as_documented(
    cache: dict[str, Any],
) -> None:
    prefix = cache["credentials"]["key_prefix"]
    r = aioredis.Redis.from_url(cache["connection_url"], decode_responses=True)
    try:
        await r.set(f"{prefix}user:1", "x")
        # SCAN sees every tenant's keys whatever MATCH says: refused (ADR 0025).
        with pytest.raises(NoPermissionError, match="scan"):
            _ = [key async for key in r.scan_iter(match=f"{prefix}user:*")]
        # A BullMQ-style script with declared keys: arbitrary Lua is refused (ADR 0025).
        add_job = r.register_script(
            "redis.call('HSET', KEYS[1], 'data', ARGV[1]) return redis.call('LPUSH', KEYS[2], 1)"
        )
        with pytest.raises(NoPermissionError):
            await add_job(keys=[f"{prefix}job:1", f"{prefix}wait"], args=["{}"])
        for words in (("INFO",), ("DBSIZE",), ("EVAL", "return 1", "0")):
            with pytest.raises(NoPermissionError):
                await r.execute_command(*words)  # type: ignore[no-untyped-call]
    finally:
        await r.aclose()


# --- NATS ----------------------------------------------------------------------------------------


async def test_nats_py_stream_consumer_and_key_value_without_sizes(
    http: httpx.AsyncClient,
) -> None:
    async with fresh(http, "queue") as queue:
        nc = await nats.connect(
            queue["connection_url"],
            user_credentials=RawCredentials(queue["credentials"]["creds"]),
            allow_reconnect=False,
        )
        try:
            # nats-py's README: a stream, a publish, a pull consumer, a KV bucket.
            js = nc.jetstream()
            await js.add_stream(name="ORDERS", subjects=["orders.>"])
            for i in range(10):
                ack = await js.publish("orders.new", f"hello world: {i}".encode())
                assert ack.stream == "ORDERS"
            psub = await js.pull_subscribe("orders.>", "psub")
            msgs = await psub.fetch(10)
            for msg in msgs:
                await msg.ack()
            assert msgs[0].data == b"hello world: 0"
            kv = await js.create_key_value(bucket="cfg")
            await kv.put("hello", b"world")
            entry = await kv.get("hello")
            assert entry.value == b"world"
            # What the client is told it may send is what the account allows.
            assert nc.max_payload == queue["limits"]["max_payload_kb"] * KIB
            sub = await nc.subscribe("big")
            await nc.publish("big", b"x" * 70 * KIB)
            assert len((await sub.next_msg(timeout=2)).data) == 70 * KIB
            await js.publish("orders.big", b"y" * 70 * KIB)
            assert nc.is_connected
        finally:
            await nc.close()


# --- S3 ------------------------------------------------------------------------------------------


async def test_aws_sdk_reads_the_aws_environment_names(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fresh(http, "storage") as bucket:
        creds = bucket["credentials"]
        # What `spinup storage new --env` writes, under the names every AWS SDK reads.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["access_key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["secret_key"])
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", creds["endpoint"])
        monkeypatch.setenv("AWS_REGION", creds["region"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", creds["region"])
        session = get_session()
        async with session.create_client("s3") as s3:
            await s3.put_object(Bucket=creds["bucket"], Key="hello.txt", Body=b"hello")
            got = await s3.get_object(Bucket=creds["bucket"], Key="hello.txt")
            async with got["Body"] as body:
                assert await body.read() == b"hello"
            listed = await s3.list_objects_v2(Bucket=creds["bucket"])
            assert [item["Key"] for item in listed["Contents"]] == ["hello.txt"]


# --- MongoDB -------------------------------------------------------------------------------------


async def test_pymongo_async_insert_and_find(http: httpx.AsyncClient) -> None:
    async with fresh(http, "nosql") as nosql:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(nosql["connection_url"])
        try:
            db = client.get_default_database()
            marker = uuid.uuid4().hex
            result = await db.test_collection.insert_one({"key": "value", "marker": marker})
            assert result.inserted_id is not None
            document = await db.test_collection.find_one({"marker": marker})
            assert document is not None
            assert document["key"] == "value"
        finally:
            await client.close()
