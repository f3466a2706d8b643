"""A create recorded in one append, and the reconcile that replaces its intent (ADR 0032).

Against the real platform Postgres and the real customer Redis: the Redis driver lists its
tenants, so a command whose ids are new (``new_ids``) is created first and recorded with its
intent in one append; an object such a create leaves behind when its process dies is found by
``reconcile`` and deleted after the grace, and nothing anybody owns ever is.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from redis_provisioner.driver import RedisDriver
from shared.contracts.commands import ProvisionResource
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import (
    RedisCredentials,
    RedisLimits,
    ResourceKind,
    ResourceStatus,
)
from shared.eventlog.projections import ResourceReadModel
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
GRACE = timedelta(seconds=0.5)


class FailingDriver:
    """The real Redis driver whose create fails after making its user, as a cut-off call can."""

    kind = ResourceKind.REDIS

    def __init__(self, inner: RedisDriver) -> None:
        self.inner = inner

    async def create(self, resource_id: uuid.UUID, limits: RedisLimits) -> RedisCredentials:
        await self.inner.create(resource_id, limits)
        msg = "The connection to the backend dropped mid-answer."
        raise SpinupError(ErrorCode.BACKEND_UNAVAILABLE, msg, retryable=True)

    async def delete(self, resource_id: uuid.UUID) -> None:
        await self.inner.delete(resource_id)

    async def tenants(self) -> set[uuid.UUID]:
        return await self.inner.tenants()


class CountingDriver:
    """The real Redis driver, recording which of its two creates the lifecycle called."""

    kind = ResourceKind.REDIS

    def __init__(self, inner: RedisDriver) -> None:
        self.inner = inner
        self.called: list[str] = []

    async def create(self, resource_id: uuid.UUID, limits: RedisLimits) -> RedisCredentials:
        self.called.append("create")
        return await self.inner.create(resource_id, limits)

    async def create_fresh(self, resource_id: uuid.UUID, limits: RedisLimits) -> RedisCredentials:
        self.called.append("create_fresh")
        return await self.inner.create_fresh(resource_id, limits)

    async def delete(self, resource_id: uuid.UUID) -> None:
        await self.inner.delete(resource_id)

    async def tenants(self) -> set[uuid.UUID]:
        return await self.inner.tenants()


@pytest.fixture
def lifecycle(
    lifecycle_of: Callable[..., ResourceLifecycle], redis_driver: RedisDriver
) -> ResourceLifecycle:
    return _lifecycle(lifecycle_of, redis_driver)


def _lifecycle(
    lifecycle_of: Callable[..., ResourceLifecycle],
    driver: RedisDriver | FailingDriver | CountingDriver,
) -> ResourceLifecycle:
    return lifecycle_of(driver, create_concurrency=2, delete_concurrency=2, orphan_grace=GRACE)


def _new(*, deadline_in: float = 15.0) -> ProvisionResource:
    return provision_command(
        deadline_in=deadline_in, kind=ResourceKind.REDIS, limits=LIMITS, new_ids=True
    )


async def test_new_ids_are_created_then_recorded_with_their_intent_in_one_append(
    lifecycle: ResourceLifecycle,
    store: EventStore,
    platform_db: asyncpg.Pool,
    redis_driver: RedisDriver,
) -> None:
    command = _new()
    reply = await lifecycle.provision(command)
    events = await store.load(resource_stream(command.resource_id))
    assert [type(e.event).__name__ for e in events] == [
        "ResourceProvisionRequested",
        "ResourceProvisioned",
    ]
    # One append: one time, one command, consecutive positions.
    assert len({(e.recorded_at, e.command_id) for e in events}) == 1
    assert events[1].position == events[0].position + 1
    row = await ResourceReadModel(platform_db).by_id(command.resource_id)
    assert row is not None
    assert row.status is ResourceStatus.ACTIVE
    assert row.created_at == reply.created_at
    assert isinstance(reply.credentials, RedisCredentials)
    tenant = aioredis.Redis.from_url(reply.credentials.connection_url)
    try:
        assert await tenant.set(f"{reply.credentials.key_prefix}k", "v")
    finally:
        await tenant.aclose()
    assert await lifecycle.reconcile() == 0
    assert command.resource_id in await redis_driver.tenants()


async def test_a_repeated_keyed_create_answers_with_the_resource_as_it_is_now(
    lifecycle: ResourceLifecycle, platform_db: asyncpg.Pool
) -> None:
    # ADR 0048: a copy of the first answer would hand out the password a rotation refused.
    keyed = provision_command(kind=ResourceKind.REDIS, limits=LIMITS)
    made = await lifecycle.provision(keyed)
    rotated = (await lifecycle.rotate(rotate_command(keyed.resource_id))).credentials
    again = await lifecycle.provision(keyed)
    assert again.replayed
    assert (again.resource_id, again.created_at) == (made.resource_id, made.created_at)
    assert again.credentials == rotated
    assert again.credentials != made.credentials
    assert isinstance(again.credentials, RedisCredentials)
    assert isinstance(made.credentials, RedisCredentials)
    assert await redis_logs_in(again.credentials.connection_url)
    assert not await redis_logs_in(made.credentials.connection_url)
    # No copy of an answer is kept: the log holds the credentials, sealed, once.
    stored = await platform_db.fetchval(
        "SELECT count(*) FROM command_replies WHERE command_id = $1", keyed.command_id
    )
    assert stored == 0


async def test_a_keyed_create_repeated_after_its_resource_was_deleted_is_refused(
    lifecycle: ResourceLifecycle,
) -> None:
    keyed = provision_command(kind=ResourceKind.REDIS, limits=LIMITS)
    await lifecycle.provision(keyed)
    deleted = await lifecycle.deprovision(
        deprovision_command(keyed.resource_id, correlation_id=keyed.correlation_id)
    )
    assert not deleted.already
    with pytest.raises(SpinupError) as caught:
        await lifecycle.provision(keyed)
    assert caught.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED


async def test_only_new_ids_skip_the_look_for_what_an_earlier_try_left(
    lifecycle_of: Callable[..., ResourceLifecycle], redis_driver: RedisDriver
) -> None:
    counting = CountingDriver(redis_driver)
    lifecycle = _lifecycle(lifecycle_of, counting)
    fresh, keyed = _new(), provision_command(kind=ResourceKind.REDIS, limits=LIMITS)
    await lifecycle.provision(fresh)
    await lifecycle.provision(keyed)
    # A keyed command may be a retry or a duplicate: its create looks first (and resets).
    assert counting.called == ["create_fresh", "create"]
    for command in (fresh, keyed):
        await redis_driver.delete(command.resource_id)


async def test_a_failed_create_removes_its_object_and_records_the_failure_with_its_intent(
    store: EventStore,
    lifecycle_of: Callable[..., ResourceLifecycle],
    redis_driver: RedisDriver,
) -> None:
    failing = _lifecycle(lifecycle_of, FailingDriver(redis_driver))
    command = _new()
    with pytest.raises(SpinupError) as caught:
        await failing.provision(command)
    assert caught.value.code is ErrorCode.BACKEND_UNAVAILABLE
    assert command.resource_id not in await redis_driver.tenants()
    events = await store.load(resource_stream(command.resource_id))
    assert [type(e.event).__name__ for e in events] == [
        "ResourceProvisionRequested",
        "ResourceProvisionFailed",
    ]
    assert events[0].recorded_at == events[1].recorded_at


async def test_a_command_past_its_deadline_creates_and_records_nothing(
    lifecycle: ResourceLifecycle, store: EventStore, redis_driver: RedisDriver
) -> None:
    late = _new(deadline_in=-1)
    with pytest.raises(SpinupError) as caught:
        await lifecycle.provision(late)
    assert caught.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert late.resource_id not in await redis_driver.tenants()
    assert await store.load(resource_stream(late.resource_id)) == []


async def test_losing_the_append_deletes_nothing(
    lifecycle: ResourceLifecycle, store: EventStore, redis_driver: RedisDriver
) -> None:
    command = _new()
    rid = command.resource_id
    # Something else recorded this stream first (never a command with new ids in service).
    await store.append(
        resource_stream(rid),
        0,
        [provision_requested(rid)],
        command_id=uuid.uuid4(),
        correlation_id="c",
    )
    with pytest.raises(SpinupError) as caught:
        await lifecycle.provision(command)
    assert caught.value.code is ErrorCode.COMMAND_IN_PROGRESS
    # The object may be the other writer's: it stays, and a row owns it, so reconcile keeps it.
    assert rid in await redis_driver.tenants()
    assert await lifecycle.reconcile() == 0
    await asyncio.sleep(GRACE.total_seconds() + 0.1)
    assert await lifecycle.reconcile() == 0
    assert rid in await redis_driver.tenants()
    await redis_driver.delete(rid)


async def test_an_object_nobody_owns_is_deleted_after_the_grace_and_not_before(
    lifecycle: ResourceLifecycle, store: EventStore, redis_driver: RedisDriver
) -> None:
    # What a worker killed between the backend call and the append leaves: a user, no row.
    orphan, adopted = uuid.uuid4(), uuid.uuid4()
    await redis_driver.create(orphan, LIMITS)
    await redis_driver.create(adopted, LIMITS)
    owned = _new()
    await lifecycle.provision(owned)
    await lifecycle.reconcile()
    assert {orphan, adopted} <= await redis_driver.tenants()
    # A row appears for one before the grace ends: its append was late, not lost.
    await store.append(
        resource_stream(adopted),
        0,
        [provision_requested(adopted, kind=ResourceKind.REDIS, limits=LIMITS)],
        command_id=uuid.uuid4(),
        correlation_id="c",
    )
    await asyncio.sleep(GRACE.total_seconds() + 0.1)
    await lifecycle.reconcile()
    left = await redis_driver.tenants()
    assert orphan not in left
    assert adopted in left
    assert owned.resource_id in left
    await redis_driver.delete(adopted)
