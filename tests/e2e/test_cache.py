"""A user's view: create caches over HTTP, use them with redis-py, try to break isolation.

The Redis plan limit (``memory_mb``) has no per-user cap in Redis, so it is not tested here as
enforced: the usage sweep that will enforce it does not exist yet.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection
from redis.exceptions import AuthenticationError, NoPermissionError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.lock import Lock

from redis_provisioner.driver import VETTED_SCRIPTS
from shared.testing.polling import eventually
from tests.e2e.conftest import SHORT_TTL_S, new_resource

pytestmark = pytest.mark.e2e


def sha1_of(script: str) -> str:
    """The name Redis gives a script."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def client_of(cache: dict[str, Any]) -> aioredis.Redis:
    return aioredis.Redis.from_url(cache["connection_url"], decode_responses=True)


async def confirmed(request: Awaitable[object], listener: PubSub) -> object:
    """Send a (p)subscribe and read the server's answer, where a refusal shows up."""
    await request
    return await listener.get_message(timeout=1)


async def ping(connection: Connection) -> object:
    await connection.send_command("PING")
    return await connection.read_response()


@pytest.fixture
async def redis_admin(env: dict[str, str]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"], decode_responses=True)
    yield client
    await client.aclose()


async def user_and_keys_gone(admin: aioredis.Redis, cache: dict[str, Any]) -> bool:
    """The user at once; the keys within redis-provisioner's next removal pass (1 s in tests)."""
    credentials = cache["credentials"]
    if await admin.execute_command("ACL", "GETUSER", credentials["username"]) is not None:
        return False

    async def keys_gone() -> bool:
        return [key async for key in admin.scan_iter(match=f"{credentials['key_prefix']}*")] == []

    return await eventually(keys_gone, within=10)


async def test_new_cache_answers_with_everything_a_user_needs(http: httpx.AsyncClient) -> None:
    response = await http.post("/cache/new")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["kind"] == "redis"
    assert body["token"].startswith("spn_")
    assert set(body["limits"]) == {"memory_mb", "expires_in"}
    credentials = body["credentials"]
    assert credentials["type"] == "redis"
    assert credentials["connection_url"] == body["connection_url"]
    name = "t_" + uuid.UUID(body["id"]).hex
    assert credentials["username"] == name
    assert credentials["key_prefix"] == f"{name}:"
    assert body["connection_url"] == (
        f"redis://{name}:{credentials['password']}@{credentials['host']}:{credentials['port']}/0"
    )


async def test_two_caches_each_work_and_keep_their_own_data(http: httpx.AsyncClient) -> None:
    a, b = await new_resource(http, "cache"), await new_resource(http, "cache")
    for cache, value in ((a, "from a"), (b, "from b")):
        client = client_of(cache)
        prefix = cache["credentials"]["key_prefix"]
        assert await client.set(f"{prefix}note", value)
        assert await client.rpush(f"{prefix}list", value) == 1
        await client.aclose()
    for cache, value in ((a, "from a"), (b, "from b")):
        client = client_of(cache)
        prefix = cache["credentials"]["key_prefix"]
        assert await client.get(f"{prefix}note") == value
        assert await client.lrange(f"{prefix}list", 0, -1) == [value]
        await client.aclose()


@pytest.fixture(scope="module")
async def two_tenants(http: httpx.AsyncClient) -> AsyncIterator[tuple[dict[str, Any], ...]]:
    """Tenant A (the attacker) and tenant B, who holds a key and listens on a channel."""
    a, b = await new_resource(http, "cache"), await new_resource(http, "cache")
    victim = client_of(b)
    await victim.set(f"{b['credentials']['key_prefix']}secret", "b's secret")
    listener = victim.pubsub()
    await listener.subscribe(f"{b['credentials']['key_prefix']}events")
    await listener.get_message(timeout=1)
    yield a, b
    await listener.aclose()
    await victim.aclose()


# What tenant A tries against tenant B and the whole server; {b} is B's prefix, {a} A's.
ESCAPES: list[tuple[str, ...]] = [
    ("GET", "{b}secret"),
    ("SET", "{b}secret", "overwritten"),
    ("DEL", "{b}secret"),
    ("EXISTS", "{b}secret"),
    ("TYPE", "{b}secret"),
    ("RENAME", "{b}secret", "{a}stolen"),
    ("SUNIONSTORE", "{a}stolen", "{b}secret"),
    ("GET", "unprefixed"),
    ("SET", "unprefixed", "x"),
    ("SCAN", "0"),
    ("KEYS", "*"),
    ("RANDOMKEY",),
    ("DBSIZE",),
    ("INFO",),
    ("INFO", "keyspace"),
    ("EVAL", "return redis.call('GET', KEYS[1])", "1", "{a}k"),
    ("EVAL_RO", "return 1", "0"),
    # Only scripts already in the cache run (ADR 0025): none can be added, flushed or killed.
    ("SCRIPT", "LOAD", "return 1"),
    ("SCRIPT", "FLUSH"),
    ("SCRIPT", "KILL"),
    ("SCRIPT", "EXISTS", "{release_sha}"),
    ("SCRIPT", "DEBUG", "YES"),
    # redis-py's Lock release, vetted and loaded, with B's key declared.
    ("EVALSHA", "{release_sha}", "1", "{b}secret", "token"),
    ("EVALSHA_RO", "{release_sha}", "1", "{b}secret", "token"),
    ("FCALL", "f", "0"),
    # The usage sweep's own function (ADR 0060), loaded by the admin: not a tenant's to call.
    ("FCALL_RO", "spinup_weigh_keys", "1", "{b}secret"),
    ("FCALL_RO", "spinup_weigh_keys", "1", "{a}k"),
    # The platform's own key in the customer Redis (ADR 0053): naming B for removal would have
    # the next pass unlink B's keys.
    ("SADD", "spinup:deleted-tenants", "{b_user}"),
    ("SMEMBERS", "spinup:deleted-tenants"),
    ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() return 1 end)"),
    ("FUNCTION", "LIST"),
    ("FUNCTION", "FLUSH"),
    ("SELECT", "1"),
    ("SWAPDB", "0", "1"),
    ("MOVE", "{a}k", "1"),
    ("COPY", "{a}k", "{a}c", "DB", "1"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "maxmemory", "1"),
    ("SORT", "{a}list", "BY", "{b}*"),
    ("OBJECT", "ENCODING", "{a}k"),
    # MEMORY USAGE is key-checked (ADR 0025): its own keys only; the rest of MEMORY stays out.
    ("MEMORY", "USAGE", "{b}secret"),
    ("MEMORY", "STATS"),
    ("MEMORY", "DOCTOR"),
    ("MEMORY", "MALLOC-STATS"),
    ("MEMORY", "PURGE"),
    ("SCAN", "0", "MATCH", "{a}*"),
    ("PUBLISH", "{b}events", "spoofed"),
    ("SPUBLISH", "{b}events", "spoofed"),
    ("PUBSUB", "CHANNELS"),
    ("PUBSUB", "NUMSUB", "{b}events"),
    ("ACL", "LIST"),
    ("ACL", "USERS"),
    ("ACL", "GETUSER", "{b_user}"),
    ("ACL", "LOG"),
    ("ACL", "SETUSER", "{a_user}", "~*"),
    ("CLIENT", "LIST"),
    ("CLIENT", "INFO"),
    ("CLIENT", "KILL", "USER", "{b_user}"),
    ("MONITOR",),
    ("SLOWLOG", "GET"),
    ("LATENCY", "LATEST"),
    ("LASTSAVE",),
    ("ROLE",),
    ("WAIT", "0", "0"),
    ("SAVE",),
    ("BGREWRITEAOF",),
    ("SHUTDOWN",),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("MODULE", "LIST"),
    ("MIGRATE", "127.0.0.1", "1", "{b}secret", "0", "1000"),
]


