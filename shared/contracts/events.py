"""Events: the facts stored in the event log, the source of truth.

Never rename or retype an event class or field: add fields with defaults, or add a class and an
upcaster (``shared.eventlog.codec``). ``tests/unit/test_contracts.py`` pins the stored tags.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from shared.contracts.kinds import DeprovisionReason, Limits, ResourceKind


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every event."""

    resource_id: UUID


class ResourceProvisionRequested(Event, frozen=True, kw_only=True):
    """Intent, recorded before any backend is touched."""

    kind: ResourceKind
    tier: str
    limits: Limits
    token_hash: str
    fingerprint: str
    name: str | None
    expires_at: datetime | None
    deadline: datetime


class ResourceProvisioned(Event, frozen=True, kw_only=True):
    """The backend object exists; ``credentials_sealed`` is AES-256-GCM sealed credentials."""

    credentials_sealed: str


class ResourceProvisionFailed(Event, frozen=True, kw_only=True):
    """Provisioning failed. ``cleaned_up`` false means something may be left in the backend."""

    code: str
    message: str
    cleaned_up: bool


class ResourceDeprovisionRequested(Event, frozen=True, kw_only=True):
    """Intent to remove, recorded before the backend is touched."""

    reason: DeprovisionReason


class ResourceDeprovisioned(Event, frozen=True, kw_only=True):
    """Nothing of the resource remains in its backend."""

    reason: DeprovisionReason


ResourceEvent = (
    ResourceProvisionRequested
    | ResourceProvisioned
    | ResourceProvisionFailed
    | ResourceDeprovisionRequested
    | ResourceDeprovisioned
)


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored, and as relayed on JetStream (the message body)."""

    position: int
    stream_id: str
    version: int
    event_id: UUID
    command_id: UUID
    correlation_id: str
    recorded_at: datetime
    event: ResourceEvent
