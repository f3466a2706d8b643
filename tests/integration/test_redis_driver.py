"""RedisDriver against the real customer Redis: idempotence, the guard, the ACL it installs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.lock import Lock

from devstack.customer_redis import ADMIN_USER, MAXMEMORY_MB, NAME, CustomerRedisServer
from devstack.stack import Stack
from redis_provisioner import driver as driver_module
from redis_provisioner.driver import DELETED_TENANTS_KEY, RedisDriver, key_prefix, password_hash
from shared.contracts.errors import (
    BackendUnavailableError,
    DropRefusedError,
    ErrorCode,
    SpinupError,
)
from shared.contracts.kinds import RedisLimits
from shared.lifecycle import Ceiling
from shared.naming import tenant_name
from shared.redis_handshake import QUIET_HANDSHAKE

pytestmark = pytest.mark.integration

LIMITS = RedisLimits(memory_mb=8)
RELEASE_SHA = hashlib.sha1(Lock.LUA_RELEASE_SCRIPT.encode(), usedforsecurity=False).hexdigest()


@pytest.fixture
async def redis_admin(env: dict[str, str]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"], decode_responses=True)
    yield client
    await client.aclose()


def acl_file_users(stack: Stack) -> set[str]:
    server = stack.servers[NAME]
    assert isinstance(server, CustomerRedisServer)
    return {line.split()[1] for line in server.acl_path.read_text().splitlines() if line.strip()}


async def test_create_twice_gives_one_user_and_only_the_newest_password_works(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    rid = uuid.uuid4()
    first = await redis_driver.create(rid, LIMITS)
    second = await redis_driver.create(rid, LIMITS)
    assert first.username == second.username == tenant_name(rid)
    assert second.key_prefix == f"{tenant_name(rid)}:"
    users = await redis_admin.execute_command("ACL", "USERS")
    assert users.count(tenant_name(rid)) == 1
    tenant = aioredis.Redis.from_url(second.connection_url, decode_responses=True)
    assert await tenant.set(f"{second.key_prefix}k", "v")
    await tenant.aclose()
    stale = aioredis.Redis.from_url(first.connection_url)
    with pytest.raises(AuthenticationError):
        await stale.ping()
    await stale.aclose()
    await redis_driver.delete(rid)


async def test_delete_is_idempotent_and_removes_the_user_and_every_prefixed_key(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    tenant = aioredis.Redis.from_url(credentials.connection_url)
    # More keys than one UNLINK batch, so the batching is exercised.
    async with tenant.pipeline(transaction=False) as pipe:
        for i in range(1200):
            pipe.set(f"{credentials.key_prefix}{i}", i)
        await pipe.execute()
    await tenant.aclose()
    await redis_admin.set("unrelated:key", "stays")
    assert await redis_driver.exists(rid)
    await redis_driver.delete(rid)
    await redis_driver.delete(rid)
    assert not await redis_driver.exists(rid)
    assert await redis_admin.execute_command("ACL", "GETUSER", credentials.username) is None
    await redis_driver.unlink_deleted()
    assert [k async for k in redis_admin.scan_iter(match=f"{credentials.key_prefix}*")] == []
    assert await redis_admin.get("unrelated:key") == "stays"


async def test_one_pass_removes_the_keys_of_every_tenant_deleted_since_the_last(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    """A delete costs two commands; the keyspace is walked once for all the deleted tenants."""
    made = [uuid.uuid4() for _ in range(3)]
    prefixes = {}
    for rid in made:
        credentials = await redis_driver.create(rid, LIMITS)
        prefixes[rid] = credentials.key_prefix
        tenant = aioredis.Redis.from_url(credentials.connection_url)
        await tenant.mset({f"{credentials.key_prefix}{i}": i for i in range(50)})
        await tenant.aclose()
    kept, *deleted = made
    for rid in deleted:
        await redis_driver.delete(rid)
    for rid in deleted:  # its keys wait for the pass, unreachable
        assert not await redis_driver.exists(rid)

    # The stack's redis-provisioner runs passes too (every second here): either may do it.
    await redis_driver.unlink_deleted()

    for rid in deleted:
        assert [k async for k in redis_admin.scan_iter(match=f"{prefixes[rid]}*")] == []
        assert not await redis_admin.sismember(DELETED_TENANTS_KEY, tenant_name(rid))
    assert len([k async for k in redis_admin.scan_iter(match=f"{prefixes[kept]}*")]) == 50
    await redis_driver.delete(kept)
    await redis_driver.unlink_deleted()


async def test_delete_of_a_resource_never_created_succeeds(redis_driver: RedisDriver) -> None:
    never_created = uuid.uuid4()
    await redis_driver.delete(never_created)
    assert not await redis_driver.exists(never_created)


async def test_guard_refuses_to_delete_a_name_without_the_tenant_prefix(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await redis_admin.set("important:data", "keep")
    monkeypatch.setattr(driver_module, "tenant_name", lambda _rid: "important")
    with pytest.raises(DropRefusedError):
        await redis_driver.delete(uuid.uuid4())
    assert await redis_admin.get("important:data") == "keep"


@pytest.mark.parametrize("make", ["create", "create_fresh"])
async def test_user_may_use_only_its_prefix_and_is_stored_with_a_hashed_password(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis, make: str
) -> None:
    rid = uuid.uuid4()
    credentials = await getattr(redis_driver, make)(rid, LIMITS)
    listing = await redis_admin.execute_command("ACL", "LIST")
    (line,) = [entry for entry in listing if entry.startswith(f"user {credentials.username} ")]
    rules = line.split()
    assert "on" in rules
    assert f"~{credentials.key_prefix}*" in rules
    assert f"&{credentials.key_prefix}*" in rules
    assert f"#{password_hash(credentials.password)}" in rules
    assert not any(credentials.password in entry for entry in listing)
    own = f"{credentials.key_prefix}k"
    denied = [
        ["SELECT", "1"], ["SWAPDB", "0", "1"], ["SCAN", "0"], ["RANDOMKEY"], ["DBSIZE"],
        ["MOVE", own, "1"], ["COPY", own, f"{credentials.key_prefix}c"],
        ["OBJECT", "ENCODING", own], ["MEMORY", "USAGE", "t_other:k"], ["MEMORY", "STATS"],
        ["WAIT", "0", "0"],
        ["CLIENT", "LIST"], ["CLIENT", "KILL", "ID", "1"], ["PUBSUB", "CHANNELS"],
        ["EVAL", "return 1", "0"], ["SCRIPT", "LOAD", "return 1"], ["SCRIPT", "FLUSH"],
        ["EVALSHA", RELEASE_SHA, "1", "t_other:k", "x"],
        ["KEYS", "*"], ["INFO"], ["CONFIG", "GET", "*"],
        ["FLUSHALL"], ["ACL", "LIST"], ["GET", "t_other:k"], ["PUBLISH", "t_other:ch", "x"],
    ]  # fmt: skip
    allowed = [
        ["GET", own], ["PUBLISH", f"{credentials.key_prefix}ch", "x"],
        ["CLIENT", "SETNAME", "app"], ["CLIENT", "GETNAME"], ["CLIENT", "ID"],
        # ADR 0025: its own keys' size, and the vetted Lock scripts on its own keys.
        ["MEMORY", "USAGE", own], ["EVALSHA", RELEASE_SHA, "1", own, "x"],
    ]  # fmt: skip
    for command in denied + allowed:
        verdict = await redis_admin.execute_command("ACL", "DRYRUN", credentials.username, *command)
        assert (verdict == "OK") == (command in allowed), (command, verdict)
    tenant = aioredis.Redis.from_url(credentials.connection_url)
    with pytest.raises(NoPermissionError):
        await tenant.execute_command("DBSIZE")
    await tenant.aclose()
    await redis_driver.delete(rid)


async def test_the_aclfile_holds_the_fixed_users_only(
    stack: Stack, redis_driver: RedisDriver
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    await redis_driver.rotate(rid, LIMITS)
    assert acl_file_users(stack) == {"default", ADMIN_USER}
    await redis_driver.delete(rid)
    assert credentials.username not in acl_file_users(stack)


async def test_a_restart_forgets_users_and_a_down_server_is_a_503_class_error(
    stack: Stack, env: dict[str, str], redis_driver: RedisDriver
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    survivor = await RedisDriver.connect(
        env["SPINUP_CUSTOMER_REDIS_URL"], public_host="127.0.0.1", public_port=1, pool_size=2
    )
    run = await survivor.server_run()
    stack.stop_server(NAME)
    try:
        with pytest.raises(BackendUnavailableError):
            await survivor.create(uuid.uuid4(), LIMITS)
        with pytest.raises(BackendUnavailableError):
            await survivor.server_run()
    finally:
        stack.start_server(NAME)
    # The pool's connections died with the server: the driver retries on a fresh one.
    assert await survivor.server_run() != run
    assert rid not in await survivor.tenants()
    tenant = aioredis.Redis.from_url(credentials.connection_url)
    with pytest.raises(AuthenticationError):
        await tenant.ping()
    await tenant.aclose()
    await survivor.close()


async def test_restored_credentials_log_in_with_the_rules_and_dropped_ones_do_not(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    await redis_admin.execute_command("ACL", "DELUSER", credentials.username)
    await redis_driver.restore_credentials(rid, credentials, writes_blocked=True, suspended=False)
    tenant = aioredis.Redis.from_url(credentials.connection_url)
    assert await tenant.get(f"{credentials.key_prefix}k") is None
    with pytest.raises(NoPermissionError):
        await tenant.set(f"{credentials.key_prefix}k", "v")
    with pytest.raises(NoPermissionError):
        await tenant.get("t_someone_else:k")
    await tenant.aclose()
    await redis_driver.restore_credentials(rid, credentials, writes_blocked=False, suspended=True)
    assert (await redis_admin.execute_command("ACL", "GETUSER", credentials.username)) is not None
    refused = aioredis.Redis.from_url(credentials.connection_url)
    with pytest.raises(AuthenticationError):
        await refused.ping()
    await refused.aclose()
    await redis_driver.restore_credentials(rid, credentials, writes_blocked=False, suspended=False)
    tenant = aioredis.Redis.from_url(credentials.connection_url)
    assert await tenant.set(f"{credentials.key_prefix}k", "v")
    await redis_driver.drop_credentials(rid)
    with pytest.raises(RedisConnectionError):
        await tenant.get(f"{credentials.key_prefix}k")
    await tenant.aclose()
    assert rid not in await redis_driver.tenants()
    assert await redis_admin.get(f"{credentials.key_prefix}k") == "v", "dropping keeps the data"
    await redis_driver.delete(rid)


async def test_the_default_user_is_off(env: dict[str, str]) -> None:
    anonymous = aioredis.Redis(
        host=env["SPINUP_CUSTOMER_REDIS_HOST"], port=int(env["SPINUP_CUSTOMER_REDIS_PORT"])
    )
    with pytest.raises(AuthenticationError):
        await anonymous.ping()
    await anonymous.aclose()


# -- issue 4: set_limits, rotate, usage, block_writes, allow_writes ---------------------------


def tenant_client(url: str) -> aioredis.Redis:
    """One connection, never silently re-opened, so a cut connection shows as an error."""
    return aioredis.Redis.from_url(url, single_connection_client=True, retry=Retry(NoBackoff(), 0))


async def connected_users(admin: aioredis.Redis) -> list[str]:
    listing = await admin.execute_command("CLIENT", "LIST")
    return [
        field.removeprefix("user=")
        for line in listing.splitlines()
        for field in line.split()
        if field.startswith("user=")
    ]


async def write_refused(admin: aioredis.Redis, username: str, prefix: str) -> bool:
    verdict = await admin.execute_command("ACL", "DRYRUN", username, "SET", f"{prefix}k", "v")
    return verdict != "OK"


async def test_set_limits_keeps_password_connections_and_a_block(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    tenant = tenant_client(credentials.connection_url)
    assert await tenant.set(f"{credentials.key_prefix}k", "v")
    # A rule drifted away from the current set (say, an older driver's): set_limits restores it.
    await redis_admin.execute_command("ACL", "SETUSER", credentials.username, "+dbsize")
    await redis_driver.set_limits(rid, RedisLimits(memory_mb=64))
    await redis_driver.set_limits(rid, RedisLimits(memory_mb=64))
    assert await tenant.get(f"{credentials.key_prefix}k") == b"v"
    with pytest.raises(NoPermissionError):
        await tenant.execute_command("DBSIZE")
    fresh = tenant_client(credentials.connection_url)
    assert await fresh.ping()
    await fresh.aclose()

    await redis_driver.block_writes(rid, usage=2, quota=1)
    await redis_driver.set_limits(rid, RedisLimits(memory_mb=64))
    assert await write_refused(redis_admin, credentials.username, credentials.key_prefix)
    await tenant.aclose()
    await redis_driver.delete(rid)


async def test_set_limits_and_rotate_of_a_missing_user_are_not_found(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    missing = uuid.uuid4()
    for operation in (redis_driver.set_limits, redis_driver.rotate):
        with pytest.raises(SpinupError) as caught:
            await operation(missing, LIMITS)
        assert caught.value.code is ErrorCode.NOT_FOUND
    assert await redis_admin.execute_command("ACL", "GETUSER", tenant_name(missing)) is None


async def test_rotate_cuts_old_sessions_and_only_the_new_password_works(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    rid = uuid.uuid4()
    old = await redis_driver.create(rid, LIMITS)
    open_before = tenant_client(old.connection_url)
    assert await open_before.set(f"{old.key_prefix}k", "kept")
    assert old.username in await connected_users(redis_admin)

    new = await redis_driver.rotate(rid, LIMITS)
    assert (new.host, new.port, new.username, new.key_prefix) == (
        old.host,
        old.port,
        old.username,
        old.key_prefix,
    )
    assert new.password != old.password
    assert old.username not in await connected_users(redis_admin)
    with pytest.raises(RedisConnectionError):
        await open_before.get(f"{old.key_prefix}k")
    await open_before.aclose()
    stale = tenant_client(old.connection_url)
    with pytest.raises(AuthenticationError):
        await stale.ping()
    await stale.aclose()
    current = tenant_client(new.connection_url)
    assert await current.get(f"{new.key_prefix}k") == b"kept"
    assert await current.set(f"{new.key_prefix}k2", "v")
    await current.aclose()
    await redis_driver.delete(rid)


async def test_rotate_and_create_keep_a_write_block(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    rid = uuid.uuid4()
    first = await redis_driver.create(rid, LIMITS)
    await redis_driver.block_writes(rid, usage=2, quota=1)
    rotated = await redis_driver.rotate(rid, LIMITS)
    assert await write_refused(redis_admin, first.username, first.key_prefix)
    tenant = tenant_client(rotated.connection_url)
    with pytest.raises(NoPermissionError):
        await tenant.set(f"{rotated.key_prefix}k", "v")
    await tenant.aclose()
    recreated = await redis_driver.create(rid, LIMITS)
    assert await write_refused(redis_admin, first.username, first.key_prefix)
    await redis_driver.allow_writes(rid)
    tenant = tenant_client(recreated.connection_url)
    assert await tenant.set(f"{recreated.key_prefix}k", "v")
    await tenant.aclose()
    await redis_driver.delete(rid)


async def test_block_refuses_writes_on_open_connections_and_keeps_reads_and_cleanup(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    prefix = credentials.key_prefix
    tenant = tenant_client(credentials.connection_url)
    await tenant.set(f"{prefix}a", "1")
    await tenant.set(f"{prefix}b", "2")
    await tenant.rpush(f"{prefix}list", "x", "y", "z")
    await tenant.hset(f"{prefix}hash", mapping={"f": "1", "g": "2"})
    # A transaction queued before the block and executed after it: EXEC checks again. Raw
    # replies, since the client's own MULTI support would send everything at EXEC time.
    raw = tenant.connection
    assert raw is not None
    for command, reply in (("MULTI",), b"OK"), (("SET", f"{prefix}queued", "v"), b"QUEUED"):
        await raw.send_command(*command)
        assert await raw.read_response() == reply

    await redis_driver.block_writes(rid, usage=10, quota=5)
    await redis_driver.block_writes(rid, usage=11, quota=5)  # every sweep pass calls it again
    refused: list[list[str]] = [
        ["SET", f"{prefix}a", "x"], ["APPEND", f"{prefix}a", "x"], ["INCR", f"{prefix}n"],
        ["RPUSH", f"{prefix}list", "w"], ["HSET", f"{prefix}hash", "h", "3"],
        ["SADD", f"{prefix}set", "m"], ["XADD", f"{prefix}s", "*", "f", "v"],
        ["SETRANGE", f"{prefix}a", "100", "x"], ["RENAME", f"{prefix}a", f"{prefix}c"],
        ["PERSIST", f"{prefix}a"],
    ]  # fmt: skip
    await raw.send_command("EXEC")
    (queued_outcome,) = await raw.read_response()
    assert isinstance(queued_outcome, NoPermissionError)
    for command in refused:
        with pytest.raises(NoPermissionError):
            await tenant.execute_command(*command)
    assert await tenant.get(f"{prefix}a") == b"1"
    assert await tenant.lrange(f"{prefix}list", 0, -1) == [b"x", b"y", b"z"]
    assert await tenant.exists(f"{prefix}queued") == 0
    assert await tenant.delete(f"{prefix}a") == 1
    assert await tenant.unlink(f"{prefix}b") == 1
    assert await tenant.expire(f"{prefix}hash", 100)
    assert await tenant.hdel(f"{prefix}hash", "f") == 1
    assert await tenant.lpop(f"{prefix}list") == b"x"
    assert await tenant.ltrim(f"{prefix}list", 0, 0)

    await redis_driver.allow_writes(rid)
    await redis_driver.allow_writes(rid)
    assert await tenant.set(f"{prefix}a", "again")
    assert not await write_refused(redis_admin, credentials.username, prefix)
    await tenant.aclose()
    await redis_driver.delete(rid)


@pytest.mark.parametrize("blocked", [False, True])
async def test_every_isolation_rule_holds_in_both_rule_sets(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis, blocked: bool
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    if blocked:
        await redis_driver.block_writes(rid, usage=2, quota=1)
    own = f"{credentials.key_prefix}k"
    denied = [
        ["SELECT", "1"], ["SWAPDB", "0", "1"], ["SCAN", "0"], ["RANDOMKEY"], ["DBSIZE"],
        ["MOVE", own, "1"], ["COPY", own, f"{credentials.key_prefix}c"],
        ["OBJECT", "ENCODING", own], ["MEMORY", "USAGE", "t_other:k"], ["WAIT", "0", "0"],
        ["CLIENT", "LIST"], ["CLIENT", "KILL", "ID", "1"], ["PUBSUB", "CHANNELS"],
        ["EVAL", "return 1", "0"], ["SCRIPT", "LOAD", "return 1"],
        ["EVALSHA", RELEASE_SHA, "1", "t_other:k", "x"],
        ["FUNCTION", "LIST"], ["KEYS", "*"], ["INFO"],
        ["CONFIG", "GET", "*"], ["FLUSHALL"], ["FLUSHDB"], ["ACL", "LIST"],
        ["GET", "t_other:k"], ["DEL", "t_other:k"], ["PUBLISH", "t_other:ch", "x"],
    ]  # fmt: skip
    for command in denied:
        verdict = await redis_admin.execute_command("ACL", "DRYRUN", credentials.username, *command)
        assert verdict != "OK", (command, blocked)
    assert (
        await redis_admin.execute_command("ACL", "DRYRUN", credentials.username, "GET", own) == "OK"
    )
    await redis_driver.delete(rid)


async def test_block_and_allow_of_a_missing_user_do_nothing(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    missing = uuid.uuid4()
    await redis_driver.block_writes(missing, usage=2, quota=1)
    await redis_driver.allow_writes(missing)
    # ACL SETUSER would have made the user: the driver must not.
    assert await redis_admin.execute_command("ACL", "GETUSER", tenant_name(missing)) is None


async def test_usage_measures_every_asked_tenant_in_one_pass(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    small, large, empty, missing = (uuid.uuid4() for _ in range(4))
    value = "x" * 1000
    for rid, keys in ((small, 100), (large, 3 * driver_module._USAGE_SAMPLE_KEYS)):
        credentials = await redis_driver.create(rid, LIMITS)
        tenant = aioredis.Redis.from_url(credentials.connection_url)
        async with tenant.pipeline(transaction=False) as pipe:
            for i in range(keys):
                pipe.set(f"{credentials.key_prefix}{i}", value)
            await pipe.execute()
        await tenant.aclose()
    await redis_driver.create(empty, LIMITS)
    before = await redis_driver.usage([small])

    usage = await redis_driver.usage([small, large, empty, missing])
    assert set(usage) == {small, large, empty}
    assert usage[small] == before[small]
    # Each key is its 1000-byte value plus Redis's own overhead (key, object, allocator).
    assert 100 * 1000 <= usage[small] <= 100 * 1400
    large_keys = 3 * driver_module._USAGE_SAMPLE_KEYS
    assert large_keys * 1000 <= usage[large] <= large_keys * 1400
    assert usage[empty] == 0
    # No more keys than the sample: measured exactly, key by key.
    exact = [await redis_admin.memory_usage(f"{key_prefix(small)}{i}") for i in range(100)]
    assert usage[small] == sum(exact)
    for rid in (small, large, empty):
        await redis_driver.delete(rid)
    assert await redis_driver.usage([small, large, empty]) == {}


async def test_the_pages_of_one_sweep_share_its_census_and_the_next_sweep_counts_anew(
    redis_driver: RedisDriver,
) -> None:
    writer, reader, deleted = (uuid.uuid4() for _ in range(3))
    tenants = {}
    for rid in (writer, reader, deleted):
        credentials = await redis_driver.create(rid, LIMITS)
        tenants[rid] = aioredis.Redis.from_url(credentials.connection_url)
        await tenants[rid].set(f"{credentials.key_prefix}first", "x" * 1000)
    sweep = uuid.uuid4()
    first = await redis_driver.usage([writer], sweep_id=sweep)
    assert first == await redis_driver.usage([writer])  # a call of its own counts the same

    await tenants[writer].set(f"{key_prefix(writer)}second", "x" * 1000)
    await redis_driver.delete(deleted)
    rest = await redis_driver.usage([reader, deleted, writer], sweep_id=sweep)
    # The census was the sweep's first page's; who exists is asked at each page.
    assert rest == {reader: first[writer], writer: first[writer]}
    grown = await redis_driver.usage([writer], sweep_id=uuid.uuid4())
    assert grown[writer] > first[writer] + 1000
    for rid, tenant in tenants.items():
        await tenant.aclose()
        await redis_driver.delete(rid)


async def test_a_server_that_lost_the_weighing_function_gets_it_back_at_the_next_measure(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    tenant = aioredis.Redis.from_url(credentials.connection_url)
    await tenant.set(f"{credentials.key_prefix}k", "x" * 1000)
    await tenant.aclose()
    exact = await redis_admin.memory_usage(f"{credentials.key_prefix}k")
    # What a restart of a server without persistence does to its functions.
    await redis_admin.function_flush()
    assert await redis_driver.usage([rid]) == {rid: exact}
    listed = await redis_admin.function_list(library="spinup_usage")
    assert len(listed) == 1
    await redis_driver.delete(rid)


async def test_guard_refuses_every_new_operation_on_a_name_without_the_tenant_prefix(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the guard skipped, rotate would end the admin's own connections and reset its password.
    monkeypatch.setattr(driver_module, "tenant_name", lambda _rid: "spinup-admin")
    rid = uuid.uuid4()
    with pytest.raises(DropRefusedError):
        await redis_driver.rotate(rid, LIMITS)
    with pytest.raises(DropRefusedError):
        await redis_driver.set_limits(rid, LIMITS)
    with pytest.raises(DropRefusedError):
        await redis_driver.block_writes(rid, usage=2, quota=1)
    with pytest.raises(DropRefusedError):
        await redis_driver.allow_writes(rid)
    with pytest.raises(DropRefusedError):
        await redis_driver.usage([rid])
    assert await redis_admin.ping()


async def test_a_new_connection_sends_no_command_the_server_refuses(
    env: dict[str, str], redis_admin: aioredis.Redis
) -> None:
    """``QUIET_HANDSHAKE``: the handshake is ``HELLO`` alone, no refused ``CLIENT`` commands."""

    async def refused() -> int:
        stats = await redis_admin.info("errorstats")
        return sum(int(entry["count"]) for entry in stats.values())

    before = await refused()
    quiet = aioredis.Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"], **QUIET_HANDSHAKE)
    assert await quiet.ping()
    await quiet.aclose()
    assert await refused() == before
    chatty = aioredis.Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"])
    assert await chatty.ping()
    await chatty.aclose()
    assert await refused() > before, "the default handshake is refused by this server"


async def test_past_the_servers_maxmemory_writes_are_refused_and_no_tenants_key_is_evicted(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    # Redis has no memory limit per user and the usage sweep finds a tenant only at its next
    # pass: without a ceiling one tenant could take the shared server out of memory.
    configured = await redis_admin.config_get("maxmemory*")
    assert int(configured["maxmemory"]) == MAXMEMORY_MB * 1024 * 1024
    assert configured["maxmemory-policy"] == "noeviction"
    assert configured["maxmemory-clients"] == "10%"

    victim_id, attacker_id = uuid.uuid4(), uuid.uuid4()
    victim_credentials = await redis_driver.create(victim_id, LIMITS)
    attacker_credentials = await redis_driver.create(attacker_id, LIMITS)
    victim = aioredis.Redis.from_url(victim_credentials.connection_url)
    attacker = aioredis.Redis.from_url(attacker_credentials.connection_url)
    used = int((await redis_admin.info("memory"))["used_memory"])
    # The same ceiling, lowered so the test fills it in a second.
    await redis_admin.config_set("maxmemory", used + 16 * 1024 * 1024)
    try:
        await victim.set(f"{victim_credentials.key_prefix}kept", b"v" * 1024)
        chunk = b"x" * (1024 * 1024)
        refused = None
        for index in range(64):
            try:
                await attacker.set(f"{attacker_credentials.key_prefix}{index}", chunk)
            except ResponseError as exc:
                refused = str(exc)
                break
        assert refused is not None
        assert "command not allowed when used memory > 'maxmemory'" in refused
        assert await victim.get(f"{victim_credentials.key_prefix}kept") == b"v" * 1024
    finally:
        await redis_admin.config_set("maxmemory", f"{MAXMEMORY_MB}mb")
        await victim.aclose()
        await attacker.aclose()
        await redis_driver.delete(victim_id)
        await redis_driver.delete(attacker_id)


async def test_capacity_reports_the_servers_connections_and_memory_against_its_ceilings(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis, env: dict[str, str]
) -> None:
    figures = await redis_driver.capacity()
    maxclients = int((await redis_admin.config_get("maxclients"))["maxclients"])
    assert figures[Ceiling.MEMORY_BYTES][1] == MAXMEMORY_MB * 1024 * 1024
    assert 0 < figures[Ceiling.MEMORY_BYTES][0] < figures[Ceiling.MEMORY_BYTES][1]
    assert figures[Ceiling.CONNECTIONS][1] == maxclients
    clients = [
        aioredis.Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"], single_connection_client=True)
        for _ in range(5)
    ]
    try:
        for client in clients:
            await client.ping()
        after = await redis_driver.capacity()
        assert after[Ceiling.CONNECTIONS][0] >= figures[Ceiling.CONNECTIONS][0] + 5
    finally:
        for client in clients:
            await client.aclose()
