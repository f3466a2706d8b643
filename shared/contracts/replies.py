"""Replies: the facts a worker answers a command with."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from shared.contracts.kinds import (
    Credentials,
    DeprovisionReason,
    Limits,
    ResourceKind,
)


class Reply(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every reply."""


class ResourceProvisioned(Reply, frozen=True, kw_only=True):
    """The resource exists and these credentials work.

    ``replayed`` is true when the command was seen before: this is the resource it made, as it
    is now (docs/adr/0048).
    """

    resource_id: UUID
    kind: ResourceKind
    tier: str
    limits: Limits
    credentials: Credentials
    created_at: datetime
    expires_at: datetime | None
    replayed: bool = False


class ResourceDeprovisioned(Reply, frozen=True, kw_only=True):
    """The resource no longer exists in its backend."""

    resource_id: UUID
    reason: DeprovisionReason
    already: bool = False


class CommandFailed(Reply, frozen=True, kw_only=True):
    """The command did not succeed.

    ``code`` is an ``ErrorCode`` value, kept a plain string on the wire so an older gateway can
    still read a newer worker's code.
    """

    code: str
    message: str
    retryable: bool
    #: What to do next, for a client or an agent (``SpinupError.agent_action``).
    agent_action: str | None = None


class ResourceClaimed(Reply, frozen=True, kw_only=True):
    """The resource belongs to the account, with these limits in force and no expiry."""

    resource_id: UUID
    account_id: UUID
    tier: str
    limits: Limits
    already: bool = False


class CredentialsRotated(Reply, frozen=True, kw_only=True):
    """The new credentials; the old ones no longer work."""

    resource_id: UUID
    credentials: Credentials


class ResourceSuspended(Reply, frozen=True, kw_only=True):
    """The credentials no longer work; the data is kept until ``delete_at``.

    ``deleted``: the kind keeps no data after expiry (no export), so it was deleted instead.
    """

    resource_id: UUID
    delete_at: datetime
    already: bool = False
    deleted: bool = False


class ExportStarted(Reply, frozen=True, kw_only=True):
    """The export is checked and running: credit goes to ``credit_subject`` (``shared.bus``)."""

    resource_id: UUID
    format: str
    credit_subject: str


class UsageSwept(Reply, frozen=True, kw_only=True):
    """What one page of a kind's usage sweep measured and changed.

    ``next_after``: the cursor of the next page, None when this page was the last.
    """

    kind: ResourceKind
    measured: int
    over_quota: int
    blocked: int
    unblocked: int
    next_after: UUID | None = None


class DueResource(msgspec.Struct, frozen=True, kw_only=True):
    """One resource the reaper must act on, and why."""

    resource_id: UUID
    reason: DeprovisionReason
    #: Expired within its export grace: suspend it (credentials off, data kept) instead of
    #: deprovisioning it (docs/adr/0030).
    suspend: bool
    expires_at: datetime | None


class StuckDeploy(msgspec.Struct, frozen=True, kw_only=True):
    """A live stack whose deploy stopped moving (its worker died)."""

    resource_id: UUID
    revision: int


class DueFound(Reply, frozen=True, kw_only=True):
    """What one kind has due now, oldest first; ``backlog`` counts all, ``due`` is bounded."""

    kind: ResourceKind
    due: list[DueResource]
    backlog: int
    stuck: list[StuckDeploy] = []


class StackControlled(Reply, frozen=True, kw_only=True):
    """The stack's status after a ``ControlStack`` (``building`` while a redeploy runs)."""

    resource_id: UUID
    status: str
    revision: int
