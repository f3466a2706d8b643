"""Exporting a resource's data over HTTP, and the grace after expiry (docs/adr/0030).

The Postgres exports are restored with the real tools (``pg_restore``, ``psql``) into a fresh
database made by ``POST /db/new``, as its tenant, and compared row by row. Expiry uses a gateway
of its own whose anonymous plan is seconds long (as ``test_lifetime`` does) and the stack's
reaper: at expiry the credentials stop, the export still works during the grace, then the
database is gone.
"""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from bson import Decimal128, ObjectId
from mcp import Client
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials
from pymongo import AsyncMongoClient
from spinup_cli.main import main as spinup
from spinup_mcp.api import SpinupApi
from spinup_mcp.server import build_server

from devstack.stack import Stack
from shared.naming import tenant_name
from shared.postgres.binaries import bundled_bin_dir
from tests.e2e.conftest import (
    anonymous_tier,
    gateway_with_plans,
    new_email,
    new_resource,
    register,
    s3_client,
)
from tests.restore import json_lines, restore_mongo, restore_nats, restore_redis, restore_s3

pytestmark = pytest.mark.e2e

TTL_S = 5
GRACE_S = 12
PER_HOUR = 3

SCHEMA = """
CREATE SEQUENCE invoice_numbers START 1000;
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, photo bytea);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    invoice int NOT NULL DEFAULT nextval('invoice_numbers'),
    total numeric(10, 2) NOT NULL CHECK (total >= 0),
    note text
);
CREATE INDEX orders_by_customer ON orders (customer_id, total);
INSERT INTO customers (email, photo)
    SELECT 'c' || n || '@example.com', decode(repeat(lpad(to_hex(n), 2, '0'), 5000), 'hex')
    FROM generate_series(1, 50) n;
INSERT INTO orders (customer_id, total, note)
    SELECT 1 + n % 50, n / 7.0, repeat('x', n % 300) FROM generate_series(1, 3000) n;
"""


async def snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    """What a restore must reproduce: every row, the sequence's position, the index."""
    return {
        "customers": [tuple(r) for r in await conn.fetch("SELECT * FROM customers ORDER BY id")],
        "orders": [tuple(r) for r in await conn.fetch("SELECT * FROM orders ORDER BY id")],
        "sequence": await conn.fetchval("SELECT last_value FROM invoice_numbers"),
        "index": await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'orders_by_customer'"
        ),
    }


async def download(
    http: httpx.AsyncClient, token: str, target: Path, fmt: str | None = None
) -> httpx.Response:
    """``GET /resources/{token}/export`` streamed into ``target``; the response (body read)."""
    params = {"format": fmt} if fmt else None
    async with http.stream("GET", f"/resources/{token}/export", params=params) as response:
        if response.status_code == 200:
            with target.open("wb") as out:
                async for piece in response.aiter_bytes():
                    out.write(piece)
        else:
            await response.aread()
    return response


