"""Periodic sweep: send a deprovision command for every due resource, skipping failures.

Command ids are derived from (resource, reason), so when several reaper replicas send the same
command the worker's event stream lets exactly one of them delete anything.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from reaper.handlers import SUSPEND
from shared import metrics
from shared.contracts.commands import (
    ControlStack,
    DeprovisionResource,
    StackAction,
    SuspendResource,
    SweepUsage,
)
from shared.contracts.errors import SpinupError
from shared.contracts.kinds import DeprovisionReason
from shared.contracts.subjects import DEPROVISION_ENDPOINTS, ENDPOINTS, STACK_CONTROL

if TYPE_CHECKING:
    from reaper.handlers import Action, ResourceIndex
    from shared.bus import Bus
    from shared.contracts.kinds import ResourceKind
    from shared.contracts.subjects import KindEndpoints
    from shared.resources import ResourceState

log = structlog.get_logger("reaper.sweep")
REAP_NAMESPACE = uuid.UUID("5f0c2a57-8f43-4c1e-b6c1-7b2f0a9f6e11")


class Sweeper:
    """Finds due resources in the index and deprovisions them at bounded concurrency."""

    def __init__(
        self,
        bus: Bus,
        index: ResourceIndex,
        *,
        grace: timedelta,
        concurrency: int,
        stack_stuck_after: timedelta,
        retry_after_s: float = 30.0,
    ) -> None:
        self._bus = bus
        self._stack_stuck_after = stack_stuck_after
        self._index = index
        self._grace = grace
        self._slots = asyncio.Semaphore(concurrency)
        self._retry_after_s = retry_after_s
        #: (resource, what was sent) -> not again before: a suspend that is done is followed
        #: by the delete at the end of the grace without waiting out the suspend's retry delay.
        self._not_before: dict[tuple[uuid.UUID, str], float] = {}

    async def run(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` until cancelled."""
        while True:
            await self.sweep_once()
            await asyncio.sleep(interval_s)

    async def sweep_once(self) -> int:
        """One pass; returns how many resources were deprovisioned."""
        clock = time.monotonic()
        now = datetime.now(UTC)
        every_due = self._index.due(now, self._grace)
        metrics.REAPER_BACKLOG.set(len(every_due))
        due = [
            (state, action)
            for state, action in every_due
            if self._not_before.get((state.resource_id, action), 0.0) <= clock
        ]
        for state, action in due:
            # Until the outcome's event comes back through the stream, don't send again.
            self._not_before[state.resource_id, action] = clock + self._retry_after_s
        stuck = [
            (stack_id, revision)
            for stack_id, revision in self._index.stuck_stacks(now, self._stack_stuck_after)
            if self._not_before.get((stack_id, "recover"), 0.0) <= clock
        ]
        for stack_id, _ in stuck:
            # The recover's own events move the stack; until they come back, don't send again.
            self._not_before[stack_id, "recover"] = clock + self._retry_after_s
        results = await asyncio.gather(*(self._act(state, action) for state, action in due))
        await asyncio.gather(*(self._recover(stack_id, revision) for stack_id, revision in stuck))
        self._not_before = {k: v for k, v in self._not_before.items() if v > clock}
        return sum(results)

    async def _recover(self, stack_id: uuid.UUID, revision: int) -> None:
        """Ask the stack-deployer to finish or clean up a deploy whose worker died."""
        command = ControlStack(
            command_id=uuid.uuid5(REAP_NAMESPACE, f"recover|{stack_id}|{revision}"),
            correlation_id=f"reaper-{uuid.uuid4().hex[:16]}",
            deadline=time.time() + STACK_CONTROL.timeout,
            resource_id=stack_id,
            action=StackAction.RECOVER,
        )
        async with self._slots:
            try:
                reply = await self._bus.request(STACK_CONTROL, command)
            except SpinupError as exc:
                log.warning(
                    "reaper.stack.unrecovered", stack_id=str(stack_id), error=exc.code.value
                )
                return
        log.info(
            "reaper.stack.recovered",
            stack_id=str(stack_id),
            status=reply.status,
            revision=reply.revision,
        )

    async def _act(self, state: ResourceState, action: Action) -> bool:
        if action == SUSPEND:
            return await self._suspend(state)
        return await self._reap(state, DeprovisionReason(action))

    async def _suspend(self, state: ResourceState) -> bool:
        """Stop an expired resource's credentials; its data stays until its grace ends."""
        if state.kind is None:
            return False
        endpoint = ENDPOINTS[state.kind].suspend
        expiry = state.expires_at.isoformat() if state.expires_at else ""
        command = SuspendResource(
            command_id=uuid.uuid5(REAP_NAMESPACE, f"suspend|{state.resource_id}|{expiry}"),
            correlation_id=f"reaper-{uuid.uuid4().hex[:16]}",
            deadline=time.time() + endpoint.timeout,
            resource_id=state.resource_id,
        )
        async with self._slots:
            try:
                reply = await self._bus.request(endpoint, command)
            except SpinupError as exc:
                log.warning(
                    "reaper.resource.skipped",
                    resource_id=str(state.resource_id),
                    reason=SUSPEND,
                    error=exc.code.value,
                )
                return False
        log.info(
            "reaper.resource.suspended",
            resource_id=str(state.resource_id),
            delete_at=reply.delete_at.isoformat(),
            deleted=reply.deleted,
            already=reply.already,
        )
        return True

    async def _reap(self, state: ResourceState, reason: DeprovisionReason) -> bool:
        if state.kind is None:
            return False
        endpoint = DEPROVISION_ENDPOINTS[state.kind]
        command = DeprovisionResource(
            command_id=uuid.uuid5(REAP_NAMESPACE, f"{reason.value}|{state.resource_id}"),
            correlation_id=f"reaper-{uuid.uuid4().hex[:16]}",
            deadline=time.time() + endpoint.timeout,
            resource_id=state.resource_id,
            reason=reason,
        )
        async with self._slots:
            try:
                reply = await self._bus.request(endpoint, command)
            except SpinupError as exc:
                log.warning(
                    "reaper.resource.skipped",
                    resource_id=str(state.resource_id),
                    reason=reason.value,
                    error=exc.code.value,
                )
                return False
        metrics.REAPER_DELETES.labels(kind=state.kind.value, reason=reason.value).inc()
        log.info(
            "reaper.resource.reaped",
            resource_id=str(state.resource_id),
            reason=reason.value,
            already=reply.already,
        )
        return True


