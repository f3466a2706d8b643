"""Periodic sweep: ask each kind's worker what is due, then suspend, deprovision or recover it.

The reaper holds no credentials and no database connection: each kind's worker answers what is
due from the indexed ``resources`` projection (``FindDue``, docs/adr/0035), and the reaper sends
the commands. Command ids are derived from (resource, reason), so when several reaper replicas
send the same command the worker's event stream lets exactly one of them delete anything.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import structlog

from shared.contracts.commands import (
    ControlStack,
    DeprovisionResource,
    FindDue,
    StackAction,
    SuspendResource,
    SweepUsage,
)
from shared.contracts.errors import SpinupError
from shared.contracts.subjects import DEPROVISION_ENDPOINTS, ENDPOINTS, STACK_CONTROL
from shared.observability import metrics

if TYPE_CHECKING:
    from datetime import timedelta

    from shared.bus import Bus
    from shared.contracts.kinds import ResourceKind
    from shared.contracts.replies import DueFound, DueResource

log = structlog.get_logger("reaper.sweep")
REAP_NAMESPACE = uuid.UUID("5f0c2a57-8f43-4c1e-b6c1-7b2f0a9f6e11")
#: Resources of one kind acted on per sweep: bounds a sweep's answer and its duration; the rest
#: come in the next sweeps, oldest first.
DUE_PER_KIND = 1000
SUSPEND = "suspend"


def _action(item: DueResource) -> str:
    return SUSPEND if item.suspend else item.reason.value


class Sweeper:
    """Asks every kind what is due and acts on it at bounded concurrency."""

    def __init__(
        self,
        bus: Bus,
        *,
        grace: timedelta,
        concurrency: int,
        stack_stuck_after: timedelta,
        retry_after_s: float = 30.0,
        due_per_kind: int = DUE_PER_KIND,
    ) -> None:
        self._bus = bus
        self._stack_stuck_after = stack_stuck_after
        self._grace = grace
        self._slots = asyncio.Semaphore(concurrency)
        self._retry_after_s = retry_after_s
        self._due_per_kind = due_per_kind
        #: (resource, what was sent) -> not again before: a suspend that is done is followed
        #: by the delete at the end of the grace without waiting out the suspend's retry delay.
        self._not_before: dict[tuple[uuid.UUID, str], float] = {}

    async def run(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` until cancelled."""
        while True:
            await self.sweep_once()
            await asyncio.sleep(interval_s)

    async def sweep_once(self) -> int:
        """One pass; returns how many resources were suspended or deprovisioned."""
        clock = time.monotonic()
        answers = [
            found
            for found in await asyncio.gather(*(self._find(kind) for kind in ENDPOINTS))
            if found is not None
        ]
        metrics.REAPER_BACKLOG.set(sum(found.backlog for found in answers))
        due = [
            (found.kind, item)
            for found in answers
            for item in found.due
            if self._not_before.get((item.resource_id, _action(item)), 0.0) <= clock
        ]
        for _, item in due:
            # Until the worker has done it (the projection no longer lists it), don't send again.
            self._not_before[item.resource_id, _action(item)] = clock + self._retry_after_s
        stuck = [
            deploy
            for found in answers
            for deploy in found.stuck
            if self._not_before.get((deploy.resource_id, "recover"), 0.0) <= clock
        ]
        for deploy in stuck:
            # The recover's own events move the stack; until they land, don't send again.
            self._not_before[deploy.resource_id, "recover"] = clock + self._retry_after_s
        results = await asyncio.gather(*(self._act(kind, item) for kind, item in due))
        await asyncio.gather(*(self._recover(d.resource_id, d.revision) for d in stuck))
        self._not_before = {k: v for k, v in self._not_before.items() if v > clock}
        return sum(results)

    async def _find(self, kind: ResourceKind) -> DueFound | None:
        """What ``kind``'s worker says is due; None (and a warning) when it does not answer."""
        endpoint = ENDPOINTS[kind].find_due
        command = FindDue(
            command_id=uuid.uuid4(),
            correlation_id=f"reaper-{uuid.uuid4().hex[:16]}",
            deadline=time.time() + endpoint.timeout,
            kind=kind,
            orphan_grace_s=self._grace.total_seconds(),
            stuck_after_s=self._stack_stuck_after.total_seconds(),
            limit=self._due_per_kind,
        )
        try:
            return await self._bus.request(endpoint, command)
        except SpinupError as exc:
            log.warning("reaper.due.unanswered", kind=kind.value, error=exc.code.value)
            return None

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

    async def _act(self, kind: ResourceKind, item: DueResource) -> bool:
        if item.suspend:
            return await self._suspend(kind, item)
        return await self._reap(kind, item)

    async def _suspend(self, kind: ResourceKind, item: DueResource) -> bool:
        """Stop an expired resource's credentials; its data stays until its grace ends."""
        endpoint = ENDPOINTS[kind].suspend
        expiry = item.expires_at.isoformat() if item.expires_at else ""
        command = SuspendResource(
            command_id=uuid.uuid5(REAP_NAMESPACE, f"suspend|{item.resource_id}|{expiry}"),
            correlation_id=f"reaper-{uuid.uuid4().hex[:16]}",
            deadline=time.time() + endpoint.timeout,
            resource_id=item.resource_id,
        )
        async with self._slots:
            try:
                reply = await self._bus.request(endpoint, command)
            except SpinupError as exc:
                log.warning(
                    "reaper.resource.skipped",
                    resource_id=str(item.resource_id),
                    reason=SUSPEND,
                    error=exc.code.value,
                )
                return False
        log.info(
            "reaper.resource.suspended",
            resource_id=str(item.resource_id),
            delete_at=reply.delete_at.isoformat(),
            deleted=reply.deleted,
            already=reply.already,
        )
        return True

    async def _reap(self, kind: ResourceKind, item: DueResource) -> bool:
        endpoint = DEPROVISION_ENDPOINTS[kind]
        reason = item.reason
        command = DeprovisionResource(
            command_id=uuid.uuid5(REAP_NAMESPACE, f"{reason.value}|{item.resource_id}"),
            correlation_id=f"reaper-{uuid.uuid4().hex[:16]}",
            deadline=time.time() + endpoint.timeout,
            resource_id=item.resource_id,
            reason=reason,
        )
        async with self._slots:
            try:
                reply = await self._bus.request(endpoint, command)
            except SpinupError as exc:
                log.warning(
                    "reaper.resource.skipped",
                    resource_id=str(item.resource_id),
                    reason=reason.value,
                    error=exc.code.value,
                )
                return False
        metrics.REAPER_DELETES.labels(kind=kind.value, reason=reason.value).inc()
        log.info(
            "reaper.resource.reaped",
            resource_id=str(item.resource_id),
            reason=reason.value,
            already=reply.already,
        )
        return True


