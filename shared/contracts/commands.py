"""Commands: imperative requests sent to one worker over NATS request-reply.

Every command carries its ``deadline`` (Unix seconds): a worker that finishes after it undoes
its work, so a client that already got a 503 never ends up owning an invisible resource.
Internal messages tolerate unknown fields, so workers and gateway can roll out separately.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

import msgspec

from shared.contracts.kinds import Caps, DeprovisionReason, Limits, ResourceKind


class Command(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Fields every command carries."""

    command_id: UUID
    correlation_id: str
    deadline: float


class ProvisionResource(Command, frozen=True, kw_only=True):
    """Create one resource of ``kind`` with ``limits``; the gateway has minted its token.

    ``account_id`` is the owner when the caller authenticated; null for anonymous resources.
    """

    resource_id: UUID
    kind: ResourceKind
    tier: str
    limits: Limits
    token_hash: str
    fingerprint: str
    name: str | None = None
    expires_at: datetime | None = None
    account_id: UUID | None = None
    #: Set on a stack's backing resources: the stack they belong to.
    parent_id: UUID | None = None
    #: A fork (docs/adr/0028-fork.md): the live resource of the same kind whose data the new one
    #: starts with. The source is only read; a failed fork removes the new resource alone.
    fork_of: UUID | None = None
    #: After ``expires_at``, how long the data is kept for an export (docs/adr/0030).
    export_grace_seconds: int = 0
    #: The sender made both ids just now (no Idempotency-Key): no other command names this
    #: resource, so nothing can be making it at the same time. A worker whose driver lists its
    #: tenants may then record the intent with the outcome, in one append (docs/adr/0032).
    new_ids: bool = False
    #: The holder's caps (the account's, else the client network's), checked by the append that
    #: records the intent (docs/adr/0040). None: the sender admitted it (a stack's resources).
    caps: Caps | None = None


class DeprovisionResource(Command, frozen=True, kw_only=True):
    """Remove one resource; removing one that is already gone succeeds."""

    resource_id: UUID
    reason: DeprovisionReason


class ClaimResource(Command, frozen=True, kw_only=True):
    """Move an anonymous resource into ``account_id``: backend limits raised, TTL dropped.

    Credentials and connection URL do not change.
    """

    resource_id: UUID
    account_id: UUID
    claim_id: UUID
    tier: str
    limits: Limits


class RotateCredentials(Command, frozen=True, kw_only=True):
    """Issue new credentials for a live resource; the previous ones stop working at once."""

    resource_id: UUID


class SuspendResource(Command, frozen=True, kw_only=True):
    """An expired resource's credentials stop; its data stays for an export (ADR 0030).

    Refused for a resource its stream says has not expired; again for a suspended one is a no-op.
    """

    resource_id: UUID


class ExportResource(Command, frozen=True, kw_only=True):
    """Stream a copy of the resource's data in ``format`` to ``stream_subject`` (ADR 0030).

    The reply (``ExportStarted``) names where the worker waits for credit; the data follows as
    chunk messages on ``stream_subject`` (``shared.bus``: at most ``window`` unacknowledged).
    """

    resource_id: UUID
    format: str
    stream_subject: str
    window: int


class SweepUsage(Command, frozen=True, kw_only=True):
    """Measure one page of the worker's kind's live resources; block writes over quota, lift under.

    The page is the next batch by id after ``after`` (None: from the first). The reaper asks for
    page after page until the answer has no ``next_after`` (docs/adr/0049), every page with the
    sweep's ``sweep_id``: a worker that must read its whole backend to answer a page reads it
    once for the sweep (docs/adr/0060, 0061). None: this page alone.
    """

    kind: ResourceKind
    after: UUID | None = None
    sweep_id: UUID | None = None


class FindDue(Command, frozen=True, kw_only=True):
    """Which resources of the worker's kind the reaper must act on now (docs/adr/0035).

    Read from the indexed ``resources`` projection, so the reaper needs neither the event stream
    nor a database connection. ``orphan_grace_s`` is how long a worker may take before its work
    counts as abandoned; ``stuck_after_s`` the same for a stack's deploy (stacks only).
    """

    kind: ResourceKind
    orphan_grace_s: float
    stuck_after_s: float
    limit: int


class StackAction(StrEnum):
    """What ``ControlStack`` asks of a stack's containers."""

    STOP = "stop"
    START = "start"
    RESTART = "restart"
    #: Build and start again from the stored upload (a new revision); data in backing stays.
    REDEPLOY = "redeploy"
    #: Finish or clean up a deploy whose worker died (sent by the reaper).
    RECOVER = "recover"


class ControlStack(Command, frozen=True, kw_only=True):
    """Change a live stack's containers; the stack-deployer answers with the new status."""

    resource_id: UUID
    action: StackAction
