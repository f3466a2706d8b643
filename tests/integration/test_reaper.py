"""The reaper against the running system: orphans of dead workers, and replicas racing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from pg_provisioner.driver import PostgresDriver
from reaper.handlers import ResourceIndex
from reaper.sweep import Sweeper
from shared.bus import Bus
from shared.contracts.kinds import ResourceStatus
from shared.contracts.subjects import PROVISION_POSTGRES
from shared.eventlog.projections import ResourceReadModel
from shared.eventlog.store import EventStore
from shared.naming import resource_stream
from shared.testing.factories import LIMITS, provision_command, provision_requested
from shared.testing.polling import eventually

pytestmark = pytest.mark.integration


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
    replicas = []
    for _ in range(3):
        index = ResourceIndex()
        for recorded in await store.load(resource_stream(resource_id)):
            index.apply(recorded)
        replicas.append(
            Sweeper(
                bus,
                index,
                grace=timedelta(seconds=60),
                concurrency=2,
                stack_stuck_after=timedelta(seconds=60),
            )
        )

    await asyncio.gather(*(replica.sweep_once() for replica in replicas))

    types = [type(e.event).__name__ for e in await store.load(resource_stream(resource_id))]
    assert types.count("ResourceDeprovisionRequested") == 1
    assert types.count("ResourceDeprovisioned") == 1
    assert not await driver.exists(resource_id)
    await wait_for_status(platform_db, resource_id, ResourceStatus.EXPIRED)
