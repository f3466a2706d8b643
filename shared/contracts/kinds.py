"""Resource kinds, their states, their limits from ``plans.yaml`` and their credentials.

Limits and credentials are tagged unions (``"type"`` names the kind), so a command, event or
reply carries exactly one kind's shape and an older reader can tell which one it got.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class ResourceKind(StrEnum):
    """What a resource is; each kind has one provisioner."""

    POSTGRES = "postgres"
    REDIS = "redis"
    MONGO = "mongo"
    NATS = "nats"
    S3 = "s3"
    WEBHOOK = "webhook"
    STACK = "stack"


class ResourceStatus(StrEnum):
    """Where a resource is in its life. Derived from its events only."""

    NONE = "none"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    #: Expired, credentials stopped, data kept for an export until the grace ends (ADR 0030).
    SUSPENDED = "suspended"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"
    EXPIRED = "expired"


class DeprovisionReason(StrEnum):
    """Why a resource is being removed."""

    DELETED = "deleted"
    EXPIRED = "expired"
    ORPHANED = "orphaned"


# -- limits: one struct per kind, field names exactly as written in plans.yaml -----------------


class Caps(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How many resources one client (anonymous) or one account may hold and make.

    A tier's in ``plans.yaml``; sent with a create (``ProvisionResource.caps``) for the append
    that records it to check (docs/adr/0040).
    """

    active_per_kind: int
    provisions_per_day: int


class PostgresLimits(msgspec.Struct, frozen=True, kw_only=True, tag="postgres"):
    """Per-database limits, enforced in Postgres itself where it can."""

    storage_mb: int
    connections: int
    statement_timeout_ms: int
    temp_file_limit_mb: int
    #: What the tenant may ``CREATE EXTENSION`` (docs/adr/0029); the same in every tier.
    extensions: tuple[str, ...] = ()


class RedisLimits(msgspec.Struct, frozen=True, kw_only=True, tag="redis"):
    """Per-prefix limits on the shared Redis; memory is measured by the usage sweep."""

    memory_mb: int


class MongoLimits(msgspec.Struct, frozen=True, kw_only=True, tag="mongo"):
    """Per-database limits; storage is measured with ``dbStats`` by the usage sweep."""

    storage_mb: int


class NatsLimits(msgspec.Struct, frozen=True, kw_only=True, tag="nats"):
    """Per-account limits, enforced by the NATS server from the account JWT.

    ``subscriptions_per_connection`` is -1 (none, as the server had it) in limits recorded
    before it existed (docs/adr/0051).
    """

    connections: int
    streams: int
    consumers: int
    memory_storage_mb: int
    disk_storage_mb: int
    max_payload_kb: int
    subscriptions_per_connection: int = -1


class S3Limits(msgspec.Struct, frozen=True, kw_only=True, tag="s3"):
    """Per-bucket limits; ``storage_mb`` becomes the bucket quota."""

    storage_mb: int


class WebhookLimits(msgspec.Struct, frozen=True, kw_only=True, tag="webhook"):
    """Per-receiver limits: how many requests are kept (newest first) and how big one may be.

    ``response_delay_ms_max`` bounds the delay of a custom response; 0 (the default, for limits
    recorded before it existed) allows none.
    """

    requests_kept: int
    max_body_kb: int
    response_delay_ms_max: int = 0


class StackLimits(msgspec.Struct, frozen=True, kw_only=True, tag="stack"):
    """Per-stack limits: how many services, what each container may use, how big the upload.

    ``memory_mb``, ``cpu_millis`` (1000 = one core) and ``pids`` bound every container; a
    manifest may ask for less, never more. ``ttl_seconds`` shortens the tier's TTL for stacks
    (null: stacks live as long as the tier's other resources). ``internet`` lets containers and
    builds reach the public internet; without it they reach only their own stack and resources.
    ``connections_per_endpoint`` bounds the connections the stack's containers hold at once to
    each endpoint of its resources: a shared server's own ceiling is everyone's (docs/adr/0052);
    -1 (none) in limits recorded before it existed.
    """

    services: int
    memory_mb: int
    cpu_millis: int
    pids: int
    upload_mb: int
    ttl_seconds: int | None = None
    internet: bool = False
    connections_per_endpoint: int = -1


Limits = (
    PostgresLimits | RedisLimits | MongoLimits | NatsLimits | S3Limits | WebhookLimits | StackLimits
)

MB = 1024 * 1024


def quota_bytes(limits: Limits) -> int | None:
    """The size a usage sweep holds the resource to, or None for kinds without one.

    NATS is held to its JetStream file storage, which the server also enforces by itself.
    """
    match limits:
        case PostgresLimits() | MongoLimits() | S3Limits():
            return limits.storage_mb * MB
        case RedisLimits():
            return limits.memory_mb * MB
        case NatsLimits():
            return limits.disk_storage_mb * MB
        case WebhookLimits() | StackLimits():
            return None


