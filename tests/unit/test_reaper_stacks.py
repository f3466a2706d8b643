"""The reaper's view of stacks: which deploys lost their worker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from reaper.handlers import ResourceIndex
from shared.contracts.events import (
    Event,
    RecordedEvent,
    ResourceProvisioned,
    ResourceProvisionRequested,
    StackDeployStarted,
    StackReady,
)
from shared.contracts.kinds import ResourceKind, StackLimits
from shared.naming import resource_stream

LIMITS = StackLimits(services=3, memory_mb=128, cpu_millis=250, pids=64, upload_mb=10)
START = datetime(2026, 1, 1, tzinfo=UTC)


def recorded(stack_id: uuid.UUID, version: int, event: Event, at: datetime) -> RecordedEvent:
    return RecordedEvent(
        position=version,
        stream_id=resource_stream(stack_id),
        version=version,
        event_id=uuid.uuid4(),
        command_id=uuid.uuid4(),
        correlation_id="test",
        recorded_at=at,
        event=event,  # type: ignore[arg-type]
    )


def provisioned_stack(index: ResourceIndex) -> uuid.UUID:
    stack_id = uuid.uuid4()
    requested = ResourceProvisionRequested(
        resource_id=stack_id,
        kind=ResourceKind.STACK,
        tier="anonymous",
        limits=LIMITS,
        token_hash="h",
        fingerprint="f",
        name=None,
        expires_at=None,
        deadline=START + timedelta(seconds=20),
    )
    index.apply(recorded(stack_id, 1, requested, START))
    done = ResourceProvisioned(resource_id=stack_id, credentials_sealed="x")
    index.apply(recorded(stack_id, 2, done, START))
    return stack_id


def test_a_deploy_that_stops_moving_is_stuck_after_the_timeout_and_a_ready_one_never() -> None:
    index = ResourceIndex()
    building = provisioned_stack(index)
    started = StackDeployStarted(resource_id=building, revision=1, services=["web"])
    index.apply(recorded(building, 3, started, START + timedelta(seconds=5)))
    ready = provisioned_stack(index)
    index.apply(
        recorded(
            ready, 3, StackDeployStarted(resource_id=ready, revision=1, services=["web"]), START
        )
    )
    index.apply(recorded(ready, 4, StackReady(resource_id=ready, revision=1), START))
    after = timedelta(seconds=60)

    assert index.stuck_stacks(START + timedelta(seconds=64), after) == []
    assert index.stuck_stacks(START + timedelta(seconds=65), after) == [(building, 1)]


def test_a_stack_whose_deploy_never_began_is_stuck_too() -> None:
    index = ResourceIndex()
    pending = provisioned_stack(index)
    assert index.stuck_stacks(START + timedelta(seconds=60), timedelta(seconds=60)) == [
        (pending, 0)
    ]