@pytest.mark.parametrize("escape", ESCAPES, ids=lambda escape: " ".join(escape[:2]))
async def test_tenant_command_against_another_tenant_or_the_server_is_refused(
    two_tenants: tuple[dict[str, Any], ...], escape: tuple[str, ...]
) -> None:
    a, b = two_tenants
    names = {
        "a": a["credentials"]["key_prefix"],
        "b": b["credentials"]["key_prefix"],
        "a_user": a["credentials"]["username"],
        "b_user": b["credentials"]["username"],
        "release_sha": sha1_of(Lock.LUA_RELEASE_SCRIPT),
    }
    attacker = client_of(a)
    try:
        with pytest.raises(NoPermissionError):
            await attacker.execute_command(*(word.format(**names) for word in escape))
    finally:
        await attacker.aclose()


# Scripts a tenant cannot load but runs if they are in the cache: each takes what it touches from
# ARGV (undeclared keys) or touches the keyspace as a whole; {b} is B's prefix.
HOSTILE_SCRIPTS: list[tuple[str, str]] = [
    ("undeclared key of B", "return redis.call('GET', ARGV[1] .. 'secret')"),
    ("write B's key", "return redis.call('SET', ARGV[1] .. 'secret', 'overwritten')"),
    ("delete B's key", "return redis.call('DEL', ARGV[1] .. 'secret')"),
    ("KEYS", "return redis.call('KEYS', '*')"),
    ("SCAN", "return redis.call('SCAN', '0')"),
    ("DBSIZE", "return redis.call('DBSIZE')"),
    ("INFO", "return redis.call('INFO')"),
    ("FLUSHALL", "return redis.call('FLUSHALL')"),
    ("CONFIG", "return redis.call('CONFIG', 'GET', '*')"),
    ("ACL", "return redis.call('ACL', 'LIST')"),
    ("SELECT", "return redis.call('SELECT', '1')"),
    ("PUBLISH to B", "return redis.call('PUBLISH', ARGV[1] .. 'events', 'spoofed')"),
    ("EVAL inside", "return redis.call('EVAL', 'return 1', '0')"),
    ("pcall hides nothing", "local r = redis.pcall('GET', ARGV[1] .. 'secret') return r.err"),
]


