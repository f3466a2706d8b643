"""Each driver's ``export`` and ``suspend`` against the real servers (ADR 0030).

For every kind: data written with the real client library and the tenant's credentials, exported
in chunks of at most ``EXPORT_CHUNK_BYTES``, restored into a fresh resource of the same kind with
the field's own client (tests/restore.py) and compared; then the source is suspended: its
credentials are refused, a client opened before is cut, export still works, suspend again is
harmless and delete still works.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import io
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
import redis.asyncio as aioredis
from bson import Binary, Decimal128, Int64, ObjectId
from miniopy_async.api import Minio
from miniopy_async.error import S3Error
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, PyMongoError
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.webhooks.driver import (
    RecordOutcome,
    StoredRequest,
    WebhookDriver,
    encode_body,
    receive_key_of_url,
)
from mongo_provisioner.driver import MongoDriver
from queue_provisioner.driver import MIB, NatsAccountDriver
from redis_provisioner.driver import RedisDriver
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import (
    EXPORT_CHUNK_BYTES,
    MongoLimits,
    NatsLimits,
    RedisLimits,
    S3Credentials,
    S3Limits,
    WebhookLimits,
)
from shared.lifecycle import ExportingDriver
from storage_provisioner.driver import S3Driver
from tests.integration.conftest import connect_nats_tenant
from tests.restore import (
    S3_METADATA_MEMBER,
    json_lines,
    restore_mongo,
    restore_nats,
    restore_redis,
    restore_s3,
    tar_members,
)

pytestmark = pytest.mark.integration

TTL_TOLERANCE_MS = 10_000


async def exported(driver: ExportingDriver, resource_id: uuid.UUID, fmt: str) -> tuple[bytes, int]:
    """The whole export and its number of chunks, each checked against the chunk limit."""
    chunks = [chunk async for chunk in driver.export(resource_id, fmt)]
    assert chunks
    assert all(0 < len(chunk) <= EXPORT_CHUNK_BYTES for chunk in chunks)
    return b"".join(chunks), len(chunks)


async def test_an_unknown_format_is_refused_naming_the_known_one(
    redis_driver: RedisDriver,
) -> None:
    with pytest.raises(SpinupError) as refused:
        await anext(aiter(redis_driver.export(uuid.uuid4(), "rdb")))
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    assert "jsonl" in str(refused.value)


# -- Redis ----------------------------------------------------------------------------------------


@pytest.fixture
async def redis_admin(env: dict[str, str]) -> AsyncIterator[Redis]:
    client = aioredis.Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"])
    yield client
    await client.aclose()


async def redis_snapshot(admin: Redis, prefix: str) -> dict[bytes, tuple[str, object, int]]:
    """Every key under ``prefix`` (prefix removed): its type, value and TTL in ms (-1: none)."""
    snapshot: dict[bytes, tuple[str, object, int]] = {}
    async for key in admin.scan_iter(match=f"{prefix}*", count=1000):
        kind = (await admin.type(key)).decode()
        value: object
        if kind == "string":
            value = await admin.get(key)
        elif kind == "hash":
            value = await admin.hgetall(key)
        elif kind == "list":
            value = await admin.lrange(key, 0, -1)
        elif kind == "set":
            value = await admin.smembers(key)
        elif kind == "zset":
            value = await admin.zrange(key, 0, -1, withscores=True)
        else:
            value = await admin.xrange(key)
        snapshot[key.removeprefix(prefix.encode())] = (kind, value, await admin.pttl(key))
    return snapshot


async def test_redis_export_restores_every_type_binary_and_ttl_into_a_fresh_cache(
    redis_driver: RedisDriver, redis_admin: Redis
) -> None:
    limits = RedisLimits(memory_mb=16)
    source_id, target_id = uuid.uuid4(), uuid.uuid4()
    source = await redis_driver.create(source_id, limits)
    target = await redis_driver.create(target_id, limits)
    writer = aioredis.Redis.from_url(source.connection_url)
    p = source.key_prefix.encode()
    await writer.set(p + b"bin\x00\xff key", b"\x00\x01\xfe\xff", px=600_000)
    await writer.set(p + b"text", "plain words")
    await writer.hset(p + b"hash", mapping={b"f\xff": b"v\x00", b"name": b"value"})
    await writer.expire(p + b"hash", 3600)
    await writer.rpush(p + b"list", b"x", b"\xff", b"x")
    await writer.sadd(p + b"set", b"one", b"\x00two")
    await writer.zadd(p + b"zset", {b"low": -2.5, b"\xfehigh": 10})
    await writer.xadd(p + b"stream", {b"k": b"\x01", b"other": b"v"}, id="5-1")
    await writer.xadd(p + b"stream", {b"k": b"\x02"}, id="7-0")
    # Enough data for several chunks (each value 3 KiB, 4 KiB as base64).
    for index in range(200):
        await writer.set(p + f"bulk:{index}".encode(), os.urandom(3 * 1024))

    export, chunks = await exported(redis_driver, source_id, "jsonl")
    assert chunks > 1
    lines = json_lines(export)
    assert {line["type"] for line in lines} == {"string", "hash", "list", "set", "zset", "stream"}
    assert not any(base64.b64decode(line["key"]).startswith(p) for line in lines)

    restorer = aioredis.Redis.from_url(target.connection_url)
    assert await restore_redis(export, restorer, target.key_prefix) == len(lines) == 207
    await restorer.aclose()
    before = await redis_snapshot(redis_admin, source.key_prefix)
    after = await redis_snapshot(redis_admin, target.key_prefix)
    assert before.keys() == after.keys()
    for key, (kind, value, ttl) in before.items():
        assert after[key][:2] == (kind, value), key
        if ttl < 0:
            assert after[key][2] == ttl
        else:
            assert abs(after[key][2] - ttl) < TTL_TOLERANCE_MS

    await redis_driver.suspend(source_id)
    with pytest.raises((RedisConnectionError, AuthenticationError, ResponseError)):
        await writer.get(p + b"text")
    await writer.aclose()
    stale = aioredis.Redis.from_url(source.connection_url)
    with pytest.raises(AuthenticationError):
        await stale.ping()
    await stale.aclose()
    kept = await redis_snapshot(redis_admin, source.key_prefix)
    assert {k: v[:2] for k, v in kept.items()} == {k: v[:2] for k, v in before.items()}
    again, _ = await exported(redis_driver, source_id, "jsonl")
    assert len(json_lines(again)) == len(lines)
    await redis_driver.suspend(source_id)
    await redis_driver.delete(source_id)
    assert not await redis_driver.exists(source_id)
    await redis_driver.suspend(source_id)  # a missing user: nothing to do, no user made
    assert not await redis_driver.exists(source_id)
    await redis_driver.delete(target_id)


# -- MongoDB --------------------------------------------------------------------------------------

MongoClient = AsyncMongoClient[dict[str, Any]]


def mongo_client(url: str) -> MongoClient:
    return AsyncMongoClient(url, serverSelectionTimeoutMS=2000)


async def test_mongo_export_restores_typed_nested_documents_and_indexes_into_a_fresh_database(
    mongo_driver: MongoDriver,
) -> None:
    limits = MongoLimits(storage_mb=20)
    source_id, target_id = uuid.uuid4(), uuid.uuid4()
    source = await mongo_driver.create(source_id, limits)
    target = await mongo_driver.create(target_id, limits)
    writer = mongo_client(source.connection_url)
    database = writer[source.database]
    moment = dt.datetime(2026, 12, 4, 8, 30, 15, 123000, tzinfo=dt.UTC)
    await database.people.insert_many(
        [
            {
                "_id": ObjectId(),
                "name": "Ada",
                "born": moment,
                "photo": Binary(b"\x00\x01\xff" * 10),
                "address": {"city": "London", "lines": ["1 Lane", {"flat": 2}]},
                "balance": Decimal128(Decimal("10.25")),
                "visits": Int64(2**40),
                "score": 1.5,
                "nothing": None,
            },
            {"_id": "text-id", "name": "Grace", "tags": ["a", "b"], "nested": {"deep": {"x": 1}}},
        ]
    )
    await database.people.create_index("name", unique=True, name="name_unique")
    # Enough documents for several chunks.
    await database.bulk.insert_many(
        [{"n": n, "blob": Binary(os.urandom(2048))} for n in range(300)]
    )

    export, chunks = await exported(mongo_driver, source_id, "tar")
    assert chunks > 1
    members = tar_members(export)
    assert set(members) == {
        "bulk.json",
        "bulk.indexes.json",
        "people.json",
        "people.indexes.json",
    }
    assert b'"$oid"' in members["people.json"]
    assert b'"$date"' in members["people.json"]

    restorer = mongo_client(target.connection_url)
    counts = await restore_mongo(export, restorer[target.database])
    assert counts == {"people": 2, "bulk": 300}
    restored = restorer[target.database]
    for collection in ("people", "bulk"):
        original = [d async for d in database[collection].find().sort("_id")]
        copy = [d async for d in restored[collection].find().sort("_id")]
        assert copy == original
    indexes = {i["name"]: i async for i in await restored.people.list_indexes()}
    assert indexes["name_unique"]["key"] == {"name": 1}
    assert indexes["name_unique"].get("unique") is True
    await restorer.close()

    await mongo_driver.suspend(source_id)
    # The open client is cut or refused its next command (no roles left).
    with pytest.raises(PyMongoError):
        await database.people.find_one({"name": "Ada"})
    await writer.close()
    stale = mongo_client(source.connection_url)
    with pytest.raises(OperationFailure):
        await stale[source.database].people.find_one({})
    await stale.close()
    again, _ = await exported(mongo_driver, source_id, "tar")
    assert tar_members(again)["people.json"] == members["people.json"]
    await mongo_driver.suspend(source_id)
    await mongo_driver.delete(source_id)
    assert not await mongo_driver.exists(source_id)
    await mongo_driver.suspend(source_id)
    await mongo_driver.delete(target_id)


# -- S3 -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def large_bodies_allowed() -> Iterator[None]:
    """miniopy hands aiohttp each part as bytes, which warns past 1 MiB (not an error here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sending a large body", ResourceWarning)
        yield


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def s3_client(credentials: S3Credentials, session: aiohttp.ClientSession) -> Minio:
    endpoint = credentials.endpoint.split("://", 1)
    return Minio(
        endpoint[1],
        session=session,
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        secure=endpoint[0] == "https",
        region=credentials.region,
    )


async def s3_snapshot(client: Minio, bucket: str) -> dict[str, tuple[bytes, str, dict[str, str]]]:
    """Every object: its bytes, content type and user metadata."""
    snapshot = {}
    async for listed in client.list_objects(bucket, recursive=True):
        name = listed.object_name
        assert name is not None
        stat = await client.stat_object(bucket, name)
        response = await client.get_object(bucket, name)
        body = await response.read()
        response.release()
        metadata = {
            k.lower(): v
            for k, v in dict(stat.metadata or {}).items()
            if k.lower().startswith("x-amz-meta-")
        }
        snapshot[name] = (body, stat.content_type or "", metadata)
    return snapshot


async def test_s3_export_restores_objects_with_metadata_into_a_fresh_bucket(
    s3_driver: S3Driver, http_session: aiohttp.ClientSession
) -> None:
    limits = S3Limits(storage_mb=20)
    source_id, target_id = uuid.uuid4(), uuid.uuid4()
    source = await s3_driver.create(source_id, limits)
    target = await s3_driver.create(target_id, limits)
    writer = s3_client(source, http_session)
    big = os.urandom(MIB + MIB // 2)
    objects = {
        "hello.txt": (b"hello, world\n", "text/plain", None),
        "dir/big.bin": (big, "application/octet-stream", None),
        "with meta.json": (b'{"a": 1}', "application/json", {"owner": "ada", "stage": "2"}),
        "ünïcode/ключ.bin": (b"\x00\xff" * 100, "application/x-custom", None),
    }
    for key, (body, content_type, metadata) in objects.items():
        with large_bodies_allowed():
            await writer.put_object(
                source.bucket,
                key,
                io.BytesIO(body),
                len(body),
                content_type=content_type,
                metadata=metadata,  # type: ignore[arg-type]
            )

    export, chunks = await exported(s3_driver, source_id, "tar")
    assert chunks > len(big) // EXPORT_CHUNK_BYTES
    members = tar_members(export)
    assert set(members) == {*objects, S3_METADATA_MEMBER}
    assert members["dir/big.bin"] == big
    described = {line["key"]: line for line in json_lines(members[S3_METADATA_MEMBER])}
    assert described["with meta.json"]["metadata"] == {"owner": "ada", "stage": "2"}
    assert described["dir/big.bin"]["size"] == len(big)

    restorer = s3_client(target, http_session)
    with large_bodies_allowed():
        assert await restore_s3(export, restorer, target.bucket) == len(objects)
    before = await s3_snapshot(writer, source.bucket)
    after = await s3_snapshot(restorer, target.bucket)
    assert after == before
    assert before["with meta.json"][2] == {"x-amz-meta-owner": "ada", "x-amz-meta-stage": "2"}

    await s3_driver.suspend(source_id)
    # The client made before (S3 has no sessions: its next signed request is the test).
    with pytest.raises(S3Error) as refused:
        await writer.stat_object(source.bucket, "hello.txt")
    assert refused.value.code in {"InvalidAccessKeyId", "AccessDenied", "Forbidden"}
    with pytest.raises(S3Error) as refused:
        await s3_client(source, http_session).put_object(source.bucket, "new", io.BytesIO(b"x"), 1)
    assert refused.value.code in {"InvalidAccessKeyId", "AccessDenied"}
    again, _ = await exported(s3_driver, source_id, "tar")
    assert tar_members(again) == members | {S3_METADATA_MEMBER: members[S3_METADATA_MEMBER]}
    await s3_driver.suspend(source_id)
    await s3_driver.delete(source_id)
    assert not await s3_driver.exists(source_id)
    await s3_driver.suspend(source_id)
    await s3_driver.delete(target_id)


# -- NATS -----------------------------------------------------------------------------------------

NATS_LIMITS = NatsLimits(
    connections=3,
    streams=3,
    consumers=4,
    memory_storage_mb=2,
    disk_storage_mb=4,
    max_payload_kb=8,
)


async def nats_snapshot(
    client: NatsClient,
) -> dict[str, list[tuple[str, dict[str, str] | None, bytes]]]:
    """Every stream's messages: subject, headers and data, in order."""
    js = client.jetstream()
    snapshot: dict[str, list[tuple[str, dict[str, str] | None, bytes]]] = {}
    for info in await js.streams_info():
        name = info.config.name
        assert name is not None
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                message = await js.get_msg(name, seq)
            except NotFoundError:  # deleted: a gap in the sequence
                continue
            assert message.subject is not None
            messages.append((message.subject, message.headers, message.data or b""))
        snapshot[name] = messages
    return snapshot


async def test_nats_export_restores_every_stream_with_headers_into_a_fresh_account(
    queue_driver: NatsAccountDriver,
) -> None:
    source_id, target_id = uuid.uuid4(), uuid.uuid4()
    source = await queue_driver.create(source_id, NATS_LIMITS)
    target = await queue_driver.create(target_id, NATS_LIMITS)
    closed = asyncio.Event()
    writer = await connect_nats_tenant(source, closed)
    js = writer.jetstream()
    await js.add_stream(name="ORDERS", subjects=["orders.>"])
    await js.add_stream(name="EVENTS", subjects=["events.*"], max_msgs=1000)
    for n in range(40):
        await js.publish(
            f"orders.{n % 3}",
            bytes([n]) * (n * 50) + b"\x00\xff",
            headers={"Order-Id": str(n), "Trace": "t-1"},
        )
    await js.publish("events.plain", b"no headers")
    await js.publish("events.empty", b"")
    kv = await js.create_key_value(bucket="settings")
    # Written over 40 times: a run of deleted sequences longer than the export's read window.
    for shade in range(40):
        await kv.put("colour", f"shade {shade}".encode())
    await kv.put("colour", b"green")
    await js.delete_msg("ORDERS", 5)

    export, _ = await exported(queue_driver, source_id, "jsonl")
    lines = json_lines(export)
    assert {line["stream"] for line in lines if "config" in line} == {
        "ORDERS",
        "EVENTS",
        "KV_settings",
    }
    # The bucket keeps one value per key (history 1): the latest put.
    assert sum("data" in line for line in lines) == 39 + 2 + 1

    before = await nats_snapshot(writer)
    restorer = await connect_nats_tenant(target)
    counts = await restore_nats(export, restorer)
    assert counts == {"ORDERS": 39, "EVENTS": 2, "KV_settings": 1}
    after = await nats_snapshot(restorer)
    assert after == before
    restored_kv = await restorer.jetstream().key_value("settings")
    assert (await restored_kv.get("colour")).value == b"green"
    await restorer.close()

    await queue_driver.suspend(source_id)
    await asyncio.wait_for(closed.wait(), timeout=5)
    assert writer.is_closed
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_nats_tenant(source)
    again, _ = await exported(queue_driver, source_id, "jsonl")
    assert json_lines(again) == lines
    await queue_driver.suspend(source_id)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_nats_tenant(source)
    await queue_driver.delete(source_id)
    assert not await queue_driver.exists(source_id)
    await queue_driver.suspend(source_id)
    assert not await queue_driver.exists(source_id)
    await queue_driver.delete(target_id)


# -- webhooks -------------------------------------------------------------------------------------

TOKEN_KEY = b"k" * 32


@pytest.fixture
async def platform_redis(env: dict[str, str]) -> AsyncIterator[Redis]:
    client = Redis.from_url(env["SPINUP_REDIS_URL"])
    yield client
    await client.aclose()


def captured(body: bytes, path: str = "/") -> StoredRequest:
    text, encoding = encode_body(body)
    return StoredRequest(
        id=uuid.uuid4().hex,
        method="POST",
        path=path,
        query="a=1&a=2",
        query_params={"a": ["1", "2"]},
        headers=[("content-type", "application/octet-stream"), ("x-n", path)],
        body=text,
        body_encoding=encoding,
        size=len(body),
        received_at=dt.datetime.now(dt.UTC),
        client_ip="127.0.0.1",
    )


async def test_webhook_export_is_the_history_items_and_suspend_stops_capturing(
    platform_redis: Redis,
) -> None:
    webhooks = WebhookDriver(
        platform_redis, content_url="http://gateway.test/", token_key=TOKEN_KEY
    )
    rid = uuid.uuid4()
    credentials = await webhooks.create(rid, WebhookLimits(requests_kept=200, max_body_kb=64))
    key = receive_key_of_url(TOKEN_KEY, credentials.receive_url)
    assert key is not None
    for n in range(120):
        body = os.urandom(3000) if n % 2 else f'{{"n": {n}}}'.encode()
        assert await webhooks.record(key, captured(body, f"/p{n}")) is RecordOutcome.STORED

    export, chunks = await exported(webhooks, rid, "jsonl")
    assert chunks > 1
    history = await webhooks.history(rid, None, 200)
    assert export == b"".join(msgspec.json.encode(r) + b"\n" for r in history.requests)
    lines = json_lines(export)
    assert [line["seq"] for line in lines] == list(range(120, 0, -1))
    assert lines[0]["body_encoding"] == "base64"
    assert base64.b64decode(lines[0]["body"]) == base64.b64decode(history.requests[0].body)

    feed = await webhooks.subscribe(rid)
    await webhooks.suspend(rid)
    with pytest.raises(SpinupError) as refused:
        await webhooks.record(key, captured(b"late"))
    assert refused.value.code is ErrorCode.RESOURCE_GONE
    assert [event async for event in feed.events(keepalive_s=5)] == []
    assert feed.receiver_gone
    again, _ = await exported(webhooks, rid, "jsonl")
    assert again == export
    await webhooks.suspend(rid)
    await webhooks.delete(rid)
    assert not await webhooks.stored_keys(rid)
    await webhooks.suspend(rid)
    assert not await webhooks.stored_keys(rid)
    with pytest.raises(SpinupError) as missing:
        await anext(aiter(webhooks.export(rid, "jsonl")))
    assert missing.value.code is ErrorCode.NOT_FOUND
