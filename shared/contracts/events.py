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
    """Base of every event; the class name is the stored tag."""


# -- resources: stream ``resource-<id>`` ---------------------------------------------------------


class ResourceEventBase(Event, frozen=True, kw_only=True):
    """Fields of every event in a resource's stream."""

    resource_id: UUID


class ResourceProvisionRequested(ResourceEventBase, frozen=True, kw_only=True):
    """Intent, recorded before any backend is touched. ``account_id`` null: anonymous."""

    kind: ResourceKind
    tier: str
    limits: Limits
    token_hash: str
    fingerprint: str
    name: str | None
    expires_at: datetime | None
    deadline: datetime
    account_id: UUID | None = None
    #: The stack this resource backs (its lifetime and deletion follow the stack's).
    parent_id: UUID | None = None
    #: A fork: the resource whose data this one was copied from (docs/adr/0028-fork.md).
    fork_of: UUID | None = None
    #: After ``expires_at``, how long the data is kept, credentials stopped, for an export
    #: (docs/adr/0030); stamped from the plan at create so the reaper never reads plans.yaml.
    #: 0 (and every event recorded before it existed): deleted at expiry.
    export_grace_seconds: int = 0


class ResourceProvisioned(ResourceEventBase, frozen=True, kw_only=True):
    """The backend object exists; ``credentials_sealed`` is AES-256-GCM sealed credentials.

    ``pool_member``: the warm-pool member it was made from (renamed to the tenant's name), if
    any; that member's own stream ends at ``PoolMemberReady`` (docs/adr/0047).
    """

    credentials_sealed: str
    pool_member: UUID | None = None


class ResourceProvisionFailed(ResourceEventBase, frozen=True, kw_only=True):
    """Provisioning failed. ``cleaned_up`` false means something may be left in the backend."""

    code: str
    message: str
    cleaned_up: bool


class ResourceDeprovisionRequested(ResourceEventBase, frozen=True, kw_only=True):
    """Intent to remove, recorded before the backend is touched."""

    reason: DeprovisionReason


class ResourceDeprovisioned(ResourceEventBase, frozen=True, kw_only=True):
    """Nothing of the resource remains in its backend."""

    reason: DeprovisionReason


class ResourceClaimed(ResourceEventBase, frozen=True, kw_only=True):
    """An account took the resource over: its TTL is gone and the backend has these limits."""

    account_id: UUID
    claim_id: UUID
    tier: str
    limits: Limits


class CredentialsRotated(ResourceEventBase, frozen=True, kw_only=True):
    """New credentials work and the previous ones no longer do (sealed like at provisioning)."""

    credentials_sealed: str


class QuotaExceeded(ResourceEventBase, frozen=True, kw_only=True):
    """A usage sweep found the resource at or over its quota; the backend now refuses writes."""

    usage_bytes: int
    quota_bytes: int


class QuotaRestored(ResourceEventBase, frozen=True, kw_only=True):
    """Back under quota; the backend accepts writes again."""

    usage_bytes: int
    quota_bytes: int


# -- stacks: more facts in a stack's resource stream ---------------------------------------------
# ``revision`` counts deploys: 1 for the first, one more per redeploy; events of an older
# revision that arrive late (an interrupted deploy) are ignored by the fold.


class StackDeployStarted(ResourceEventBase, frozen=True, kw_only=True):
    """A deploy of ``revision`` began: images are built, then services start in order."""

    revision: int
    services: list[str]


class StackServiceBuilt(ResourceEventBase, frozen=True, kw_only=True):
    """One service's image exists on the engine (built from its upload, or named by it)."""

    revision: int
    service: str
    image: str


class StackServiceStarted(ResourceEventBase, frozen=True, kw_only=True):
    """One service's container runs; ``host``/``port`` is where its HTTP port is published."""

    revision: int
    service: str
    container: str
    host: str | None = None
    port: int | None = None


class StackReady(ResourceEventBase, frozen=True, kw_only=True):
    """Every service of ``revision`` runs and stayed up through the settle period."""

    revision: int


class StackFailed(ResourceEventBase, frozen=True, kw_only=True):
    """The deploy or a running service failed; nothing of the stack runs any more.

    ``logs_tail`` is the end of the failing build's or container's output.
    """

    revision: int
    service: str | None
    reason: str
    logs_tail: str


class StackStopped(ResourceEventBase, frozen=True, kw_only=True):
    """The stack's containers were stopped on request (``start`` brings them back)."""

    revision: int


# -- lifetime: more facts in a resource's stream (docs/adr/0027) --------------------------------


class ResourceExtended(ResourceEventBase, frozen=True, kw_only=True):
    """``expires_at`` moved later on request; ``extensions``: how many so far, this one included.

    A stack's backing resources get one each time their stack does.
    """

    expires_at: datetime
    extensions: int


class NotifyTargetSet(ResourceEventBase, frozen=True, kw_only=True):
    """Notifications about this resource go to ``url`` (None: nowhere any more).

    Signed with the secret of ``secret_generation`` (derived from the platform's token key, never
    stored). ``lead_seconds``: how long before expiry ``resource.expiring`` is sent, from the
    plan at the time the target was set, so whichever gateway delivers sends the same.
    """

    url: str | None
    secret_generation: int
    lead_seconds: list[int]


class ResourceSuspended(ResourceEventBase, frozen=True, kw_only=True):
    """Expired: the credentials no longer work; the data stays until ``delete_at`` for an export.

    Recorded after the backend stopped the credentials (docs/adr/0030). ``delete_at`` is
    ``expires_at`` plus the grace stamped at create, when the reaper deletes it.
    """

    delete_at: datetime