async def sweep_usage_once(bus: Bus) -> int:
    """Ask each kind's worker (one replica, through its queue group) to run its usage sweep.

    Returns how many kinds answered. A kind whose worker is down is skipped until next time.
    """

    async def sweep(kind: ResourceKind, endpoints: KindEndpoints) -> bool:
        endpoint = endpoints.sweep_usage
        command = SweepUsage(
            command_id=uuid.uuid4(),
            correlation_id=f"reaper-{uuid.uuid4().hex[:16]}",
            deadline=time.time() + endpoint.timeout,
            kind=kind,
        )
        try:
            reply = await bus.request(endpoint, command)
        except SpinupError as exc:
            log.warning("reaper.usage.skipped", kind=command.kind.value, error=exc.code.value)
            return False
        log.info(
            "reaper.usage.swept",
            kind=reply.kind.value,
            measured=reply.measured,
            over_quota=reply.over_quota,
            blocked=reply.blocked,
            unblocked=reply.unblocked,
        )
        return True

    results = await asyncio.gather(*(sweep(kind, ends) for kind, ends in ENDPOINTS.items()))
    return sum(results)


async def run_usage_sweeps(bus: Bus, interval_s: float) -> None:
    """Sweep usage every ``interval_s`` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        await sweep_usage_once(bus)
