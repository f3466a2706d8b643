"""HTTP request and response bodies. Requests forbid unknown fields, so a typo is a 400."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from shared.contracts.kinds import Credentials
from shared.plans import Tier


class NewResource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Optional body of every ``POST /<kind>/new``."""

    name: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\w .:/@-]+$")] | None
    ) = None


class ResourceCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A new resource. Keep ``token``: it is the only way to manage the resource.

    ``credentials`` has the kind's fields (``type`` names the kind); ``connection_url`` repeats
    the one URL a client library takes, for the kinds that have one. ``limits`` are the plan's
    limits for this kind plus ``expires_in`` (seconds left; null: permanent).
    """

    ok: bool = True
    id: UUID
    kind: str
    token: str
    connection_url: str | None
    credentials: Credentials
    tier: str
    limits: dict[str, int | None]
    expires_at: datetime | None
    claim_url: str | None
    note: str


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """What the last usage sweep measured against the quota (bytes).

    ``over_quota`` true: the backend refuses writes until usage drops below the quota (delete
    data) or the quota rises (claim the resource into an account, or upgrade); ``note`` says
    how, for this kind.
    """

    bytes: int | None
    quota_bytes: int | None
    measured_at: datetime | None
    over_quota: bool
    note: str | None = None


class BackingResourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One resource a stack asked for under ``resources:``.

    Its credentials reach every container of the stack as environment variables.
    """

    kind: str
    id: UUID
    status: str
    connection_url: str | None
    credentials: Credentials | None


class StackServiceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One service of a stack's latest deploy; ``url`` for a service with a ``port``."""

    status: str
    url: str | None
    image: str | None


class StackDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Where a stack's latest deploy is.

    ``status``: pending, building, running, failed or stopped; on failure the failing service,
    the reason and the end of its logs.
    """

    status: str
    revision: int
    services: dict[str, StackServiceInfo]
    resources: dict[str, BackingResourceInfo]
    failed_service: str | None
    failure: str | None
    logs_tail: str | None
    logs_url: str


class ResourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /resources/{token}`` shows; credentials only while the resource is active.

    ``parent_id``: the stack this resource backs (it is deleted and expires with it);
    ``stack``: a stack's deploy, services and backing resources (null for other kinds).
    """

    ok: bool = True
    id: UUID
    kind: str
    status: str
    tier: str
    name: str | None
    limits: dict[str, int | None]
    usage: Usage
    created_at: datetime | None
    expires_at: datetime | None
    claimed: bool
    connection_url: str | None
    credentials: Credentials | None
    parent_id: UUID | None = None
    stack: StackDetails | None = None


class StackCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A stack is being built (202). Keep ``token``: it manages the stack and its resources.

    Follow ``status_url`` until ``stack.status`` is running (or failed, with the logs tail);
    ``urls`` answer once it runs. ``resources`` are the backing resources, ready now.
    """

    ok: bool = True
    id: UUID
    kind: str
    token: str
    status: str
    status_url: str
    logs_url: str
    urls: dict[str, str]
    resources: dict[str, BackingResourceInfo]
    tier: str
    limits: dict[str, int | None]
    expires_at: datetime | None
    claim_url: str | None
    note: str


class StackControlledView(msgspec.Struct, frozen=True, kw_only=True):
    """The stack after a stop, start, restart or redeploy (``building`` while one runs)."""

    ok: bool = True
    id: UUID
    action: str
    status: str
    revision: int
    status_url: str


class ResourceDeleted(msgspec.Struct, frozen=True, kw_only=True):
    """The resource is gone and its credentials no longer work."""

    ok: bool = True
    id: UUID
    status: str


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """Liveness or readiness, with one entry per dependency checked."""

    ok: bool
    checks: dict[str, str]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Every 4xx and 5xx body; ``agent_action`` (when present) says what an agent should do."""

    ok: bool  # always false; no default, so omit_defaults keeps it in the body
    error: str
    message: str
    request_id: str
    agent_action: str | None = None


class PlansInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Every tier with its TTL (null: permanent) and the limits of each kind, from plans.yaml."""

    ok: bool = True
    anonymous_tier: str
    tiers: dict[str, Tier]