async def sweep_usage(bus: Bus, kind: ResourceKind) -> bool:
    """Have ``kind``'s workers sweep its usage, page after page (docs/adr/0049).

    Each page is a request of its own to the queue group, so any replica answers it, and one
    lost with a killed worker costs that page's timeout, not the sweep's. Returns whether every
    page was answered; a kind whose worker is down or silent is skipped until next time.
    """
    endpoint = ENDPOINTS[kind].sweep_usage
    correlation_id = f"reaper-{uuid.uuid4().hex[:16]}"
    sweep_id = uuid.uuid4()
    after: uuid.UUID | None = None
    pages = measured = over_quota = blocked = unblocked = 0
    while True:
        command = SweepUsage(
            command_id=uuid.uuid4(),
            correlation_id=correlation_id,
            deadline=time.time() + endpoint.timeout,
            kind=kind,
            after=after,
            sweep_id=sweep_id,
        )
        try:
            reply = await bus.request(endpoint, command)
        except SpinupError as exc:
            log.warning("reaper.usage.skipped", kind=kind.value, error=exc.code.value, page=pages)
            return False
        pages += 1
        measured += reply.measured
        over_quota += reply.over_quota
        blocked += reply.blocked
        unblocked += reply.unblocked
        if reply.next_after is None:
            break
        after = reply.next_after
    log.info(
        "reaper.usage.swept",
        kind=kind.value,
        pages=pages,
        measured=measured,
        over_quota=over_quota,
        blocked=blocked,
        unblocked=unblocked,
    )
    return True


async def run_usage_sweeps(bus: Bus, interval_s: float) -> None:
    """Sweep each kind's usage ``interval_s`` after its last sweep ended, until cancelled.

    The kinds start spread over the interval, each on a clock of its own: sweeps of every kind
    started together measured thousands of tenants of each at once, and on one host the
    creates meanwhile waited for the cores (docs/adr/0044).
    """
    kinds = list(ENDPOINTS)

    async def sweep_every_interval(kind: ResourceKind, offset_s: float) -> None:
        await asyncio.sleep(interval_s + offset_s)
        while True:
            await sweep_usage(bus, kind)
            await asyncio.sleep(interval_s)

    async with asyncio.TaskGroup() as sweeps:
        for number, kind in enumerate(kinds):
            sweeps.create_task(sweep_every_interval(kind, interval_s * number / len(kinds)))
