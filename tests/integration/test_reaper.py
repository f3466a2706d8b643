"""The reaper against the running system: orphans of dead workers, replicas racing, and the
queries each kind's worker answers its sweeps with (ADR 0035)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from pg_provisioner.driver import PostgresDriver
from reaper.sweep import Sweeper
from shared.bus import Bus
from shared.contracts.events import (
    ResourceDeprovisioned,
    ResourceDeprovisionRequested,
    ResourceEvent,
    ResourceProvisioned,
    StackDeployStarted,
    StackReady,
)
from shared.contracts.kinds import DeprovisionReason, ResourceKind, ResourceStatus, StackLimits
from shared.contracts.subjects import PROVISION_POSTGRES
from shared.eventlog.projections import ResourceReadModel
from shared.eventlog.store import EventStore
from shared.naming import resource_stream
from shared.resources import Due
from shared.testing.factories import LIMITS, provision_command, provision_requested
from shared.testing.polling import eventually

pytestmark = pytest.mark.integration
STACK_LIMITS = StackLimits(services=3, memory_mb=128, cpu_millis=250, pids=64, upload_mb=10)


async def wait_for_status(
    platform_db: asyncpg.Pool, resource_id: uuid.UUID, status: ResourceStatus
) -> None:
    read_model = ResourceReadModel(platform_db)

    async def current() -> ResourceStatus | None:
        state = await read_model.by_id(resource_id)
        return state.status if state else None

    async def reached() -> bool:
        return await current() is status

    assert await eventually(reached), f"{resource_id} is {await current()}, expected {status}"


async def test_a_worker_that_died_mid_provision_is_cleaned_up_by_the_reaper(
    store: EventStore, driver: PostgresDriver, platform_db: asyncpg.Pool
) -> None:
    # What a worker killed between its backend call and its outcome leaves behind: the intent
    # in the log, the database in Postgres, and no outcome.
    resource_id = uuid.uuid4()
    await store.append(
        resource_stream(resource_id),
        0,
        [provision_requested(resource_id, deadline=datetime.now(UTC) - timedelta(seconds=1))],
        command_id=uuid.uuid4(),
        correlation_id="killed-worker",
    )
    await driver.create(resource_id, LIMITS)

    await wait_for_status(platform_db, resource_id, ResourceStatus.DELETED)
    assert not await driver.exists(resource_id)
    reason = await platform_db.fetchval(
        "SELECT deprovision_reason FROM resources WHERE id = $1", resource_id
    )
    assert reason == "orphaned"


async def test_reaper_replicas_racing_on_one_expired_resource_delete_it_once(
    bus: Bus, store: EventStore, driver: PostgresDriver, platform_db: asyncpg.Pool
) -> None:
    resource_id = uuid.uuid4()
    await bus.request(
        PROVISION_POSTGRES,
        provision_command(
            resource_id=resource_id, expires_at=datetime.now(UTC) - timedelta(seconds=1)
        ),
    )
    replicas = [
        Sweeper(
            bus,
            grace=timedelta(seconds=60),
            concurrency=2,
            stack_stuck_after=timedelta(seconds=60),
        )
        for _ in range(3)
    ]

    await asyncio.gather(*(replica.sweep_once() for replica in replicas))

    types = [type(e.event).__name__ for e in await store.load(resource_stream(resource_id))]
    assert types.count("ResourceDeprovisionRequested") == 1
    assert types.count("ResourceDeprovisioned") == 1
    assert not await driver.exists(resource_id)
    await wait_for_status(platform_db, resource_id, ResourceStatus.EXPIRED)


async def append(
    store: EventStore, resource_id: uuid.UUID, version: int, *events: ResourceEvent
) -> None:
    await store.append(
        resource_stream(resource_id),
        version,
        list(events),
        command_id=uuid.uuid4(),
        correlation_id="reaper-test",
    )


async def test_the_due_query_finds_what_the_fold_says_is_due_and_nothing_else(
    store: EventStore, platform_db: asyncpg.Pool
) -> None:
    now = datetime.now(UTC)
    expires = now + timedelta(days=3)
    plain, graced, fresh, orphan = (uuid.uuid4() for _ in range(4))
    for resource_id, grace_s, expires_at in (
        (plain, 0, expires),
        (graced, 3600, expires),
        (fresh, 0, expires + timedelta(hours=1)),
    ):
        requested = provision_requested(
            resource_id, expires_at=expires_at, export_grace_seconds=grace_s
        )
        provisioned = ResourceProvisioned(resource_id=resource_id, credentials_sealed="x")
        await append(store, resource_id, 0, requested, provisioned)
    # An intent whose outcome never came, its deadline three days ahead: an orphan by then.
    await append(store, orphan, 0, provision_requested(orphan, deadline=expires))

    read_model = ResourceReadModel(platform_db)
    at = expires + timedelta(seconds=1)
    found, backlog = await read_model.due(
        ResourceKind.POSTGRES, at, timedelta(seconds=1), limit=1_000_000
    )
    due = {state.resource_id: reason for state, reason in found}
    assert due[plain] == Due(DeprovisionReason.EXPIRED)
    assert due[graced] == Due(DeprovisionReason.EXPIRED, suspend=True)
    assert due[orphan] == Due(DeprovisionReason.ORPHANED)
    assert fresh not in due
    assert backlog == len(found)
    # Bounded answers come oldest first and still count the whole backlog.
    first, counted = await read_model.due(ResourceKind.POSTGRES, at, timedelta(seconds=1), limit=1)
    assert (len(first), counted) == (1, backlog)
    # Each kind's worker is asked for its own kind only.
    caches, _ = await read_model.due(ResourceKind.REDIS, at, timedelta(seconds=1), limit=1_000_000)
    assert {state.kind for state, _ in caches} <= {ResourceKind.REDIS}
    assert not {plain, graced, orphan} & {state.resource_id for state, _ in caches}
    for resource_id in (plain, graced, fresh, orphan):
        await retire(store, resource_id)


async def test_a_stack_deploy_that_stopped_moving_is_found_and_a_finished_one_never(
    store: EventStore, platform_db: asyncpg.Pool
) -> None:
    building, ready = uuid.uuid4(), uuid.uuid4()
    for stack_id in (building, ready):
        requested = provision_requested(stack_id, kind=ResourceKind.STACK, limits=STACK_LIMITS)
        provisioned = ResourceProvisioned(resource_id=stack_id, credentials_sealed="x")
        started = StackDeployStarted(resource_id=stack_id, revision=1, services=["web"])
        await append(store, stack_id, 0, requested, provisioned, started)
    await append(store, ready, 3, StackReady(resource_id=ready, revision=1))

    read_model = ResourceReadModel(platform_db)
    after = timedelta(days=1)
    now = datetime.now(UTC)
    assert building not in dict(await read_model.stuck_stacks(now, after))
    stuck = dict(await read_model.stuck_stacks(now + after + timedelta(seconds=1), after))
    assert stuck[building] == 1
    assert ready not in stuck
    for stack_id in (building, ready):
        await retire(store, stack_id)


async def retire(store: EventStore, resource_id: uuid.UUID) -> None:
    """End a test's made-up resource in the log, so the running reaper never acts on it."""
    version = len(await store.load(resource_stream(resource_id)))
    reason = DeprovisionReason.DELETED
    await append(
        store,
        resource_id,
        version,
        ResourceDeprovisionRequested(resource_id=resource_id, reason=reason),
        ResourceDeprovisioned(resource_id=resource_id, reason=reason),
    )