ResourceEvent = (
    ResourceProvisionRequested
    | ResourceProvisioned
    | ResourceProvisionFailed
    | ResourceDeprovisionRequested
    | ResourceDeprovisioned
    | ResourceClaimed
    | CredentialsRotated
    | QuotaExceeded
    | QuotaRestored
    | StackDeployStarted
    | StackServiceBuilt
    | StackServiceStarted
    | StackReady
    | StackFailed
    | StackStopped
    | ResourceExtended
    | NotifyTargetSet
    | ResourceSuspended
)


# -- notifications: stream ``notification-<resource id>``, the outbox of one resource -----------
# Only the gateway's notifier appends here, so its writes never race a worker's on the resource's
# own stream. Delivery is at least once: a receiver dedupes on ``webhook-id``.


class NotificationEventBase(Event, frozen=True, kw_only=True):
    """Fields of every event in a resource's notification stream."""

    resource_id: UUID
    notification_id: UUID


class NotificationQueued(NotificationEventBase, frozen=True, kw_only=True):
    """A notification is due: ``body`` (JSON text, signed as is) goes to ``url``.

    ``notification_type`` (the body's ``type``): ``resource.expiring``, ``resource.over_quota``,
    ``resource.expired`` or ``resource.deleted``.
    """

    notification_type: str
    url: str
    secret_generation: int
    body: str


class NotificationDelivered(NotificationEventBase, frozen=True, kw_only=True):
    """The receiver answered 2xx on attempt ``attempt``."""

    attempt: int
    status_code: int


class NotificationAttemptFailed(NotificationEventBase, frozen=True, kw_only=True):
    """Attempt ``attempt`` failed (``error`` says how); ``retry_at`` None: given up."""

    attempt: int
    error: str
    retry_at: datetime | None


NotificationEvent = NotificationQueued | NotificationDelivered | NotificationAttemptFailed


# -- warm pools: stream ``pool-<member id>``, one per pooled backend object ----------------------
# A member is made ahead of any request, owned by nobody and reachable by nobody, under a name
# from ``shared.naming.pool_name``. Once taken, its backend objects carry the resource's tenant
# name and belong to the resource's own stream, whose ``ResourceProvisioned`` names the member;
# the member's stream ends at ``PoolMemberReady`` (docs/adr/0047).


class PoolMemberEventBase(Event, frozen=True, kw_only=True):
    """Fields of every event in a pool member's stream."""

    member_id: UUID


class PoolMemberRequested(PoolMemberEventBase, frozen=True, kw_only=True):
    """Intent, recorded before the pooled object is made on ``server`` (host:port)."""

    kind: ResourceKind
    server: str


class PoolMemberReady(PoolMemberEventBase, frozen=True, kw_only=True):
    """The pooled object exists, with no login, no password and no grant to anyone."""


class PoolMemberTaken(PoolMemberEventBase, frozen=True, kw_only=True):
    """Intent, recorded before the object was renamed to the tenant name of ``resource_id``.

    No longer written: the rename itself settles which replica takes a member, and the
    resource's ``ResourceProvisioned`` names it (docs/adr/0047). Kept so that the streams of
    earlier takes still read.
    """

    resource_id: UUID


class PoolMemberDropped(PoolMemberEventBase, frozen=True, kw_only=True):
    """The pooled object is gone from its server (dropped, or found missing); never handed out."""

    reason: str


PoolEvent = PoolMemberRequested | PoolMemberReady | PoolMemberTaken | PoolMemberDropped


# -- accounts: stream ``account-<id>`` ----------------------------------------------------------


class AccountEventBase(Event, frozen=True, kw_only=True):
    """Fields of every event in an account's stream."""

    account_id: UUID


class AccountRegistered(AccountEventBase, frozen=True, kw_only=True):
    """A new account; ``password_hash`` is a memory-hard KDF hash (never the password)."""

    email: str
    password_hash: str
    tier: str


class AccessTokenCreated(AccountEventBase, frozen=True, kw_only=True):
    """A personal access token; only its SHA-256 ``token_hash`` is kept."""

    token_id: UUID
    name: str
    scopes: list[str]
    token_hash: str
    expires_at: datetime | None = None


class AccessTokenRevoked(AccountEventBase, frozen=True, kw_only=True):
    """The token no longer authenticates."""

    token_id: UUID


class SessionRevoked(AccountEventBase, frozen=True, kw_only=True):
    """A session JWT (by ``jti``) no longer authenticates, though unexpired (a logout)."""

    jti: str
    expires_at: datetime


AccountEvent = AccountRegistered | AccessTokenCreated | AccessTokenRevoked | SessionRevoked


# -- claims: stream ``claim-<claim id>`` (the claim token's id) --------------------------------


class ClaimEventBase(Event, frozen=True, kw_only=True):
    """Fields of every event in a claim's stream."""

    claim_id: UUID
    account_id: UUID


class ClaimStarted(ClaimEventBase, frozen=True, kw_only=True):
    """An account began moving these anonymous resources into itself; the token is now used."""

    fingerprint: str
    resource_ids: list[UUID]


class ClaimCompleted(ClaimEventBase, frozen=True, kw_only=True):
    """Every resource of the claim is the account's, with its limits raised in the backend."""

    resource_ids: list[UUID]


ClaimEvent = ClaimStarted | ClaimCompleted

StoredEvent = ResourceEvent | NotificationEvent | PoolEvent | AccountEvent | ClaimEvent


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored, and as relayed on JetStream (the message body)."""

    position: int
    stream_id: str
    version: int
    event_id: UUID
    command_id: UUID
    correlation_id: str
    recorded_at: datetime
    event: StoredEvent
