"""The life of one resource, folded from its events.

The same fold drives the workers' decisions and the ``resources`` projection (which the reaper's
sweeps query), so they can never disagree about what state a resource is in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from shared.contracts.events import (
    CredentialsRotated,
    Event,
    QuotaExceeded,
    QuotaRestored,
    ResourceClaimed,
    ResourceDeprovisioned,
    ResourceDeprovisionRequested,
    ResourceExtended,
    ResourceProvisioned,
    ResourceProvisionFailed,
    ResourceProvisionRequested,
    ResourceSuspended,
)
from shared.contracts.kinds import DeprovisionReason, Limits, ResourceKind, ResourceStatus


@dataclass(frozen=True, slots=True)
class Due:
    """Why a resource is due for the reaper, and what it does about it."""

    reason: DeprovisionReason
    #: Expired with its export grace still running: stop its credentials, keep its data until
    #: the grace ends (docs/adr/0030). Otherwise: deprovision it.
    suspend: bool = False


@dataclass(frozen=True, slots=True)
class ResourceState:
    """Everything known about a resource after its last event."""

    resource_id: UUID
    version: int = 0
    status: ResourceStatus = ResourceStatus.NONE
    kind: ResourceKind | None = None
    tier: str | None = None
    limits: Limits | None = None
    token_hash: str | None = None
    fingerprint: str | None = None
    name: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    deadline: datetime | None = None
    updated_at: datetime | None = None
    provision_command_id: UUID | None = None
    credentials_sealed: str | None = None
    failure_code: str | None = None
    needs_cleanup: bool = False
    deprovision_reason: DeprovisionReason | None = None
    account_id: UUID | None = None
    claimed_at: datetime | None = None
    quota_exceeded: bool = False
    #: The stack this resource backs (None: a resource of its own).
    parent_id: UUID | None = None
    #: How many times ``expires_at`` was moved on request (``ResourceExtended``).
    extensions: int = 0
    #: After expiry, how long the data is kept, credentials stopped, for an export (ADR 0030).
    export_grace_seconds: int = 0
    #: Suspended: when the reaper deletes it (``expires_at`` + the grace).
    delete_at: datetime | None = None

    def apply(self, event: Event, *, command_id: UUID, recorded_at: datetime) -> ResourceState:  # noqa: C901, PLR0911  (one return per event type)
        """The state after ``event``."""
        state = replace(self, version=self.version + 1, updated_at=recorded_at)
        match event:
            case ResourceProvisionRequested():
                return replace(
                    state,
                    status=ResourceStatus.PROVISIONING,
                    kind=event.kind,
                    tier=event.tier,
                    limits=event.limits,
                    token_hash=event.token_hash,
                    fingerprint=event.fingerprint,
                    name=event.name,
                    created_at=self.created_at or recorded_at,
                    expires_at=event.expires_at,
                    deadline=event.deadline,
                    provision_command_id=command_id,
                    failure_code=None,
                    needs_cleanup=False,
                    account_id=event.account_id,
                    parent_id=event.parent_id,
                    export_grace_seconds=event.export_grace_seconds,
                )
            case ResourceProvisioned():
                return replace(
                    state,
                    status=ResourceStatus.ACTIVE,
                    credentials_sealed=event.credentials_sealed,
                )
            case ResourceProvisionFailed():
                return replace(
                    state,
                    status=ResourceStatus.FAILED,
                    failure_code=event.code,
                    needs_cleanup=not event.cleaned_up,
                )
            case ResourceDeprovisionRequested():
                return replace(
                    state, status=ResourceStatus.DELETING, deprovision_reason=event.reason
                )
            case ResourceDeprovisioned():
                gone = (
                    ResourceStatus.EXPIRED
                    if event.reason is DeprovisionReason.EXPIRED
                    else ResourceStatus.DELETED
                )
                return replace(
                    state,
                    status=gone,
                    credentials_sealed=None,
                    needs_cleanup=False,
                    deprovision_reason=event.reason,
                )
            case ResourceClaimed():
                return replace(
                    state,
                    account_id=event.account_id,
                    tier=event.tier,
                    limits=event.limits,
                    expires_at=None,
                    claimed_at=recorded_at,
                )
            case CredentialsRotated():
                return replace(state, credentials_sealed=event.credentials_sealed)
            case QuotaExceeded():
                return replace(state, quota_exceeded=True)
            case QuotaRestored():
                return replace(state, quota_exceeded=False)
            case ResourceExtended():
                return replace(state, expires_at=event.expires_at, extensions=event.extensions)
            case ResourceSuspended():
                return replace(state, status=ResourceStatus.SUSPENDED, delete_at=event.delete_at)
        return state

    @classmethod
    def fold(
        cls, resource_id: UUID, events: Iterable[tuple[Event, UUID, datetime]]
    ) -> ResourceState:
        """Replay ``(event, command_id, recorded_at)`` triples from the first version on."""
        state = cls(resource_id=resource_id)
        for event, command_id, recorded_at in events:
            state = state.apply(event, command_id=command_id, recorded_at=recorded_at)
        return state

    @property
    def grace_ends_at(self) -> datetime | None:
        """When an expired resource is deleted: ``expires_at`` plus its export grace."""
        if self.expires_at is None:
            return None
        return self.expires_at + timedelta(seconds=self.export_grace_seconds)

    @property
    def is_gone(self) -> bool:
        """Deleted or expired: nothing remains in the backend."""
        return self.status in {ResourceStatus.DELETED, ResourceStatus.EXPIRED}

    def due(self, now: datetime, grace: timedelta) -> Due | None:
        """What the reaper does about this resource now, if anything.

        Expired ones (suspended first when they have an export grace, deleted when it ends);
        ones whose provisioning never finished (deadline long past); failed ones that left
        something behind; and deprovisions that stalled. ``grace`` is how long a worker may
        take before its work counts as abandoned.
        """
        stale = self.updated_at is not None and self.updated_at + grace <= now
        match self.status:
            case ResourceStatus.ACTIVE if self.expires_at is not None and self.expires_at <= now:
                # Never suspended (workers down for the whole grace): deleted when the grace ends.
                ends = self.grace_ends_at
                suspend = ends is not None and now < ends
                return Due(DeprovisionReason.EXPIRED, suspend=suspend)
            case ResourceStatus.SUSPENDED if self.delete_at is None or self.delete_at <= now:
                return Due(DeprovisionReason.EXPIRED)
            case ResourceStatus.PROVISIONING if (
                self.deadline is not None and self.deadline + grace <= now
            ):
                return Due(DeprovisionReason.ORPHANED)
            case ResourceStatus.FAILED if self.needs_cleanup and stale:
                return Due(DeprovisionReason.ORPHANED)
            case ResourceStatus.DELETING if stale:
                return Due(self.deprovision_reason or DeprovisionReason.ORPHANED)
        return None
