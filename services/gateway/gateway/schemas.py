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


class ResourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /resources/{token}`` shows; credentials only while the resource is active."""

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
