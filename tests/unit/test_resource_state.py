import uuid
from datetime import UTC, datetime, timedelta

from shared.contracts.events import (
    RecordedEvent,
    ResourceDeprovisioned,
    ResourceDeprovisionRequested,
    ResourceEvent,
    ResourceProvisioned,
    ResourceProvisionFailed,
    ResourceProvisionRequested,
)
from shared.contracts.kinds import DeprovisionReason, PostgresLimits, ResourceKind, ResourceStatus
from shared.resources import Due, ResourceState

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = PostgresLimits(storage_mb=1, connections=1, statement_timeout_ms=1, temp_file_limit_mb=1)


def requested(resource_id: uuid.UUID, *, expires_at: datetime | None) -> ResourceProvisionRequested:
    return ResourceProvisionRequested(
        resource_id=resource_id,
        kind=ResourceKind.POSTGRES,
        tier="anonymous",
        limits=LIMITS,
        token_hash="h",
        fingerprint="f",
        name=None,
        expires_at=expires_at,
        deadline=NOW + timedelta(seconds=10),
    )


def recorded(version: int, event: ResourceEvent, at: datetime = NOW) -> RecordedEvent:
    return RecordedEvent(
        position=version,
        stream_id=f"resource-{event.resource_id}",
        version=version,
        event_id=uuid.uuid4(),
        command_id=uuid.uuid4(),
        correlation_id="c",
        recorded_at=at,
        event=event,
    )


def fold(*items: RecordedEvent) -> ResourceState:
    rid = items[0].event.resource_id
    return ResourceState.fold(rid, ((r.event, r.command_id, r.recorded_at) for r in items))


def test_lifecycle_states_follow_the_events() -> None:
    rid = uuid.uuid4()
    first = recorded(1, requested(rid, expires_at=None))
    assert fold(first).status is ResourceStatus.PROVISIONING
    made = recorded(2, ResourceProvisioned(resource_id=rid, credentials_sealed="s"))
    assert fold(first, made).status is ResourceStatus.ACTIVE
    asked = recorded(
        3, ResourceDeprovisionRequested(resource_id=rid, reason=DeprovisionReason.EXPIRED)
    )
    assert fold(first, made, asked).status is ResourceStatus.DELETING
    gone = recorded(4, ResourceDeprovisioned(resource_id=rid, reason=DeprovisionReason.EXPIRED))
    final = fold(first, made, asked, gone)
    assert final.status is ResourceStatus.EXPIRED
    assert final.credentials_sealed is None
    assert final.version == 4


def test_failed_provision_that_left_something_needs_cleanup() -> None:
    rid = uuid.uuid4()
    state = fold(
        recorded(1, requested(rid, expires_at=None)),
        recorded(
            2, ResourceProvisionFailed(resource_id=rid, code="x", message="m", cleaned_up=False)
        ),
    )
    assert state.status is ResourceStatus.FAILED
    assert state.needs_cleanup


def test_due_are_expired_orphaned_and_stalled_resources_only() -> None:
    expired, fresh, orphan, permanent, stalled = (uuid.uuid4() for _ in range(5))
    states = [
        fold(
            recorded(1, requested(expired, expires_at=NOW - timedelta(seconds=1))),
            recorded(2, ResourceProvisioned(resource_id=expired, credentials_sealed="s")),
        ),
        fold(
            recorded(1, requested(fresh, expires_at=NOW + timedelta(hours=1))),
            recorded(2, ResourceProvisioned(resource_id=fresh, credentials_sealed="s")),
        ),
        fold(recorded(1, requested(orphan, expires_at=None))),  # never finished
        fold(
            recorded(1, requested(permanent, expires_at=None)),
            recorded(2, ResourceProvisioned(resource_id=permanent, credentials_sealed="s")),
        ),
        fold(
            recorded(1, requested(stalled, expires_at=None)),
            recorded(2, ResourceProvisioned(resource_id=stalled, credentials_sealed="s")),
            recorded(
                3,
                ResourceDeprovisionRequested(resource_id=stalled, reason=DeprovisionReason.DELETED),
            ),
        ),
    ]
    later = NOW + timedelta(minutes=5)
    due = {s.resource_id: d for s in states if (d := s.due(later, timedelta(seconds=60)))}
    assert due == {
        expired: Due(DeprovisionReason.EXPIRED),
        orphan: Due(DeprovisionReason.ORPHANED),
        stalled: Due(DeprovisionReason.DELETED),
    }
    # Within the orphan grace, a worker may still be at it.
    unfinished = fold(recorded(1, requested(orphan, expires_at=None)))
    assert unfinished.due(NOW, timedelta(seconds=60)) is None


def test_gone_resources_are_never_due() -> None:
    EXPIRED = DeprovisionReason.EXPIRED  # noqa: N806
    rid = uuid.uuid4()
    state = fold(
        recorded(1, requested(rid, expires_at=NOW)),
        recorded(2, ResourceProvisioned(resource_id=rid, credentials_sealed="s")),
        recorded(3, ResourceDeprovisionRequested(resource_id=rid, reason=EXPIRED)),
        recorded(4, ResourceDeprovisioned(resource_id=rid, reason=EXPIRED)),
    )
    assert state.is_gone
    assert state.due(NOW + timedelta(days=1), timedelta(seconds=60)) is None