LIMITS_BY_KIND: dict[ResourceKind, type[Limits]] = {
    ResourceKind.POSTGRES: PostgresLimits,
    ResourceKind.REDIS: RedisLimits,
    ResourceKind.MONGO: MongoLimits,
    ResourceKind.NATS: NatsLimits,
    ResourceKind.S3: S3Limits,
    ResourceKind.WEBHOOK: WebhookLimits,
    ResourceKind.STACK: StackLimits,
}


# -- credentials: what a tenant needs to reach its resource -------------------------------------


class PostgresCredentials(msgspec.Struct, frozen=True, kw_only=True, tag="postgres"):
    """A login role that owns one database."""

    connection_url: str
    host: str
    port: int
    database: str
    username: str
    password: str


class RedisCredentials(msgspec.Struct, frozen=True, kw_only=True, tag="redis"):
    """An ACL user that may touch only keys and channels starting with ``key_prefix``."""

    connection_url: str
    host: str
    port: int
    username: str
    password: str
    key_prefix: str


class MongoCredentials(msgspec.Struct, frozen=True, kw_only=True, tag="mongo"):
    """A user with ``readWrite`` on one database (its ``authSource``)."""

    connection_url: str
    host: str
    port: int
    database: str
    username: str
    password: str


class NatsCredentials(msgspec.Struct, frozen=True, kw_only=True, tag="nats"):
    """A user of the tenant's own NATS account; ``creds`` is the standard ``.creds`` file text."""

    connection_url: str
    account: str
    user_jwt: str
    user_seed: str
    creds: str


class S3Credentials(msgspec.Struct, frozen=True, kw_only=True, tag="s3"):
    """An access key whose policy names only ``bucket``."""

    endpoint: str
    region: str
    bucket: str
    access_key: str
    secret_key: str
    s3_url: str


class WebhookCredentials(msgspec.Struct, frozen=True, kw_only=True, tag="webhook"):
    """Where to send requests; ``receive_url`` holds a capture-only secret, not the token."""

    receive_url: str


class StackCredentials(msgspec.Struct, frozen=True, kw_only=True, tag="stack"):
    """Where the stack is reached: one public URL per service with a ``port`` (by name).

    The backing resources' credentials are in the containers' environment and in
    ``GET /resources/{token}``; the stack's own token is what manages it.
    """

    urls: dict[str, str]


Credentials = (
    PostgresCredentials
    | RedisCredentials
    | MongoCredentials
    | NatsCredentials
    | S3Credentials
    | WebhookCredentials
    | StackCredentials
)


def connection_url_of(credentials: Credentials) -> str | None:
    """The one URL a client library takes, for the kinds that have one."""
    url = getattr(credentials, "connection_url", None)
    return url if isinstance(url, str) else None


# -- export: the one table of formats each kind's data can be copied out in -----------------------

#: The largest piece an exporter yields and the bus carries in one message.
EXPORT_CHUNK_BYTES = 256 * 1024


class ExportFormat(msgspec.Struct, frozen=True, kw_only=True):
    """One way a kind's data is copied out: its name in ``?format=``, what it is on the wire."""

    name: str
    media_type: str
    extension: str


#: Per kind, the formats its driver's ``export`` knows; the first is the default. A kind missing
#: here (a stack) cannot be exported.
EXPORT_FORMATS: dict[ResourceKind, tuple[ExportFormat, ...]] = {
    ResourceKind.POSTGRES: (
        ExportFormat(name="custom", media_type="application/octet-stream", extension="dump"),
        ExportFormat(name="sql", media_type="application/sql", extension="sql"),
    ),
    ResourceKind.REDIS: (
        ExportFormat(name="jsonl", media_type="application/x-ndjson", extension="jsonl"),
    ),
    ResourceKind.MONGO: (
        ExportFormat(name="tar", media_type="application/x-tar", extension="tar"),
    ),
    ResourceKind.S3: (ExportFormat(name="tar", media_type="application/x-tar", extension="tar"),),
    ResourceKind.NATS: (
        ExportFormat(name="jsonl", media_type="application/x-ndjson", extension="jsonl"),
    ),
    ResourceKind.WEBHOOK: (
        ExportFormat(name="jsonl", media_type="application/x-ndjson", extension="jsonl"),
    ),
}


def export_format(kind: ResourceKind, name: str | None) -> ExportFormat | None:
    """The format called ``name`` for ``kind`` (None: the default), or None if it has none."""
    formats = EXPORT_FORMATS.get(kind, ())
    if name is None:
        return formats[0] if formats else None
    return next((fmt for fmt in formats if fmt.name == name), None)
