"""The reaper's schedule for a resource with an export grace (ADR 0030): suspend at
``expires_at``, delete at ``expires_at`` + grace, and nothing else in between.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.contracts.events import (
    Event,
    ResourceExtended,
    ResourceProvisioned,
    ResourceSuspended,
)
from shared.contracts.kinds import DeprovisionReason, ResourceStatus
from shared.resources import Due, ResourceState
from shared.testing.factories import provision_requested

START = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(minutes=10)
GRACE_S = 3600
ORPHAN_GRACE = timedelta(seconds=30)


class Stream:
    """One resource's events, folded as the projection folds them."""

    def __init__(self, *, grace_s: int) -> None:
        self.resource_id = uuid.uuid4()
        self.state = ResourceState(resource_id=self.resource_id)
        requested = provision_requested(
            self.resource_id,
            expires_at=START + TTL,
            deadline=START + timedelta(seconds=15),
            export_grace_seconds=grace_s,
        )
        self.append(requested, START)
        provisioned = ResourceProvisioned(resource_id=self.resource_id, credentials_sealed="x")
        self.append(provisioned, START)

    def append(self, event: Event, at: datetime) -> None:
        self.state = self.state.apply(event, command_id=uuid.uuid4(), recorded_at=at)

    def due(self, at: datetime) -> Due | None:
        return self.state.due(at, ORPHAN_GRACE)


SUSPEND = Due(DeprovisionReason.EXPIRED, suspend=True)
DELETE = Due(DeprovisionReason.EXPIRED)


def test_suspended_at_expiry_and_deleted_when_the_grace_ends() -> None:
    kept = Stream(grace_s=GRACE_S)
    assert kept.due(START + TTL - timedelta(seconds=1)) is None
    assert kept.due(START + TTL) == SUSPEND

    delete_at = START + TTL + timedelta(seconds=GRACE_S)
    kept.append(ResourceSuspended(resource_id=kept.resource_id, delete_at=delete_at), START + TTL)
    # Suspended: nothing to do until the grace ends, however long the reaper keeps looking.
    assert kept.due(START + TTL + timedelta(seconds=1)) is None
    assert kept.due(delete_at - timedelta(seconds=1)) is None
    assert kept.due(delete_at) == DELETE


def test_without_a_grace_it_is_deleted_at_expiry_as_before() -> None:
    assert Stream(grace_s=0).due(START + TTL) == DELETE


def test_one_never_suspended_is_deleted_when_its_grace_ends_not_before() -> None:
    # The workers were down for the whole grace: no suspension ever landed.
    missed = Stream(grace_s=GRACE_S)
    ends = START + TTL + timedelta(seconds=GRACE_S)
    assert missed.due(ends - timedelta(seconds=1)) == SUSPEND
    assert missed.due(ends) == DELETE


def test_an_extension_before_expiry_moves_both_dates() -> None:
    extended = Stream(grace_s=GRACE_S)
    later = START + TTL + timedelta(hours=1)
    event = ResourceExtended(resource_id=extended.resource_id, expires_at=later, extensions=1)
    extended.append(event, START + timedelta(minutes=5))
    assert extended.due(START + TTL) is None
    assert extended.due(later) == SUSPEND


def test_the_grace_is_carried_by_the_event_and_old_events_have_none() -> None:
    old = ResourceState(resource_id=uuid.uuid4())
    requested = provision_requested(old.resource_id, expires_at=START + TTL)
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
