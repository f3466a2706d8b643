"""Resource kinds, their lifecycle states, and the limits each kind takes from ``plans.yaml``."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class ResourceKind(StrEnum):
    """What a resource is; each kind has one provisioner."""

    POSTGRES = "postgres"


class ResourceStatus(StrEnum):
    """Where a resource is in its life. Derived from its events only."""

    NONE = "none"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"
    EXPIRED = "expired"


class DeprovisionReason(StrEnum):
    """Why a resource is being removed."""

    DELETED = "deleted"
    EXPIRED = "expired"
    ORPHANED = "orphaned"


class PostgresLimits(msgspec.Struct, frozen=True, kw_only=True, tag="postgres"):
    """Per-database limits, enforced in Postgres itself where it can."""

    storage_mb: int
    connections: int
    statement_timeout_ms: int
    temp_file_limit_mb: int


Limits = PostgresLimits


class PostgresCredentials(msgspec.Struct, frozen=True, kw_only=True, tag="postgres"):
    """What a tenant needs to reach its database."""

    connection_url: str
    host: str
    port: int
    database: str
    username: str
    password: str


Credentials = PostgresCredentials
