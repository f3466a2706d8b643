"""A restarted customer Redis gets its tenants' users back from the event log (ADR 0045).

Against the real platform Postgres and the real customer Redis, stopped and started for real.
The stack's own redis-provisioner is stopped meanwhile, so what puts the users back is the
lifecycle under test, not the worker's loop (tests/e2e covers that one).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError

from devstack.customer_redis import NAME
from devstack.stack import Stack
from redis_provisioner.driver import RedisDriver
from shared.contracts.commands import DeprovisionResource
from shared.contracts.events import CredentialsRotated, QuotaExceeded
from shared.contracts.kinds import (
    RedisCredentials,
    RedisLimits,
    ResourceKind,
)
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection, ResourceReadModel
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.naming import resource_stream
from shared.testing.clients import redis_logs_in
from shared.testing.factories import (
    deprovision_command,
    provision_command,
    provision_requested,
    rotate_command,
)

pytestmark = pytest.mark.integration

LIMITS = RedisLimits(memory_mb=8)
WORKER = "redis-provisioner"


@pytest.fixture
def keyring(env: dict[str, str]) -> Keyring:
    return Keyring.from_setting(env["SPINUP_SEAL_KEYS"])


@pytest.fixture
def store(platform_db: asyncpg.Pool, keyring: Keyring) -> EventStore:
    return EventStore(platform_db, [ResourceProjection()])


@pytest.fixture
def lifecycle(
    store: EventStore, platform_db: asyncpg.Pool, redis_driver: RedisDriver, keyring: Keyring
) -> ResourceLifecycle:
    return ResourceLifecycle(
        store,
        keyring,
        redis_driver,
        resources=ResourceReadModel(platform_db),
        create_concurrency=2,
        delete_concurrency=2,
        restore_recheck=timedelta(seconds=0.2),
    )


@pytest.fixture
def without_the_worker(stack: Stack) -> Iterator[None]:
    stack.stop_service(WORKER)
    yield
    stack.start_service(WORKER)


def restart(stack: Stack) -> None:
    stack.stop_server(NAME)
    stack.start_server(NAME)


async def create(lifecycle: ResourceLifecycle) -> RedisCredentials:
    command = provision_command(kind=ResourceKind.REDIS, limits=LIMITS, new_ids=True)
    reply = await lifecycle.provision(command)
    assert isinstance(reply.credentials, RedisCredentials)
    return reply.credentials


def _rid(credentials: RedisCredentials) -> uuid.UUID:
    return uuid.UUID(hex=credentials.username.removeprefix("t_"))


def deletion(resource_id: uuid.UUID) -> DeprovisionResource:
    return deprovision_command(resource_id, deadline_in=10, correlation_id="restore")


async def logs_in(credentials: RedisCredentials) -> bool:
    return await redis_logs_in(credentials.connection_url)


@pytest.mark.usefixtures("without_the_worker")
async def test_a_restart_forgets_tenants_and_the_log_puts_back_what_it_holds(
    stack: Stack,
    lifecycle: ResourceLifecycle,
    store: EventStore,
    platform_db: asyncpg.Pool,
    redis_driver: RedisDriver,
) -> None:
    kept = await create(lifecycle)
    rotated_before = await create(lifecycle)
    rotated = (await lifecycle.rotate(rotate_command(_rid(rotated_before)))).credentials
    assert isinstance(rotated, RedisCredentials)
    deleted = await create(lifecycle)
    await lifecycle.deprovision(deletion(_rid(deleted)))
    blocked = await create(lifecycle)
    row = await ResourceReadModel(platform_db).by_id(_rid(blocked))
    assert row is not None
    await store.append(
        resource_stream(row.resource_id),
        row.version,
        [QuotaExceeded(resource_id=row.resource_id, usage_bytes=9, quota_bytes=8)],
        command_id=uuid.uuid4(),
        correlation_id="restore",
    )
    await redis_driver.block_writes(row.resource_id, usage=9, quota=8)

    await lifecycle.restore_after_restart()  # the run it starts from
    restart(stack)
    forgotten = {_rid(kept), _rid(rotated), _rid(blocked)}
    assert not forgotten & await redis_driver.tenants(), "the restart forgot them"
    assert await lifecycle.restore_after_restart() >= len(forgotten)

    assert forgotten <= await redis_driver.tenants()
    assert await logs_in(kept)
    assert await logs_in(rotated)
    assert not await logs_in(rotated_before), "the password the rotation replaced stays refused"
    assert _rid(deleted) not in await redis_driver.tenants()
    assert not await logs_in(deleted)
    over_quota = aioredis.Redis.from_url(blocked.connection_url)
    with pytest.raises(NoPermissionError):
        await over_quota.set(f"{blocked.key_prefix}more", "x")
    assert await over_quota.get(f"{blocked.key_prefix}absent") is None
    await over_quota.aclose()
    # Same run, before the recheck: nothing to do.
    assert await lifecycle.restore_after_restart() == 0


@pytest.mark.usefixtures("without_the_worker")
async def test_a_rotation_recorded_after_the_restore_wrote_its_user_is_applied_next(
    stack: Stack,
    lifecycle: ResourceLifecycle,
    store: EventStore,
    platform_db: asyncpg.Pool,
    keyring: Keyring,
) -> None:
    before = await create(lifecycle)
    rid = _rid(before)
    await lifecycle.restore_after_restart()
    restart(stack)
    assert await lifecycle.restore_after_restart() >= 1
    assert await logs_in(before)
    # A rotation whose backend call went to the server before it stopped, recorded only now:
    # the restore wrote the old password over nothing, and the log now holds the new one.
    after = msgspec.structs.replace(before, password="rotated-" + uuid.uuid4().hex)
    row = await ResourceReadModel(platform_db).by_id(rid)
    assert row is not None
    sealed = keyring.seal(msgspec.json.encode(after), aad=rid.bytes)
    await store.append(
        resource_stream(rid),
        row.version,
        [CredentialsRotated(resource_id=rid, credentials_sealed=sealed)],
        command_id=uuid.uuid4(),
        correlation_id="restore",
    )
    await asyncio.sleep(0.3)  # past the recheck
    assert await lifecycle.restore_after_restart() >= 1
    assert not await logs_in(before)
    url = before.connection_url.replace(before.password, after.password)
    assert await logs_in(msgspec.structs.replace(after, connection_url=url))


@pytest.mark.usefixtures("without_the_worker")
async def test_users_the_log_says_must_not_exist_are_dropped_and_others_left(
    lifecycle: ResourceLifecycle,
    store: EventStore,
    redis_driver: RedisDriver,
) -> None:
    gone = await create(lifecycle)
    await lifecycle.deprovision(deletion(_rid(gone)))
    # Back, as a line an older version saved in the aclfile would bring it back at a restart.
    await redis_driver.restore_credentials(_rid(gone), gone, writes_blocked=False, suspended=False)
    assert await logs_in(gone)
    in_the_making = uuid.uuid4()
    await store.append(
        resource_stream(in_the_making),
        0,
        [provision_requested(in_the_making, kind=ResourceKind.REDIS, limits=LIMITS)],
        command_id=uuid.uuid4(),
        correlation_id="restore",
    )
    await redis_driver.create(in_the_making, LIMITS)
    nobodys = uuid.uuid4()
    await redis_driver.create(nobodys, LIMITS)

    await lifecycle.restore_forgotten()

    assert not await logs_in(gone)
    tenants = await redis_driver.tenants()
    assert _rid(gone) not in tenants
    assert {in_the_making, nobodys} <= tenants, "a create under way and an orphan are not its own"
    await redis_driver.delete(in_the_making)
    await redis_driver.delete(nobodys)


class CreatesWhileListing:
    """The real driver, with a create finishing while it lists its tenants, as one can mid-pass.

    That create's row is not in the pass's first read, and its user is in the listing.
    """

    kind = ResourceKind.REDIS

    def __init__(self, inner: RedisDriver, make: Callable[[], Awaitable[RedisCredentials]]) -> None:
        self.inner = inner
        self.make: Callable[[], Awaitable[RedisCredentials]] | None = make
        self.made: RedisCredentials | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def tenants(self) -> set[uuid.UUID]:
        if self.make is not None:
            make, self.make = self.make, None
            self.made = await make()
        return await self.inner.tenants()


@pytest.mark.usefixtures("without_the_worker")
async def test_a_create_that_finishes_during_a_pass_keeps_its_user(
    lifecycle: ResourceLifecycle,
    store: EventStore,
    platform_db: asyncpg.Pool,
    redis_driver: RedisDriver,
    keyring: Keyring,
) -> None:
    sessions: list[aioredis.Redis] = []

    async def create_and_connect() -> RedisCredentials:
        made = await create(lifecycle)
        session = aioredis.Redis.from_url(
            made.connection_url, single_connection_client=True, retry=Retry(NoBackoff(), 0)
        )
        assert await session.ping()
        sessions.append(session)
        return made

    listing = CreatesWhileListing(redis_driver, create_and_connect)
    restoring = ResourceLifecycle(
        store,
        keyring,
        listing,  # type: ignore[arg-type]
        resources=ResourceReadModel(platform_db),
        create_concurrency=2,
        delete_concurrency=2,
    )
    await restoring.restore_forgotten()
    assert listing.made is not None
    # Untouched: a user dropped and restored would have lost its open session.
    (session,) = sessions
    assert await session.ping()
    await session.aclose()