# The ACL's words inside a script; "not allowed from script" is the noscript flag (CONFIG, ACL).
ACL_REFUSAL = re.compile(r"no permissions|can't (run|access|publish)|not allowed from script")


@pytest.mark.parametrize(
    ("what", "script"), HOSTILE_SCRIPTS, ids=[row[0] for row in HOSTILE_SCRIPTS]
)
async def test_a_cached_script_runs_with_the_callers_permissions_only(
    two_tenants: tuple[dict[str, Any], ...],
    redis_admin: aioredis.Redis,
    what: str,
    script: str,
) -> None:
    a, b = two_tenants
    b_prefix = b["credentials"]["key_prefix"]
    # Only the admin can put a script in the cache; suppose one that trusts ARGV got there.
    sha = await redis_admin.script_load(script)
    attacker = client_of(a)
    try:
        if what == "pcall hides nothing":
            # pcall returns the error instead of raising it: it must be the ACL's.
            assert ACL_REFUSAL.search(str(await attacker.evalsha(sha, 0, b_prefix)))
        else:
            with pytest.raises((NoPermissionError, ResponseError), match=ACL_REFUSAL):
                await attacker.evalsha(sha, 0, b_prefix)
    finally:
        await attacker.aclose()
    victim = client_of(b)
    assert await victim.get(f"{b_prefix}secret") == "b's secret"
    await victim.aclose()


async def test_only_the_vetted_scripts_are_in_the_cache_for_tenants(
    two_tenants: tuple[dict[str, Any], ...], redis_admin: aioredis.Redis
) -> None:
    a, _ = two_tenants
    vetted = [sha1_of(script) for script in VETTED_SCRIPTS]
    assert await redis_admin.script_exists(*vetted) == [True] * len(vetted)
    attacker = client_of(a)
    try:
        # A script of its own, by SHA: never loaded, so there is nothing to run.
        with pytest.raises(NoScriptError):
            await attacker.evalsha(sha1_of(f"return '{uuid.uuid4().hex}'"), 0)
    finally:
        await attacker.aclose()


async def test_vetted_scripts_come_back_after_the_cache_is_emptied(
    two_tenants: tuple[dict[str, Any], ...], redis_admin: aioredis.Redis
) -> None:
    a, _ = two_tenants
    # What a server restart does to the cache; redis-provisioner loads them again.
    await redis_admin.script_flush()

    async def lock_works() -> bool:
        tenant = client_of(a)
        try:
            async with tenant.lock(f"{a['credentials']['key_prefix']}lock", timeout=5):
                pass
        except (NoPermissionError, NoScriptError):
            return False
        finally:
            await tenant.aclose()
        return True

    assert await eventually(lock_works, within=15)


async def test_debug_is_off_for_everyone_and_denied_to_tenants_too(
    two_tenants: tuple[dict[str, Any], ...], redis_admin: aioredis.Redis
) -> None:
    a, _ = two_tenants
    words = ["DEBUG", "OBJECT", f"{a['credentials']['key_prefix']}k"]
    attacker = client_of(a)
    try:
        # The server refuses it before it even looks at the ACL (enable-debug-command no).
        with pytest.raises(ResponseError, match="not allowed"):
            await attacker.execute_command(*words)
    finally:
        await attacker.aclose()
    verdict = await redis_admin.execute_command(
        "ACL", "DRYRUN", a["credentials"]["username"], *words
    )
    assert "no permissions" in verdict


async def test_tenant_cannot_subscribe_to_another_tenants_channels_or_patterns(
    two_tenants: tuple[dict[str, Any], ...],
) -> None:
    a, b = two_tenants
    b_prefix = b["credentials"]["key_prefix"]
    attacker = client_of(a)
    try:
        for channel in (f"{b_prefix}events", "__keyspace@0__:" + b_prefix + "secret"):
            listener = attacker.pubsub()
            with pytest.raises(NoPermissionError):
                await confirmed(listener.subscribe(channel), listener)
            await listener.aclose()
        for pattern in ("*", "t_*", f"{b_prefix}*"):
            listener = attacker.pubsub()
            with pytest.raises(NoPermissionError):
                await confirmed(listener.psubscribe(pattern), listener)
            await listener.aclose()
    finally:
        await attacker.aclose()


