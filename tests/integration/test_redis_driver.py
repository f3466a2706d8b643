"""RedisDriver against the real customer Redis: idempotence, the guard, the ACL it installs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError

from devstack.customer_redis import NAME, CustomerRedisServer
from devstack.stack import Stack
from redis_provisioner import driver as driver_module
from redis_provisioner.driver import RedisDriver, password_hash
from shared.contracts.errors import BackendUnavailableError, DropRefusedError
from shared.contracts.kinds import RedisLimits
from shared.naming import tenant_name

pytestmark = pytest.mark.integration

LIMITS = RedisLimits(memory_mb=8)


@pytest.fixture
async def redis_driver(env: dict[str, str]) -> AsyncIterator[RedisDriver]:
    connected = await RedisDriver.connect(
        env["SPINUP_CUSTOMER_REDIS_URL"],
        public_host=env["SPINUP_CUSTOMER_REDIS_HOST"],
        public_port=int(env["SPINUP_CUSTOMER_REDIS_PORT"]),
        pool_size=4,
    )
    yield connected
    await connected.close()


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
    assert [k async for k in redis_admin.scan_iter(match=f"{credentials.key_prefix}*")] == []
    assert await redis_admin.get("unrelated:key") == "stays"


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


async def test_user_may_use_only_its_prefix_and_is_stored_with_a_hashed_password(
    redis_driver: RedisDriver, redis_admin: aioredis.Redis
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
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
        ["OBJECT", "ENCODING", own], ["MEMORY", "USAGE", own], ["WAIT", "0", "0"],
        ["CLIENT", "LIST"], ["CLIENT", "KILL", "ID", "1"], ["PUBSUB", "CHANNELS"],
        ["EVAL", "return 1", "0"], ["KEYS", "*"], ["INFO"], ["CONFIG", "GET", "*"],
        ["FLUSHALL"], ["ACL", "LIST"], ["GET", "t_other:k"], ["PUBLISH", "t_other:ch", "x"],
    ]  # fmt: skip
    allowed = [
        ["GET", own], ["PUBLISH", f"{credentials.key_prefix}ch", "x"],
        ["CLIENT", "SETNAME", "app"], ["CLIENT", "GETNAME"], ["CLIENT", "ID"],
    ]  # fmt: skip
    for command in denied + allowed:
        verdict = await redis_admin.execute_command("ACL", "DRYRUN", credentials.username, *command)
        assert (verdict == "OK") == (command in allowed), (command, verdict)
    tenant = aioredis.Redis.from_url(credentials.connection_url)
    with pytest.raises(NoPermissionError):
        await tenant.execute_command("DBSIZE")
    await tenant.aclose()
    await redis_driver.delete(rid)


async def test_delete_returns_only_once_the_aclfile_forgets_the_user(
    stack: Stack, redis_driver: RedisDriver
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    await redis_driver.delete(rid)
    assert credentials.username not in acl_file_users(stack)


async def test_users_survive_a_restart_and_a_down_server_is_a_503_class_error(
    stack: Stack, env: dict[str, str], redis_driver: RedisDriver
) -> None:
    rid = uuid.uuid4()
    credentials = await redis_driver.create(rid, LIMITS)
    await redis_driver.close()  # a clean stop saves what is pending
    assert credentials.username in acl_file_users(stack)
    survivor = await RedisDriver.connect(
        env["SPINUP_CUSTOMER_REDIS_URL"], public_host="127.0.0.1", public_port=1, pool_size=2
    )
    stack.stop_server(NAME)
    try:
        with pytest.raises(BackendUnavailableError):
            await survivor.create(uuid.uuid4(), LIMITS)
    finally:
        stack.start_server(NAME)
    tenant = aioredis.Redis.from_url(credentials.connection_url)
    assert await tenant.ping()
    await tenant.aclose()
    # The pool's connections died with the server: the driver retries on a fresh one.
    await survivor.delete(rid)
    await survivor.close()
    assert credentials.username not in acl_file_users(stack)


async def test_the_default_user_is_off(env: dict[str, str]) -> None:
    anonymous = aioredis.Redis(
        host=env["SPINUP_CUSTOMER_REDIS_HOST"], port=int(env["SPINUP_CUSTOMER_REDIS_PORT"])
    )
    with pytest.raises(AuthenticationError):
        await anonymous.ping()
    await anonymous.aclose()
