"""The reaper's view of every live resource, folded from the relayed event stream."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from shared.contracts.events import (
    ResourceEventBase,
    ResourceProvisioned,
    StackDeployStarted,
    StackFailed,
    StackReady,
    StackServiceBuilt,
    StackServiceStarted,
    StackStopped,
)
from shared.contracts.kinds import DeprovisionReason, ResourceKind, ResourceStatus
from shared.resources import ResourceState
from shared.stack_state import StackStatus, StackView

# Events that show a stack's deploy moving: the time of the last one is its progress.
_STACK_PROGRESS = (
    ResourceProvisioned,
    StackDeployStarted,
    StackServiceBuilt,
    StackServiceStarted,
    StackReady,
    StackFailed,
    StackStopped,
)

if TYPE_CHECKING:
    from uuid import UUID

    from shared.contracts.events import RecordedEvent

#: What the reaper does to a due resource besides deleting it: stop its credentials at expiry
#: and keep its data for the export grace stamped on it at create (docs/adr/0030).
SUSPEND: Final = "suspend"
Action = DeprovisionReason | Literal["suspend"]


class ResourceIndex:
    """Live resources by id. Gone ones are dropped, so memory follows what exists."""

    def __init__(self) -> None:
        self._states: dict[UUID, ResourceState] = {}
        #: Each live stack's deploy, and when it last moved.
        self._stacks: dict[UUID, tuple[StackView, datetime]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def apply(self, recorded: RecordedEvent) -> None:
        """Fold one relayed resource event in; repeats, stale versions and others are ignored."""
        event = recorded.event
        if not isinstance(event, ResourceEventBase):
            return
        resource_id = event.resource_id
        state = self._states.get(resource_id, ResourceState(resource_id=resource_id))
        if recorded.version != state.version + 1:
            return
        state = state.apply(event, command_id=recorded.command_id, recorded_at=recorded.recorded_at)
        if state.is_gone:
            self._states.pop(resource_id, None)
            self._stacks.pop(resource_id, None)
            return
        self._states[resource_id] = state
        if state.kind is ResourceKind.STACK and isinstance(event, _STACK_PROGRESS):
            view, _ = self._stacks.get(resource_id, (StackView(), recorded.recorded_at))
            view.apply(event)
            self._stacks[resource_id] = (view, recorded.recorded_at)

    def stuck_stacks(self, now: datetime, after: timedelta) -> list[tuple[UUID, int]]:
        """Live stacks whose deploy has not moved for ``after`` (its worker died): id, revision.

        A deploy bounded by the build timeout always ends in ``StackReady`` or ``StackFailed``
        while its worker lives, so one still pending or building past it was interrupted.
        """
        found: list[tuple[UUID, int]] = []
        for resource_id, (view, progress) in self._stacks.items():
            state = self._states.get(resource_id)
            if (
                state is not None
                and state.status is ResourceStatus.ACTIVE
                and view.status in {StackStatus.PENDING, StackStatus.BUILDING}
                and progress + after <= now
            ):
                found.append((resource_id, view.revision))
        return found

    def due(self, now: datetime, grace: timedelta) -> list[tuple[ResourceState, Action]]:
        """Resources to suspend or deprovision now, and why.

        Expired ones (suspended first when they have an export grace, deleted when it ends);
        ones whose provisioning never finished (deadline long past); failed ones that left
        something behind; and deprovisions that stalled.
        """
        found: list[tuple[ResourceState, Action]] = []
        for state in self._states.values():
            reason = _reason(state, now, grace)
            if reason is not None:
                found.append((state, reason))
        return found


def _reason(state: ResourceState, now: datetime, grace: timedelta) -> Action | None:
    stale = state.updated_at is not None and state.updated_at + grace <= now
    match state.status:
        case ResourceStatus.ACTIVE if state.expires_at is not None and state.expires_at <= now:
            # Never suspended (workers down for the whole grace): deleted when the grace ends.
            ends = state.grace_ends_at
            return SUSPEND if ends is not None and now < ends else DeprovisionReason.EXPIRED
        case ResourceStatus.SUSPENDED if state.delete_at is None or state.delete_at <= now:
            return DeprovisionReason.EXPIRED
        case ResourceStatus.PROVISIONING if (
            state.deadline is not None and state.deadline + grace <= now
        ):
            return DeprovisionReason.ORPHANED
        case ResourceStatus.FAILED if state.needs_cleanup and stale:
            return DeprovisionReason.ORPHANED
        case ResourceStatus.DELETING if stale:
            return state.deprovision_reason or DeprovisionReason.ORPHANED
    return None
