"""The reaper's schedule for a resource with an export grace (ADR 0030): suspend at
``expires_at``, delete at ``expires_at`` + grace, and nothing else in between.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from reaper.handlers import SUSPEND, ResourceIndex
from shared.contracts.events import (
    Event,
    RecordedEvent,
    ResourceExtended,
    ResourceProvisioned,
    ResourceProvisionRequested,
    ResourceSuspended,
)
from shared.contracts.kinds import DeprovisionReason, ResourceKind, ResourceStatus
from shared.naming import resource_stream
from shared.resources import ResourceState
from shared.testing.factories import LIMITS

START = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(minutes=10)
GRACE_S = 3600
ORPHAN_GRACE = timedelta(seconds=30)


def recorded(resource_id: uuid.UUID, version: int, event: Event, at: datetime) -> RecordedEvent:
    return RecordedEvent(
        position=version,
        stream_id=resource_stream(resource_id),
        version=version,
        event_id=uuid.uuid4(),
        command_id=uuid.uuid4(),
        correlation_id="test",
        recorded_at=at,
        event=event,  # type: ignore[arg-type]
    )


def live_database(index: ResourceIndex, *, grace_s: int) -> uuid.UUID:
    resource_id = uuid.uuid4()
    requested = ResourceProvisionRequested(
        resource_id=resource_id,
        kind=ResourceKind.POSTGRES,
        tier="anonymous",
        limits=LIMITS,
        token_hash="h",
        fingerprint="f",
        name=None,
        expires_at=START + TTL,
        deadline=START + timedelta(seconds=15),
        export_grace_seconds=grace_s,
    )
    index.apply(recorded(resource_id, 1, requested, START))
    provisioned = ResourceProvisioned(resource_id=resource_id, credentials_sealed="x")
    index.apply(recorded(resource_id, 2, provisioned, START))
    return resource_id


def actions(index: ResourceIndex, at: datetime) -> dict[uuid.UUID, object]:
    return {state.resource_id: action for state, action in index.due(at, ORPHAN_GRACE)}


def test_suspended_at_expiry_and_deleted_when_the_grace_ends() -> None:
    index = ResourceIndex()
    kept = live_database(index, grace_s=GRACE_S)
    assert actions(index, START + TTL - timedelta(seconds=1)) == {}
    assert actions(index, START + TTL) == {kept: SUSPEND}

    delete_at = START + TTL + timedelta(seconds=GRACE_S)
    suspended = ResourceSuspended(resource_id=kept, delete_at=delete_at)
    index.apply(recorded(kept, 3, suspended, START + TTL))
    # Suspended: nothing to do until the grace ends, however long the reaper keeps looking.
    assert actions(index, START + TTL + timedelta(seconds=1)) == {}
    assert actions(index, delete_at - timedelta(seconds=1)) == {}
    assert actions(index, delete_at) == {kept: DeprovisionReason.EXPIRED}


def test_without_a_grace_it_is_deleted_at_expiry_as_before() -> None:
    index = ResourceIndex()
    plain = live_database(index, grace_s=0)
    assert actions(index, START + TTL) == {plain: DeprovisionReason.EXPIRED}


def test_one_never_suspended_is_deleted_when_its_grace_ends_not_before() -> None:
    # The workers were down for the whole grace: no suspension ever landed.
    index = ResourceIndex()
    missed = live_database(index, grace_s=GRACE_S)
    ends = START + TTL + timedelta(seconds=GRACE_S)
    assert actions(index, ends - timedelta(seconds=1)) == {missed: SUSPEND}
    assert actions(index, ends) == {missed: DeprovisionReason.EXPIRED}


def test_an_extension_before_expiry_moves_both_dates() -> None:
    index = ResourceIndex()
    extended = live_database(index, grace_s=GRACE_S)
    later = START + TTL + timedelta(hours=1)
    event = ResourceExtended(resource_id=extended, expires_at=later, extensions=1)
    index.apply(recorded(extended, 3, event, START + timedelta(minutes=5)))
    assert actions(index, START + TTL) == {}
    assert actions(index, later) == {extended: SUSPEND}


def test_the_grace_is_carried_by_the_event_and_old_events_have_none() -> None:
    old = ResourceState(resource_id=uuid.uuid4())
    requested = ResourceProvisionRequested(
        resource_id=old.resource_id,
        kind=ResourceKind.POSTGRES,
        tier="anonymous",
        limits=LIMITS,
        token_hash="h",
        fingerprint="f",
        name=None,
        expires_at=START + TTL,
        deadline=START,
    )
    state = old.apply(requested, command_id=uuid.uuid4(), recorded_at=START)
    assert state.export_grace_seconds == 0
    assert state.grace_ends_at == START + TTL
    suspended = state.apply(
        ResourceSuspended(resource_id=old.resource_id, delete_at=START + TTL),
        command_id=uuid.uuid4(),
        recorded_at=START + TTL,
    )
    assert suspended.status is ResourceStatus.SUSPENDED
    assert not suspended.is_gone
