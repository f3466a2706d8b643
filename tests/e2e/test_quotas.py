"""Quotas as a tenant meets them: fill a resource past its plan, see writes refused by the
backend itself, clean up, and write again.

The resources come from a gateway whose anonymous plan has quotas of a few MB, so filling one
takes a moment; the usage sweep is asked for directly over NATS (the reaper also sends one every
few seconds) so each step is deterministic.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import aiohttp
import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from miniopy_async.error import S3Error
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from redis.exceptions import NoPermissionError

from devstack.stack import Stack
from reaper.sweep import sweep_usage
from shared.bus import Bus
from shared.contracts.kinds import ResourceKind
from tests.e2e.conftest import anonymous_tier, gateway_with_plans, new_resource, s3_client

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
# Postgres usage is counted above an empty database (ADR 0025): the ~8 MB of ballast below must
# pass the quota but stay under twice it (the hard block).
TINY_QUOTAS_MB = {"postgres": 6, "redis": 1, "mongo": 1, "s3": 1}


@pytest.fixture(scope="module")
def tiny_gateway(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway whose anonymous resources get quotas of a few MB."""

    def tiny_quotas(plans: dict[str, Any]) -> None:
        anonymous = anonymous_tier(plans)
        anonymous["postgres"]["storage_mb"] = TINY_QUOTAS_MB["postgres"]
        anonymous["redis"]["memory_mb"] = TINY_QUOTAS_MB["redis"]
        anonymous["mongo"]["storage_mb"] = TINY_QUOTAS_MB["mongo"]
        anonymous["s3"]["storage_mb"] = TINY_QUOTAS_MB["s3"]

    directory = tmp_path_factory.mktemp("tiny-quotas")
    with gateway_with_plans(stack, directory, tiny_quotas) as gateway:
        yield str(gateway.url)


@pytest.fixture
async def tiny(tiny_gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tiny_gateway, timeout=60) as client:
        yield client


@pytest.fixture
async def bus(env: dict[str, str]) -> AsyncIterator[Bus]:
    connected = await Bus.connect(env["SPINUP_NATS_URL"], name="test-quotas")
    yield connected
    await connected.close()


async def usage_after_sweep(
    http: httpx.AsyncClient, bus: Bus, resource: dict[str, Any]
) -> dict[str, Any]:
    """Sweep the resource's kind now (as the reaper does on its timer); its usage as shown."""
    assert await sweep_usage(bus, ResourceKind(resource["kind"]))
    response = await http.get(f"/resources/{resource['token']}")
    assert response.status_code == 200, response.text
    usage: dict[str, Any] = response.json()["usage"]
    return usage


Step = Callable[[], Coroutine[Any, Any, None]]


async def check_quota_cycle(
    http: httpx.AsyncClient,
    bus: Bus,
    body: dict[str, Any],
    *,
    fill: Step,
    write: Step,
    read: Step,
    clean_up: Step,
    refused: type[Exception] | tuple[type[Exception], ...],
) -> None:
    """fill → over quota (writes refused, reads fine) → clean up → under (writes fine)."""
    await write()
    await fill()
    usage = await usage_after_sweep(http, bus, body)
    assert usage["over_quota"], usage
    assert usage["bytes"] >= usage["quota_bytes"], usage
    assert usage["note"], "an over-quota resource tells its tenant how to get back under"
    with pytest.raises(refused):
        await write()
    await read()
    await clean_up()
    usage = await usage_after_sweep(http, bus, body)
    assert not usage["over_quota"], usage
    assert usage["bytes"] < usage["quota_bytes"], usage
    assert usage["note"] is None
    await write()


