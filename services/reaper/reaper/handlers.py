"""The reaper's view of every live resource, folded from the relayed event stream."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.contracts.events import ResourceEventBase
from shared.contracts.kinds import DeprovisionReason, ResourceStatus
from shared.resources import ResourceState

if TYPE_CHECKING:
    from uuid import UUID

    from shared.contracts.events import RecordedEvent


class ResourceIndex:
    """Live resources by id. Gone ones are dropped, so memory follows what exists."""

    def __init__(self) -> None:
        self._states: dict[UUID, ResourceState] = {}

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
        else:
            self._states[resource_id] = state

    def due(self, now: datetime, grace: timedelta) -> list[tuple[ResourceState, DeprovisionReason]]:
        """Resources to deprovision now, and why.

        Expired ones; ones whose provisioning never finished (deadline long past); failed ones
        that left something behind; and deprovisions that stalled.
        """
        found: list[tuple[ResourceState, DeprovisionReason]] = []
        for state in self._states.values():
            reason = _reason(state, now, grace)
            if reason is not None:
                found.append((state, reason))
        return found


def _reason(state: ResourceState, now: datetime, grace: timedelta) -> DeprovisionReason | None:
    stale = state.updated_at is not None and state.updated_at + grace <= now
    match state.status:
        case ResourceStatus.ACTIVE if state.expires_at is not None and state.expires_at <= now:
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
