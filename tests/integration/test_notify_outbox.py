"""What the notifier finds to do, asked of the real platform database (docs/adr/0037).

Each test writes a resource's events through the store, as the workers and the gateway do, and
asks ``to_queue``/``to_deliver`` at chosen times. The tables are a scratch schema's: in the
shared ones the running stack's own notifier would deliver a test's due notification between
the test's appends.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gateway.resources.notifier import Notifier
from gateway.resources.outbox import (
    Notice,
    OutboxProjection,
    migrate_outbox,
    rebuild_outbox,
    to_deliver,
    to_queue,
)
from shared.contracts.events import (
    NotificationAttemptFailed,
    NotificationDelivered,
    NotifyTargetSet,
    QuotaExceeded,
    ResourceDeprovisioned,
    ResourceEvent,
    ResourceExtended,
    ResourceProvisioned,
    ResourceSuspended,
)
from shared.contracts.kinds import DeprovisionReason, ResourceKind
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.schema import migrate
from shared.eventlog.store import EventStore
from shared.naming import notification_stream, resource_stream
from shared.testing.factories import provision_requested

pytestmark = pytest.mark.integration

URL = "https://example.com/hook"
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
async def outbox_store(scratch: asyncpg.Pool, env: dict[str, str]) -> EventStore:
    await migrate(scratch)
    await migrate_outbox(scratch)
    return EventStore(
        scratch,
        [ResourceProjection(), OutboxProjection()],
    )


@pytest.fixture
async def conn(scratch: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with scratch.acquire() as connection:
        yield connection


@pytest.fixture
def notifier(outbox_store: EventStore, env: dict[str, str]) -> Notifier:
    return Notifier(
        env["SPINUP_PLATFORM_DSN"],
        outbox_store,
        token_key=b"k" * 32,
        allowed=(),
        retry_s=(10,),
        poll_s=1,
    )


class Resource:
    """One resource's stream, appended to in order."""

    def __init__(self, store: EventStore) -> None:
        self.id = uuid.uuid4()
        self._store = store
        self._version = 0
        self.created_at = LONG_AGO

    async def append(self, *events: ResourceEvent) -> None:
        recorded = await self._store.append(
            resource_stream(self.id),
            self._version,
            list(events),
            command_id=uuid.uuid4(),
            correlation_id="test",
        )
        if self._version == 0:
            self.created_at = recorded[0].recorded_at
        self._version += len(events)

    async def make(self, lifetime_s: float | None, leads: list[int] | None = None) -> None:
        expires_at = datetime.now(UTC) + timedelta(seconds=lifetime_s) if lifetime_s else None
        await self.append(
            provision_requested(self.id, kind=ResourceKind.REDIS, expires_at=expires_at)
        )
        await self.append(ResourceProvisioned(resource_id=self.id, credentials_sealed="sealed"))
        if leads is not None:
            await self.target(leads)

    async def target(self, leads: list[int], url: str | None = URL) -> None:
        await self.append(
            NotifyTargetSet(resource_id=self.id, url=url, secret_generation=1, lead_seconds=leads)
        )

    async def end(self, reason: DeprovisionReason = DeprovisionReason.DELETED) -> None:
        await self.append(ResourceDeprovisioned(resource_id=self.id, reason=reason))

    def at(self, seconds: float) -> datetime:
        return self.created_at + timedelta(seconds=seconds)


async def _due(
    conn: asyncpg.Connection, resource: Resource, now: datetime, since: datetime = LONG_AGO
) -> list[Notice]:
    notices, _ = await to_queue(conn, now, since, 10_000)
    return [n for n in notices if n.resource_id == resource.id]


def _leads(notices: list[Notice]) -> list[int]:
    return [n.data["lead_seconds"] for n in notices if n.notification_type == "resource.expiring"]


async def test_only_the_shortest_due_lead_shorter_than_the_life_is_queued(
    outbox_store: EventStore, conn: asyncpg.Connection
) -> None:
    # 15 minutes to live: the hour's warning never applies, the 10 minutes' does at 5 min.
    short = Resource(outbox_store)
    await short.make(900, [3600, 600])
    assert await _due(conn, short, short.at(299)) == []
    assert _leads(await _due(conn, short, short.at(301))) == [600]
    # Two hours to live, first asked 5 minutes before the end: one warning, the 10 minutes'.
    late = Resource(outbox_store)
    await late.make(7200, [3600, 600])
    assert _leads(await _due(conn, late, late.at(6901))) == [600]
    # Past the expiry, nothing is a warning any more.
    assert await _due(conn, late, late.at(7201)) == []


async def test_each_lead_is_queued_once_per_expiry_and_again_after_an_extension(
    outbox_store: EventStore, conn: asyncpg.Connection, notifier: Notifier
) -> None:
    resource = Resource(outbox_store)
    await resource.make(7200, [3600, 600])
    [hour] = await _due(conn, resource, resource.at(3601))
    assert hour.data["lead_seconds"] == 3600
    await notifier.queue(hour, resource.at(3601))
    await notifier.queue(hour, resource.at(3601))  # a second leader's pass: queued once
    assert await _due(conn, resource, resource.at(3700)) == []
    assert _leads(await _due(conn, resource, resource.at(6601))) == [600]
    # Extended by an hour: the warnings name the new expiry and are due again.
    expires_at = resource.at(7200) + timedelta(hours=1)
    await resource.append(
        ResourceExtended(resource_id=resource.id, expires_at=expires_at, extensions=1)
    )
    assert await _due(conn, resource, resource.at(6601)) == []
    [again] = await _due(conn, resource, resource.at(7201))
    assert again.data["lead_seconds"] == 3600
    assert again.expires_at == expires_at
    assert again.notification_id != hour.notification_id
    events = await outbox_store.load(notification_stream(resource.id))
    assert len(events) == 1