def restore(tool: list[str], url: str, dump: Path) -> None:
    """Run a restore tool as the new database's tenant (its own connection URL)."""
    done = subprocess.run(  # noqa: S603  (the test's own arguments)
        [*tool, f"--dbname={url}", f"--file={dump}" if tool[0].endswith("psql") else str(dump)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# The server's own major (a custom-format dump is read by pg_restore of its major or later).
PG_BIN = bundled_bin_dir()
PG_RESTORE = [
    str(PG_BIN / "pg_restore"),
    "--no-owner",
    "--no-acl",
    "--exit-on-error",
    "--single-transaction",
]
PSQL = [
    str(PG_BIN / "psql"),
    "--no-psqlrc",
    "--quiet",
    "-v",
    "ON_ERROR_STOP=1",
    "--single-transaction",
]


async def restored_equal(
    http: httpx.AsyncClient, expected: dict[str, Any], tool: list[str], dump: Path
) -> None:
    """Restore ``dump`` into a fresh database of its own and compare it to ``expected``."""
    fresh = await new_resource(http, "db")
    try:
        await asyncio.to_thread(restore, tool, fresh["connection_url"], dump)
        conn = await asyncpg.connect(fresh["connection_url"])
        try:
            assert await snapshot(conn) == expected
        finally:
            await conn.close()
    finally:
        await http.delete(f"/resources/{fresh['token']}")


async def test_a_postgres_export_restores_row_by_row_in_both_formats(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    made = await new_resource(http, "db", json={"name": "shop"})
    conn = await asyncpg.connect(made["connection_url"])
    try:
        await conn.execute(SCHEMA)
        expected = await snapshot(conn)
    finally:
        await conn.close()

    custom = await download(http, made["token"], tmp_path / "shop.dump")
    assert custom.status_code == 200, custom.text
    assert custom.headers["content-type"] == "application/octet-stream"
    assert custom.headers["content-disposition"] == 'attachment; filename="shop.dump"'
    assert (tmp_path / "shop.dump").read_bytes().startswith(b"PGDMP")
    await restored_equal(http, expected, PG_RESTORE, tmp_path / "shop.dump")

    sql = await download(http, made["token"], tmp_path / "shop.sql", "sql")
    assert sql.status_code == 200, sql.text
    assert sql.headers["content-type"].startswith("application/sql")
    assert "CREATE TABLE public.orders" in (tmp_path / "shop.sql").read_text()
    await restored_equal(http, expected, PSQL, tmp_path / "shop.sql")
    await http.delete(f"/resources/{made['token']}")


async def test_the_owning_account_exports_by_id_and_nobody_else_can(
    http: httpx.AsyncClient,
) -> None:
    owner = {"Authorization": f"Bearer {await register(http, new_email('export'))}"}
    other = {"Authorization": f"Bearer {await register(http, new_email('other'))}"}
    made = await new_resource(http, "db", headers=owner)
    mine = await http.get(f"/resources/{made['id']}/export", headers=owner)
    assert mine.status_code == 200, mine.text
    assert mine.content.startswith(b"PGDMP")
    theirs = await http.get(f"/resources/{made['id']}/export", headers=other)
    assert theirs.status_code == 404, theirs.text
    anonymous = await http.get(f"/resources/{made['id']}/export")
    assert anonymous.status_code == 401, anonymous.text
    await http.delete(f"/resources/{made['token']}")


async def test_a_bad_format_is_a_400_naming_the_formats(http: httpx.AsyncClient) -> None:
    made = await new_resource(http, "db")
    refused = await http.get(f"/resources/{made['token']}/export", params={"format": "csv"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_request"
    assert "custom (default), sql" in refused.json()["message"]
    unknown = await http.get("/resources/spn_nothing/export")
    assert unknown.status_code == 404, unknown.text
    await http.delete(f"/resources/{made['token']}")
    deleted = await http.get(f"/resources/{made['token']}/export")
    assert deleted.status_code == 404, deleted.text


async def test_a_stack_exports_one_backing_resource_at_a_time_with_its_token(
    http: httpx.AsyncClient, stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deploy may fail at once: only the stack resource and its backing database matter.
    dockerfile = b"FROM spinup/base:bookworm\nRUN exit 1\n"
    response = await http.post(
        "/deploy/new",
        files={"Dockerfile": ("Dockerfile", dockerfile)},
        data={"resources": "postgres"},
    )
    assert response.status_code == 202, response.text
    created = response.json()
    token = created["token"]
    try:
        (name,) = created["resources"]
        backing = (await http.get(f"/resources/{token}")).json()["stack"]["resources"][name]
        conn = await asyncpg.connect(backing["connection_url"])
        await conn.execute(SCHEMA)
        expected = await snapshot(conn)
        await conn.close()

        # Without ?resource= a 400, with a name it lacks a 404: both list what it has.
        for params, status, error in (
            ({}, 400, "invalid_request"),
            ({"resource": "nope"}, 404, "not_found"),
        ):
            refused = await http.get(f"/resources/{token}/export", params=params)
            assert refused.status_code == status, refused.text
            assert refused.json()["error"] == error
            assert f"{name} (postgres)" in refused.json()["message"]
        # Named, with the stack's own token: the backing database, restored whole.
        dump = tmp_path / "backing.dump"
        async with http.stream(
            "GET", f"/resources/{token}/export", params={"resource": name}
        ) as exported:
            assert exported.status_code == 200
            assert f'filename="{name}.dump"' in exported.headers["content-disposition"]
            dump.write_bytes(await exported.aread())
        await restored_equal(http, expected, PG_RESTORE, dump)
        # The CLI and the MCP tool name it the same way.
        monkeypatch.setenv("SPINUP_URL", stack.gateway_url)
        monkeypatch.setenv("HOME", str(tmp_path))
        by_cli = tmp_path / "cli.dump"
        args = ["export", token, "--resource", name, "-o", str(by_cli)]
        assert await asyncio.to_thread(spinup, args) == 0
        assert by_cli.read_bytes().startswith(b"PGDMP")
        async with Client(build_server(SpinupApi(base_url=stack.gateway_url))) as client:
            result = await client.call_tool(
                "export_resource", {"resource": token, "backing_resource": name}
            )
            assert not result.is_error, result.content
            answer: dict[str, Any] = result.structured_content
            assert answer["kind"] == "postgres", answer
            assert answer["url"].endswith(f"/resources/{token}/export?resource={name}")
            whole = await client.call_tool("export_resource", {"resource": token})
            assert name in whole.structured_content["note"]
            unknown = await client.call_tool(
                "export_resource", {"resource": token, "backing_resource": "nope"}
            )
            assert unknown.is_error
            assert unknown.structured_content["error"] == "not_found"
            assert name in unknown.structured_content["message"]
            # The same database, queried as the stack's app would see it.
            queried = await client.call_tool(
                "query_database",
                {
                    "resource": token,
                    "backing_resource": name,
                    "sql": "SELECT count(*) AS customers FROM customers",
                },
            )
            assert not queried.is_error, queried.content
            assert queried.structured_content["rows"] == [[len(expected["customers"])]]
    finally:
        await http.delete(f"/resources/{token}")
    # ?resource= means a stack's backing resource: on anything else it is a 400.
    made = await new_resource(http, "cache")
    not_a_stack = await http.get(f"/resources/{made['token']}/export", params={"resource": name})
    assert not_a_stack.status_code == 400, not_a_stack.text
    await http.delete(f"/resources/{made['token']}")


# -- every other kind: exported over HTTP, restored with the field's own client -------------


async def exported(http: httpx.AsyncClient, token: str, media_type: str) -> bytes:
    response = await http.get(f"/resources/{token}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media_type)
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    return response.content


REDIS_KEYS = (b"blob", b"session", b"user:1", b"queue", b"tags", b"scores", b"events")


async def redis_contents(client: aioredis.Redis, prefix: str) -> dict[bytes, Any]:
    """Each test key (a tenant may not SCAN) with its type, value and whether it expires."""
    found: dict[bytes, Any] = {}
    for name in REDIS_KEYS:
        key = prefix.encode() + name
        kind = (await client.type(key)).decode()
        value: Any
        match kind:
            case "string":
                value = await client.get(key)
            case "hash":
                value = await client.hgetall(key)
            case "list":
                value = await client.lrange(key, 0, -1)
            case "set":
                value = await client.smembers(key)
            case "zset":
                value = await client.zrange(key, 0, -1, withscores=True)
            case _:
                value = list(await client.xrange(key))
        found[name] = (kind, value, await client.pttl(key) > 0)
    return found


async def test_a_redis_export_restores_into_a_fresh_cache(http: httpx.AsyncClient) -> None:
    source, target = await new_resource(http, "cache"), await new_resource(http, "cache")
    clients = [aioredis.Redis.from_url(r["connection_url"]) for r in (source, target)]
    prefixes = [r["credentials"]["key_prefix"] for r in (source, target)]
    try:
        writer, p = clients[0], prefixes[0]
        await writer.set(f"{p}blob", bytes(range(256)))
        await writer.set(f"{p}session", "x", px=600_000)
        await writer.hset(f"{p}user:1", mapping={"name": "Ada", b"\xff": b"\x00"})
        await writer.rpush(f"{p}queue", "a", "b", "a")
        await writer.sadd(f"{p}tags", "x", "y")
        await writer.zadd(f"{p}scores", {"ada": 1.5, "bob": -2})
        await writer.xadd(f"{p}events", {"kind": "signup"}, id="5-1")
        export = await exported(http, source["token"], "application/x-ndjson")
        assert await restore_redis(export, clients[1], prefixes[1]) == 7
        assert await redis_contents(clients[1], prefixes[1]) == await redis_contents(
            clients[0], prefixes[0]
        )
    finally:
        for client in clients:
            await client.aclose()
        for made in (source, target):
            await http.delete(f"/resources/{made['token']}")


async def test_a_mongo_export_restores_into_a_fresh_database(http: httpx.AsyncClient) -> None:
    source, target = await new_resource(http, "nosql"), await new_resource(http, "nosql")
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(r["connection_url"], serverSelectionTimeoutMS=5000)
        for r in (source, target)
    ]
    try:
        db = clients[0].get_default_database()
        await db.people.insert_many(
            [
                {"_id": ObjectId(), "name": "Ada", "born": datetime(1815, 12, 10, tzinfo=UTC)},
                {"_id": ObjectId(), "name": "Bob", "tags": ["x", {"deep": b"\x00\x01"}]},
            ]
        )
        await db.people.create_index([("name", 1)], unique=True, name="by_name")
        await db.orders.insert_many(
            [{"_id": n, "total": Decimal128(f"{n}.50")} for n in range(300)]
        )
        export = await exported(http, source["token"], "application/x-tar")
        restored = clients[1].get_default_database()
        assert await restore_mongo(export, restored) == {"people": 2, "orders": 300}
        for name in ("people", "orders"):
            expected = await db[name].find().sort("_id").to_list(None)
            assert await restored[name].find().sort("_id").to_list(None) == expected
        assert "by_name" in await restored.people.index_information()
    finally:
        for client in clients:
            await client.close()
        for made in (source, target):
            await http.delete(f"/resources/{made['token']}")


async def test_an_s3_export_restores_into_a_fresh_bucket(http: httpx.AsyncClient) -> None:
    source, target = await new_resource(http, "storage"), await new_resource(http, "storage")
    objects = {"a.txt": b"hello", "photos/cat.jpg": bytes(range(256)) * 1000, "\u00e9t\u00e9": b""}
    async with aiohttp.ClientSession() as session:
        reader, writer = s3_client(source, session), s3_client(target, session)
        bucket, fresh = source["credentials"]["bucket"], target["credentials"]["bucket"]
        try:
            for key, body in objects.items():
                await reader.put_object(
                    bucket,
                    key,
                    io.BytesIO(body),
                    len(body),
                    content_type="image/jpeg" if key.endswith(".jpg") else "text/plain",
                    metadata={"owner": "ada"},
                )
            export = await exported(http, source["token"], "application/x-tar")
            assert await restore_s3(export, writer, fresh) == len(objects)
            for key, body in objects.items():
                got = await writer.get_object(fresh, key)
                assert await got.read() == body
                got.release()
                about = await writer.stat_object(fresh, key)
                assert about.content_type == (
                    "image/jpeg" if key.endswith(".jpg") else "text/plain"
                )
                assert (about.metadata or {}).get("x-amz-meta-owner") == "ada"
        finally:
            for made in (source, target):
                await http.delete(f"/resources/{made['token']}")


async def test_a_nats_export_restores_into_a_fresh_account(http: httpx.AsyncClient) -> None:
    source, target = await new_resource(http, "queue"), await new_resource(http, "queue")
    clients = [NatsClient(), NatsClient()]
    try:
        for client, made in zip(clients, (source, target), strict=True):
            creds = RawCredentials(made["credentials"]["creds"])
            await client.connect(made["connection_url"], user_credentials=creds)
        js = clients[0].jetstream()
        await js.add_stream(name="ORDERS", subjects=["orders.>"])
        for n in range(50):
            await js.publish(f"orders.{n}", f"order {n}".encode(), headers={"Order-Id": str(n)})
        export = await exported(http, source["token"], "application/x-ndjson")
        assert await restore_nats(export, clients[1]) == {"ORDERS": 50}
        restored = clients[1].jetstream()
        for n in (1, 25, 50):
            message = await restored.get_msg("ORDERS", n)
            assert (message.subject, message.data) == (f"orders.{n - 1}", f"order {n - 1}".encode())
            assert (message.headers or {}).get("Order-Id") == str(n - 1)
    finally:
        for client in clients:
            await client.close()
        for made in (source, target):
            await http.delete(f"/resources/{made['token']}")


async def test_a_webhook_export_is_its_captured_requests(http: httpx.AsyncClient) -> None:
    receiver = await new_resource(http, "webhook")
    url = receiver["credentials"]["receive_url"]
    for n in range(3):
        sent = await http.post(f"{url}/hook/{n}", content=f"body {n}".encode())
        assert sent.status_code == 200, sent.text
    await http.put(url, content=bytes([0, 255]))
    export = json_lines(await exported(http, receiver["token"], "application/x-ndjson"))
    listed = (await http.get(f"/webhook/{receiver['token']}/requests")).json()["requests"]
    assert [line["id"] for line in export] == [item["id"] for item in listed]
    assert [(line["method"], line["body"], line["body_encoding"]) for line in export] == [
        (item["method"], item["body"], item["body_encoding"]) for item in listed
    ]
    await http.delete(f"/resources/{receiver['token']}")


# -- expiry, grace and limits: a gateway with a seconds-long plan -----------------------------


def seconds_long_grace(plans: dict[str, Any]) -> None:
    tier = anonymous_tier(plans)
    tier["lifetime"] = {
        "ttl_min_seconds": TTL_S,
        "ttl_max_seconds": 600,
        "total_max_seconds": 1200,
        "extensions": 3,
        "export_grace_seconds": GRACE_S,
    }
    tier["export"] = {"per_hour": PER_HOUR, "concurrent": 1}


#: What an ended session raises on its next query: the server's FATAL, a closed socket, or
#: asyncpg's own state error when the termination arrived between two messages.
ENDED_SESSION = (
    asyncpg.PostgresError,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@pytest.fixture(scope="module")
def grace_gateway_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gateway_with_plans(stack, tmp_path_factory.mktemp("export"), seconds_long_grace) as gw:
        yield str(gw.url)


@pytest.fixture
async def short(grace_gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=grace_gateway_url, timeout=60) as client:
        yield client


@pytest.fixture
async def notified() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A notify receiver on 127.0.0.2 (the one address the test stack lets through, as in
    test_lifetime): its URL, and the JSON bodies it received."""
    bodies: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.2", 0).start()
    try:
        yield f"http://127.0.0.2:{runner.addresses[0][1]}/hook", bodies
    finally:
        await runner.cleanup()


async def can_log_in(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (asyncpg.PostgresError, OSError):
        return False
    await conn.close()
    return True


async def test_at_expiry_credentials_stop_export_works_during_grace_then_it_is_gone(
    short: httpx.AsyncClient,
    customer_admin: asyncpg.Connection,
    tmp_path: Path,
    notified: tuple[str, list[dict[str, Any]]],
) -> None:
    hook, bodies = notified
    made = await new_resource(short, "db", json={"ttl_seconds": TTL_S, "notify_url": hook})
    token, url = made["token"], made["connection_url"]
    conn = await asyncpg.connect(url)
    await conn.execute(SCHEMA)
    expected = await snapshot(conn)

    # Expiry: the reaper suspends it; the open session is cut and new logins are refused.
    deadline = time.monotonic() + TTL_S + 15
    while (shown := await short.get(f"/resources/{token}")).status_code == 200:
        assert time.monotonic() < deadline, shown.text
        await asyncio.sleep(0.2)
    assert shown.status_code == 410, shown.text
    assert shown.json()["error"] == "resource_gone"
    assert "/export" in shown.json()["agent_action"]
    # It names when the grace ends: its expiry plus the plan's grace, still ahead.
    kept_until = re.search(r"before (\S+), then", shown.json()["agent_action"])
    assert kept_until, shown.text
    grace_ends = datetime.fromisoformat(made["expires_at"]) + timedelta(seconds=GRACE_S)
    assert datetime.fromisoformat(kept_until.group(1)) == grace_ends, shown.text
    assert grace_ends > datetime.now(UTC)
    assert not await can_log_in(url)
    with pytest.raises(ENDED_SESSION):
        await conn.fetchval("SELECT 1")
    await conn.close()
    # Nothing else about it can change now: extending says to export.
    extend = await short.post(f"/resources/{token}/extend", json={"ttl_seconds": 60})
    assert extend.status_code == 410, extend.text
    assert "/export" in extend.json()["agent_action"]
    # resource.expired says until when the export works, to the notify URL and as SSE.
    while not (expired := [b for b in bodies if b["type"] == "resource.expired"]):
        assert time.monotonic() < deadline + 15, bodies
        await asyncio.sleep(0.2)
    assert expired[0]["data"]["export_until"] > expired[0]["timestamp"]
    async with short.stream("GET", f"/resources/{token}/events") as events:
        text = (await asyncio.wait_for(events.aread(), timeout=30)).decode()
    assert "event: resource.expired" in text
    assert "export_until" in text

    # During the grace the export works with the token and restores whole.
    dump = tmp_path / "kept.dump"
    exported = await download(short, token, dump)
    assert exported.status_code == 200, exported.text
    await restored_equal(short, expected, PG_RESTORE, dump)

    # After the grace: deleted for good (GET no longer offers an export, nor does export).
    database = tenant_name(UUID(made["id"]))
    deadline = time.monotonic() + GRACE_S + 20
    while (gone := await short.get(f"/resources/{token}")).status_code != 410 or (
        "/export" in (gone.json().get("agent_action") or "")
    ):
        assert time.monotonic() < deadline, "still kept long after its grace"
        await asyncio.sleep(0.5)
    assert gone.json()["error"] == "resource_gone", gone.text
    late = await short.get(f"/resources/{token}/export")
    assert late.status_code == 410, late.text
    assert not await customer_admin.fetchval(
        "SELECT 1 FROM pg_database WHERE datname = $1", database
    )


async def test_exports_past_the_plan_are_429_with_retry_after(
    short: httpx.AsyncClient, tmp_path: Path
) -> None:
    made = await new_resource(short, "db")
    token = made["token"]
    conn = await asyncpg.connect(made["connection_url"])
    # 64 MB of dump (a few KB on disk: TOAST compresses it, the dump does not), far more than
    # the socket buffers and the window hold: the first export stays open until it is read.
    await conn.execute(
        "CREATE TABLE big AS SELECT n, repeat('x', 1 << 20) AS filler FROM generate_series(1, 64) n"
    )
    await conn.close()

    # One at a time: a second export while the first is open (not read) is refused.
    async with short.stream("GET", f"/resources/{token}/export") as first:
        assert first.status_code == 200
        busy = await short.get(f"/resources/{token}/export")
        assert busy.status_code == 429, busy.text
        assert busy.json()["error"] == "rate_limited"
        assert int(busy.headers["retry-after"]) > 0
    # The gateway learns of the hang-up asynchronously; until then the slot is still taken
    # (and a refusal for that spends nothing of the hourly count).
    deadline = time.monotonic() + 30
    while (done := await download(short, token, tmp_path / "0.dump")).status_code == 429:
        assert "already running" in done.json()["message"], done.text
        assert time.monotonic() < deadline, "the hung-up export still holds its slot"
        await asyncio.sleep(0.2)
    assert done.status_code == 200, done.text
    # The first one counted; PER_HOUR in all, then 429 until an hour has passed.
    for n in range(1, PER_HOUR - 1):
        done = await download(short, token, tmp_path / f"{n}.dump")
        assert done.status_code == 200, done.text
    over = await short.get(f"/resources/{token}/export")
    assert over.status_code == 429, over.text
    assert "per_hour" in over.json()["message"]
    assert int(over.headers["retry-after"]) > 60
    await short.delete(f"/resources/{token}")


# -- the CLI and the MCP tool --------------------------------------------------------------


def test_spinup_export_writes_the_file_and_sql_to_stdout(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SPINUP_URL", stack.gateway_url)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("SPINUP_TOKEN", raising=False)
    made = httpx.post(f"{stack.gateway_url}/db/new", json={"name": "cli"}, timeout=60).json()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    # Without -o: the server's file name, here.
    assert spinup(["export", made["token"]]) == 0
    assert "cli.dump" in capsys.readouterr().out
    assert (tmp_path / "cli.dump").read_bytes().startswith(b"PGDMP")
    assert spinup(["export", made["token"], "--format", "sql", "-o", "-"]) == 0
    assert "PostgreSQL database dump" in capsys.readouterr().out
    # A refusal is the server's message, and no file is left behind.
    assert spinup(["export", made["token"], "--format", "csv", "-o", "bad.csv"]) == 1
    assert "custom (default), sql" in capsys.readouterr().err
    assert not (tmp_path / "bad.csv").exists()
    httpx.delete(f"{stack.gateway_url}/resources/{made['token']}", timeout=60)


async def test_the_mcp_tool_export_resource_gives_a_url_that_downloads_it(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    made = await new_resource(http, "db")
    async with Client(build_server(SpinupApi(base_url=stack.gateway_url))) as client:
        result = await client.call_tool("export_resource", {"resource": made["token"]})
        assert not result.is_error, result.content
        answer: dict[str, Any] = result.structured_content
        assert answer["kind"] == "postgres"
        assert "pg_restore" in answer["restore"]
        assert answer["url"] in answer["curl"]
        gone = await client.call_tool("export_resource", {"resource": "spn_nothing"})
        assert gone.is_error
    downloaded = await http.get(answer["url"])
    assert downloaded.status_code == 200, downloaded.text
    assert downloaded.content.startswith(b"PGDMP")
    await http.delete(f"/resources/{made['token']}")
