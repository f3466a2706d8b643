"""The provisioning algorithm against the real event log, the real customer Postgres and the
real worker: duplicates, deadlines, cleanup."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

from pg_provisioner.driver import PostgresDriver
from shared.bus import Bus
from shared.contracts.commands import DeprovisionResource
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import (
    Caps,
    DeprovisionReason,
    PostgresCredentials,
    PostgresLimits,
    ResourceKind,
)
from shared.contracts.subjects import DEPROVISION_ENDPOINTS, PROVISION_POSTGRES
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.naming import resource_stream
from shared.testing.factories import at_its_cap, deprovision_command, provision_command

pytestmark = pytest.mark.integration


async def test_same_command_delivered_concurrently_makes_exactly_one_resource(
    bus: Bus, platform_db: asyncpg.Pool, driver: PostgresDriver
) -> None:
    once = provision_command()
    replies = await asyncio.gather(*(bus.request(PROVISION_POSTGRES, once) for _ in range(4)))
    assert len({r.credentials.connection_url for r in replies}) == 1
    assert sum(not r.replayed for r in replies) == 1
    assert (
        await platform_db.fetchval(
            "SELECT count(*) FROM events"
            " WHERE stream_id = $1 AND event_type = 'ResourceProvisionRequested'",
            resource_stream(once.resource_id),
        )
        == 1
    )
    conn = await asyncpg.connect(replies[0].credentials.connection_url)
    await conn.close()
    # Through its worker, so the log says it is gone too: a test that compares the backends
    # with the log (the crash tests) must not find it missing.
    endpoint = DEPROVISION_ENDPOINTS[ResourceKind.POSTGRES]
    await bus.request(
        endpoint,
        deprovision_command(
            once.resource_id, deadline_in=endpoint.timeout, correlation_id=once.correlation_id
        ),
    )
    assert not await driver.exists(once.resource_id)


async def test_command_already_past_its_deadline_creates_nothing(
    bus: Bus, platform_db: asyncpg.Pool, driver: PostgresDriver
) -> None:
    late = provision_command(deadline_in=-1)
    with pytest.raises(SpinupError) as caught:
        await bus.request(PROVISION_POSTGRES, late)
    assert caught.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert not await driver.exists(late.resource_id)
    assert not await platform_db.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1", resource_stream(late.resource_id)
    )


class SlowDriver:
    """The real driver, answering after the deadline, as an overloaded server would."""

    kind = ResourceKind.POSTGRES

    def __init__(self, inner: PostgresDriver, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    async def create(self, resource_id: uuid.UUID, limits: PostgresLimits) -> PostgresCredentials:
        credentials = await self.inner.create(resource_id, limits)
        await asyncio.sleep(self.delay)
        return credentials

    async def delete(self, resource_id: uuid.UUID) -> None:
        await self.inner.delete(resource_id)


async def test_worker_finishing_past_the_deadline_undoes_its_work_and_records_it(
    store: EventStore, lifecycle_of: Callable[..., ResourceLifecycle], driver: PostgresDriver
) -> None:
    lifecycle = lifecycle_of(SlowDriver(driver, delay=1.0))
    slow = provision_command(deadline_in=0.5)
    with pytest.raises(SpinupError) as caught:
        await lifecycle.provision(slow)
    assert caught.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert not await driver.exists(slow.resource_id)
    events = [e.event for e in await store.load(resource_stream(slow.resource_id))]
    assert [type(e).__name__ for e in events] == [
        "ResourceProvisionRequested",
        "ResourceProvisionFailed",
    ]
    assert events[-1].cleaned_up is True  # type: ignore[union-attr]
    assert events[-1].code == "deadline_exceeded"  # type: ignore[union-attr]


class CountedCreates:
    """The real driver, counting the creates it is asked for."""

    kind = ResourceKind.POSTGRES

    def __init__(self, inner: PostgresDriver) -> None:
        self.inner = inner
        self.creates = 0
        self.take = inner.take
        self.tenants = inner.tenants

    async def create(self, resource_id: uuid.UUID, limits: PostgresLimits) -> PostgresCredentials:
        self.creates += 1
        return await self.inner.create(resource_id, limits)

    async def delete(self, resource_id: uuid.UUID) -> None:
        await self.inner.delete(resource_id)


async def test_a_database_over_the_caps_with_nothing_to_take_is_not_made_at_all(
    store: EventStore, lifecycle_of: Callable[..., ResourceLifecycle], driver: PostgresDriver
) -> None:
    # No warm pool here, so nothing to take: the caps are counted before CREATE DATABASE, not
    # only by the append after it (which would refuse too, and drop what was made).
    counted = CountedCreates(driver)
    lifecycle = lifecycle_of(counted)
    at_the_cap = at_its_cap()
    with pytest.raises(SpinupError) as caught:
        await lifecycle.provision(at_the_cap)
    assert caught.value.code is ErrorCode.PLAN_LIMIT_REACHED
    assert counted.creates == 0
    assert not await driver.exists(at_the_cap.resource_id)
    assert await store.load(resource_stream(at_the_cap.resource_id)) == []
    within = msgspec.structs.replace(
        at_the_cap, command_id=uuid.uuid4(), caps=Caps(active_per_kind=1, provisions_per_day=10)
    )
    await lifecycle.provision(within)
    assert counted.creates == 1
    await lifecycle.deprovision(
        deprovision_command(within.resource_id, correlation_id=within.correlation_id)
    )
    assert not await driver.exists(within.resource_id)


async def test_an_expiry_delete_is_refused_once_the_log_says_it_no_longer_expires(
    bus: Bus, driver: PostgresDriver
) -> None:
    # The reaper sends it from its view of the log, which trails the log by the relay's lag:
    # an extension appended in between must win.
    command = provision_command(expires_at=datetime.now(UTC) + timedelta(hours=1))
    reply = await bus.request(PROVISION_POSTGRES, command)
    endpoint = DEPROVISION_ENDPOINTS[ResourceKind.POSTGRES]

    def deprovision(reason: DeprovisionReason) -> DeprovisionResource:
        return deprovision_command(command.resource_id, reason=reason, deadline_in=endpoint.timeout)

    with pytest.raises(SpinupError) as caught:
        await bus.request(endpoint, deprovision(DeprovisionReason.EXPIRED))
    assert caught.value.code is ErrorCode.INVALID_COMMAND
    assert "Not expired" in caught.value.message
    conn = await asyncpg.connect(reply.credentials.connection_url)
    await conn.close()
    await bus.request(endpoint, deprovision(DeprovisionReason.DELETED))
    assert not await driver.exists(command.resource_id)