async def test_no_target_no_notice_and_a_cleared_target_ends_them(
    outbox_store: EventStore, conn: asyncpg.Connection
) -> None:
    untargeted = Resource(outbox_store)
    await untargeted.make(900)
    cleared = Resource(outbox_store)
    await cleared.make(900, [600])
    await cleared.target([600], url=None)
    for resource in (untargeted, cleared):
        assert await _due(conn, resource, resource.at(600)) == []
        await resource.end()
        assert await _due(conn, resource, resource.at(1)) == []


async def test_an_end_is_queued_once_with_its_reason(
    outbox_store: EventStore, conn: asyncpg.Connection, notifier: Notifier
) -> None:
    deleted = Resource(outbox_store)
    await deleted.make(None, [600])
    await deleted.end()
    [notice] = await _due(conn, deleted, deleted.at(1))
    assert (notice.notification_type, notice.data) == ("resource.deleted", {"reason": "deleted"})
    # An end recorded before what the caller looked at already is not asked again.
    assert await _due(conn, deleted, deleted.at(1), since=deleted.at(3600)) == []
    await notifier.queue(notice, deleted.at(1))
    assert await _due(conn, deleted, deleted.at(2)) == []
    # Suspended for an export: expired is said then, with the deadline, and not when it ends.
    suspended = Resource(outbox_store)
    await suspended.make(60, [600])
    delete_at = suspended.at(3660)
    await suspended.append(ResourceSuspended(resource_id=suspended.id, delete_at=delete_at))
    [expired] = await _due(conn, suspended, suspended.at(61))
    assert expired.notification_type == "resource.expired"
    assert expired.data["export_until"] == delete_at.isoformat()
    await notifier.queue(expired, suspended.at(61))
    await suspended.end(DeprovisionReason.EXPIRED)
    assert await _due(conn, suspended, suspended.at(3661)) == []


async def test_ends_past_a_full_batch_come_in_the_next_call(
    outbox_store: EventStore, conn: asyncpg.Connection
) -> None:
    ended = []
    for _ in range(3):
        resource = Resource(outbox_store)
        await resource.make(None, [600])
        await resource.end()
        ended.append(resource)
    # Only the test's own ends: from just before the first of them.
    since = ended[0].created_at
    later = ended[-1].at(1)
    first, ends_from = await to_queue(conn, later, since, 2)
    assert [n.resource_id for n in first if n.notification_type == "resource.deleted"] == [
        r.id for r in ended[:2]
    ]
    assert ends_from is not None
    rest, _ = await to_queue(conn, later, ends_from, 2)
    assert ended[2].id in {n.resource_id for n in rest}


async def test_over_quota_while_targeted_is_queued_once(
    outbox_store: EventStore, conn: asyncpg.Connection, notifier: Notifier
) -> None:
    resource = Resource(outbox_store)
    await resource.make(None)
    await resource.append(QuotaExceeded(resource_id=resource.id, usage_bytes=5, quota_bytes=4))
    await resource.target([600])
    assert await _due(conn, resource, resource.at(1)) == []  # before the target: not said
    await resource.append(QuotaExceeded(resource_id=resource.id, usage_bytes=9, quota_bytes=4))
    [notice] = await _due(conn, resource, resource.at(1))
    assert notice.data == {"usage_bytes": 9, "quota_bytes": 4}
    await notifier.queue(notice, resource.at(1))
    assert await _due(conn, resource, resource.at(2)) == []


async def test_deliveries_are_due_until_delivered_or_given_up(
    outbox_store: EventStore,
    conn: asyncpg.Connection,
    notifier: Notifier,
    scratch: asyncpg.Pool,
) -> None:
    resource = Resource(outbox_store)
    await resource.make(None, [600])
    await resource.end()
    [notice] = await _due(conn, resource, resource.at(1))
    await notifier.queue(notice, resource.at(1))
    far = datetime.now(UTC) + timedelta(days=1)

    async def pending(now: datetime) -> list[int]:
        return [
            p.attempts
            for p in await to_deliver(conn, now, 10_000)
            if p.queued.notification_id == notice.notification_id
        ]

    assert await pending(far) == [0]
    stream = notification_stream(resource.id)
    retry_at = datetime.now(UTC) + timedelta(hours=1)
    await outbox_store.append(
        stream,
        1,
        [
            NotificationAttemptFailed(
                resource_id=resource.id,
                notification_id=notice.notification_id,
                attempt=1,
                error="HTTP 500",
                retry_at=retry_at,
            )
        ],
        command_id=uuid.uuid4(),
        correlation_id="test",
    )
    assert await pending(retry_at - timedelta(seconds=1)) == []
    assert await pending(retry_at) == [1]
    await outbox_store.append(
        stream,
        2,
        [
            NotificationDelivered(
                resource_id=resource.id,
                notification_id=notice.notification_id,
                attempt=2,
                status_code=204,
            )
        ],
        command_id=uuid.uuid4(),
        correlation_id="test",
    )
    assert await pending(far) == []
    # The table is the fold of the log: rebuilt from it alone, every row is the same.
    before = await scratch.fetch("SELECT * FROM notifications ORDER BY id")
    assert await rebuild_outbox(scratch) == len(before)
    assert await scratch.fetch("SELECT * FROM notifications ORDER BY id") == before