async def test_what_a_tenant_may_ask_reveals_only_itself(
    two_tenants: tuple[dict[str, Any], ...],
) -> None:
    a, b = two_tenants
    attacker = client_of(a)
    try:
        assert await attacker.execute_command("ACL", "WHOAMI") == a["credentials"]["username"]
        assert isinstance(await attacker.client_id(), int)
        assert await attacker.client_setname("app")
        assert await attacker.client_getname() == "app"
        with pytest.raises(AuthenticationError):
            await attacker.execute_command(
                "AUTH", b["credentials"]["username"], a["credentials"]["password"]
            )
    finally:
        await attacker.aclose()


async def test_tenant_keeps_full_use_of_its_own_prefix(
    two_tenants: tuple[dict[str, Any], ...],
) -> None:
    a, b = two_tenants
    prefix = a["credentials"]["key_prefix"]
    tenant = client_of(a)
    listener = tenant.pubsub()
    try:
        await listener.subscribe(f"{prefix}events")
        await listener.get_message(timeout=1)
        assert await tenant.set(f"{prefix}k", "v", ex=60)
        assert await tenant.get(f"{prefix}k") == "v"
        assert await tenant.incr(f"{prefix}counter") == 1
        assert await tenant.hset(f"{prefix}h", mapping={"f": "1"}) == 1
        assert await tenant.publish(f"{prefix}events", "hello") == 1
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None
        assert message["data"] == "hello"
        async with tenant.pipeline(transaction=True) as pipe:
            pipe.set(f"{prefix}m", "1").get(f"{prefix}m")
            assert await pipe.execute() == [True, "1"]
        assert await tenant.delete(f"{prefix}k") == 1
    finally:
        await listener.aclose()
        await tenant.aclose()
    victim = client_of(b)
    assert await victim.get(f"{b['credentials']['key_prefix']}secret") == "b's secret"
    await victim.aclose()


async def test_show_returns_status_and_the_working_url(http: httpx.AsyncClient) -> None:
    cache = await new_resource(http, "cache", json={"name": "sessions"})
    shown = (await http.get(f"/resources/{cache['token']}")).json()
    assert shown["status"] == "active"
    assert shown["kind"] == "redis"
    assert shown["name"] == "sessions"
    assert shown["connection_url"] == cache["connection_url"]
    client = aioredis.Redis.from_url(shown["connection_url"])
    assert await client.ping()
    await client.aclose()


async def test_delete_cuts_open_connections_stops_the_credentials_and_removes_the_keys(
    http: httpx.AsyncClient, redis_admin: aioredis.Redis
) -> None:
    cache = await new_resource(http, "cache")
    credentials = cache["credentials"]
    tenant = client_of(cache)
    await tenant.set(f"{credentials['key_prefix']}k", "v")
    await tenant.aclose()
    # One raw connection, so no client library reconnects behind the test's back.
    open_connection = Connection(
        host=credentials["host"],
        port=credentials["port"],
        username=credentials["username"],
        password=credentials["password"],
    )
    await open_connection.connect()
    assert await ping(open_connection) == b"PONG"

    response = await http.delete(f"/resources/{cache['token']}")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "id": cache["id"], "status": "deleted"}

    with pytest.raises(RedisConnectionError):
        await ping(open_connection)
    await open_connection.disconnect()
    again = client_of(cache)
    with pytest.raises(AuthenticationError):
        await again.ping()
    await again.aclose()
    assert await user_and_keys_gone(redis_admin, cache)
    assert (await http.get(f"/resources/{cache['token']}")).status_code == 404


async def test_expired_cache_is_reaped_with_its_user_and_keys(
    http: httpx.AsyncClient, short_ttl_http: httpx.AsyncClient, redis_admin: aioredis.Redis
) -> None:
    cache = await new_resource(short_ttl_http, "cache")
    assert cache["limits"]["expires_in"] <= SHORT_TTL_S
    tenant = client_of(cache)
    await tenant.set(f"{cache['credentials']['key_prefix']}k", "v")
    await tenant.aclose()

    async def gone() -> bool:
        return (await http.get(f"/resources/{cache['token']}")).status_code == 410

    assert await eventually(gone), "the reaper did not expire the cache"
    assert await user_and_keys_gone(redis_admin, cache)
    expired = client_of(cache)
    with pytest.raises(AuthenticationError):
        await expired.ping()
    await expired.aclose()
