"""HTTP request and response bodies. Requests forbid unknown fields, so a typo is a 400."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from shared.contracts.kinds import Credentials
from shared.plans import Tier

#: A label shown in listings. Spaces only inside, so a name is never blank or padded.
ResourceName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[\w.:/@-]([\w .:/@-]*[\w.:/@-])?$",
        description="must be 1 to 64 characters: letters, digits, spaces and _ . : / @ -,"
        ' not starting or ending with a space (for example "orders-db")',
    ),
]


#: Seconds a lifetime may be asked in at all (a year): the plan's own bounds are checked after
#: decoding, and this keeps an absurd number from reaching date arithmetic (an overflow, a 500).
TtlSeconds = Annotated[int, msgspec.Meta(ge=1, le=366 * 24 * 3600)]


#: One limit as the API shows it: a number (or null: none), a stack's ``internet`` switch, or
#: Postgres's ``extensions`` (the names ``CREATE EXTENSION`` accepts).
LimitValue = int | bool | list[str] | None


class NewResource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Optional body of every ``POST /<kind>/new``."""

    name: ResourceName | None = None
    #: Seconds until it expires, within the plan's bounds (``GET /plans``: ``lifetime``).
    ttl_seconds: TtlSeconds | None = None
    #: Where signed notifications about it are sent (``resource.expiring``...; ADR 0027).
    notify_url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None = None


class ResourceCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A new resource. Keep ``token``: it is the only way to manage the resource.

    ``credentials`` has the kind's fields (``type`` names the kind); ``connection_url`` repeats
    the one URL a client library takes, for the kinds that have one. ``limits`` are the plan's
    limits for this kind plus ``expires_in`` (seconds left; null: permanent).
    """

    ok: bool = True
    id: UUID
    kind: str
    name: str | None = None
    token: str
    connection_url: str | None
    credentials: Credentials
    tier: str
    limits: dict[str, LimitValue]
    expires_at: datetime | None
    claim_url: str | None
    note: str
    #: The resource's page in the web console, reached by the token in its fragment (which a
    #: browser never sends to a server): a link an agent can hand to its human.
    console_url: str | None = None
    #: With ``notify_url``: the ``whsec_`` secret its notifications are signed with (Standard
    #: Webhooks); shown once, here.
    notify_secret: str | None = None
    #: A fork (``POST /resources/{token}/fork``): the id of the resource its data was copied from.
    forked_from: UUID | None = None


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """What the last usage sweep measured against the quota (bytes).

    ``measured_at``: when a sweep (about one a minute) last found the figure different, or
    confirmed it at most ten minutes before (docs/adr/0062).

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
    limits: dict[str, LimitValue]
    usage: Usage
    created_at: datetime | None
    expires_at: datetime | None
    claimed: bool
    connection_url: str | None
    credentials: Credentials | None
    parent_id: UUID | None = None
    stack: StackDetails | None = None
    #: The resource's page in the web console (the account's console when asked by id).
    console_url: str | None = None


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
    #: Numbers, and ``internet`` (true or false).
    limits: dict[str, LimitValue]
    expires_at: datetime | None
    claim_url: str | None
    note: str
    #: The stack's page in the web console: status, URLs, live logs, stop/start/restart/delete.
    console_url: str | None = None


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


class ForkResource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Optional body of ``POST /resources/{token}/fork``: the new resource's name and lifetime."""

    name: ResourceName | None = None
    #: Seconds until the fork expires, within the plan's bounds (``GET /plans``: ``lifetime``).
    ttl_seconds: TtlSeconds | None = None


class ExtendResource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /resources/{token}/extend``: seconds added to ``expires_at``."""

    ttl_seconds: TtlSeconds


class ResourceExtendedInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The new expiry, and how much more extending the plan allows before a claim is needed."""

    ok: bool = True
    id: UUID
    expires_at: datetime
    extensions_used: int
    extensions_left: int
    #: The latest ``expires_at`` extending can reach (creation + the plan's total lifetime).
    latest_expires_at: datetime
    #: A stack's backing resources, extended with it.
    extended_with: list[UUID] = msgspec.field(default_factory=list)
    #: Set when it got less than ``ttl_seconds`` asked for: the plan's lifetime ends sooner.
    note: str | None = None


class NotifyTarget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``PUT /resources/{token}/notify``; ``url`` null stops notifications."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None


class NotifyTargetInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The target set; ``secret`` (``whsec_...``, shown once) signs every notification."""

    ok: bool = True
    id: UUID
    url: str | None
    secret: str | None
    #: Notification types sent, and the leads (seconds before expiry) of ``resource.expiring``.
    types: list[str]
    expiring_lead_seconds: list[int]
