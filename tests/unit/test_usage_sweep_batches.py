"""A usage sweep asks its driver in batches of the driver's own size (ADR 0045)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from shared.contracts.commands import SweepUsage
from shared.contracts.events import ResourceProvisioned
from shared.contracts.kinds import ResourceKind
from shared.lifecycle import ResourceLifecycle
from shared.resources import ResourceState
from shared.testing.factories import provision_requested


class MeasuringDriver:
    """Answers every ``usage`` call with 0 bytes for each resource asked, and keeps the calls."""

    kind = ResourceKind.POSTGRES
    usage_batch = 3

    def __init__(self) -> None:
        self.asked: list[int] = []

    async def usage(self, resource_ids: Sequence[UUID]) -> dict[UUID, int]:
        self.asked.append(len(resource_ids))
        return dict.fromkeys(resource_ids, 0)


class LiveResources:
    """The read model's two calls a sweep makes: the live resources, then what was measured."""

    def __init__(self, count: int) -> None:
        self.states = [live_database() for _ in range(count)]
        self.recorded: dict[UUID, int] = {}

    async def live_of_kind(self, kind: ResourceKind) -> list[ResourceState]:
        assert kind is ResourceKind.POSTGRES
        return self.states

    async def record_usage(self, measured: dict[UUID, int]) -> None:
        self.recorded.update(measured)


def live_database() -> ResourceState:
    resource_id = uuid.uuid4()
    state = ResourceState(resource_id=resource_id)
    now = datetime.now(UTC)
    for event in (
        provision_requested(resource_id),
        ResourceProvisioned(resource_id=resource_id, credentials_sealed="x"),
    ):
        state = state.apply(event, command_id=uuid.uuid4(), recorded_at=now)
    return state


async def test_seven_resources_are_measured_three_three_and_one() -> None:
    driver = MeasuringDriver()
    resources = LiveResources(7)
    lifecycle = ResourceLifecycle(
        cast("Any", None),  # the store: nothing is over quota, so nothing is appended
        cast("Any", None),
        cast("Any", driver),
        resources=cast("Any", resources),
        create_concurrency=1,
        delete_concurrency=1,
        usage_sweep_duty=1.0,  # no rests: this test is about the batches
    )
    command = SweepUsage(
        command_id=uuid.uuid4(),
        correlation_id="test",
        deadline=time.time() + 60,
        kind=ResourceKind.POSTGRES,
    )
    swept = await lifecycle.sweep_usage(command)
    assert driver.asked == [3, 3, 1]
    assert swept.measured == 7
    assert set(resources.recorded) == {state.resource_id for state in resources.states}