async def test_postgres_over_quota_is_read_only_until_cleaned_up(
    tiny: httpx.AsyncClient, http: httpx.AsyncClient, bus: Bus
) -> None:
    body = await new_resource(tiny, "db")
    url = body["connection_url"]
    # Opened before the block: the block must reach it too (it is cut, and a new one is read-only).
    early = await asyncpg.connect(url)
    await early.execute("CREATE TABLE ballast (id serial PRIMARY KEY, pad text)")

    async def fill() -> None:
        async with _pg(url) as conn:
            await conn.execute(
                "INSERT INTO ballast (pad) SELECT md5(g::text) || repeat(md5(random()::text), 30)"
                " FROM generate_series(1, 8000) AS g"
            )

    async def write() -> None:
        async with _pg(url) as conn:
            await conn.execute("INSERT INTO ballast (pad) VALUES ('one more')")

    async def read() -> None:
        async with _pg(url) as conn:
            assert await conn.fetchval("SELECT count(*) FROM ballast") > 0

    async def clean_up() -> None:
        # What the over-quota note tells a tenant: leave read-only mode to delete, explicitly.
        async with _pg(url) as conn:
            await conn.execute("SET default_transaction_read_only = off")
            await conn.execute("TRUNCATE ballast")

    try:
        await check_quota_cycle(
            http,
            bus,
            body,
            fill=fill,
            write=write,
            read=read,
            clean_up=clean_up,
            refused=asyncpg.ReadOnlySQLTransactionError,
        )
        assert early.is_closed() or not await _alive(early)
    finally:
        await early.close()
        await http.delete(f"/resources/{body['token']}")


@contextlib.asynccontextmanager
async def _pg(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A fresh connection per step, as a new request of the tenant's app would open."""
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True


async def test_redis_over_quota_refuses_writes_but_reads_and_deletes_work(
    tiny: httpx.AsyncClient, http: httpx.AsyncClient, bus: Bus
) -> None:
    body = await new_resource(tiny, "cache")
    prefix = body["credentials"]["key_prefix"]
    client = aioredis.Redis.from_url(body["connection_url"])
    blob = os.urandom(300 * 1024)

    async def fill() -> None:
        for i in range(5):
            await client.set(f"{prefix}fill:{i}", blob)

    async def write() -> None:
        await client.set(f"{prefix}small", b"x")

    async def read() -> None:
        assert await client.get(f"{prefix}fill:0") == blob

    async def clean_up() -> None:
        await client.delete(*(f"{prefix}fill:{i}" for i in range(5)))

    try:
        await check_quota_cycle(
            http,
            bus,
            body,
            fill=fill,
            write=write,
            read=read,
            clean_up=clean_up,
            refused=NoPermissionError,
        )
    finally:
        await client.aclose()
        await http.delete(f"/resources/{body['token']}")


async def test_mongo_over_quota_refuses_inserts_but_finds_and_deletes_work(
    tiny: httpx.AsyncClient, http: httpx.AsyncClient, bus: Bus
) -> None:
    body = await new_resource(tiny, "nosql")
    client: Any = AsyncMongoClient(body["connection_url"], serverSelectionTimeoutMS=2000)
    collection = client[body["credentials"]["database"]]["ballast"]
    pad = "x" * (64 * 1024)

    async def fill() -> None:
        await collection.insert_many([{"i": i, "pad": pad} for i in range(24)])

    async def write() -> None:
        await collection.insert_one({"small": True})

    async def read() -> None:
        assert await collection.count_documents({}) > 0

    async def clean_up() -> None:
        await collection.drop()

    try:
        await check_quota_cycle(
            http,
            bus,
            body,
            fill=fill,
            write=write,
            read=read,
            clean_up=clean_up,
            refused=OperationFailure,
        )
    finally:
        await client.close()
        await http.delete(f"/resources/{body['token']}")


async def test_s3_over_quota_refuses_uploads_but_reads_and_deletes_work(
    tiny: httpx.AsyncClient, http: httpx.AsyncClient, bus: Bus
) -> None:
    body = await new_resource(tiny, "storage")
    creds = body["credentials"]
    bucket = creds["bucket"]
    chunk = os.urandom(MIB)  # random: SeaweedFS counts compressed bytes
    async with aiohttp.ClientSession() as session:
        client = s3_client(body, session)

        async def put(name: str, data: bytes) -> None:
            await client.put_object(bucket, name, io.BytesIO(data), len(data))

        async def fill() -> None:
            for i in range(2):
                await put(f"fill/{i}", chunk)

        async def write() -> None:
            await put("small", b"x")

        async def read() -> None:
            response = await client.get_object(bucket, "fill/0")
            try:
                assert bytes(await response.read()) == chunk
            finally:
                response.release()

        async def clean_up() -> None:
            for i in range(2):
                await client.remove_object(bucket, f"fill/{i}")

        try:
            await check_quota_cycle(
                http,
                bus,
                body,
                fill=fill,
                write=write,
                read=read,
                clean_up=clean_up,
                refused=S3Error,
            )
        finally:
            await http.delete(f"/resources/{body['token']}")
