"""HTTP request and response bodies. Requests forbid unknown fields, so a typo is a 400."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec


class NewDatabase(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Optional body of ``POST /db/new``."""

    name: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\w .:/@-]+$")] | None
    ) = None


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits a resource has; ``expires_in`` is seconds left (null: permanent)."""

    storage_mb: int
    connections: int
    expires_in: int | None


class DatabaseCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A new database. Keep ``token``: it is the only way to manage the resource."""

    ok: bool = True
    id: UUID
    token: str
    connection_url: str
    tier: str
    limits: Limits
    expires_at: datetime | None
    claim_url: str | None
    note: str


class ResourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /resources/{token}`` shows."""

    ok: bool = True
    id: UUID
    kind: str
    status: str
    tier: str
    name: str | None
    limits: Limits
    created_at: datetime | None
    expires_at: datetime | None
    connection_url: str | None


class ResourceDeleted(msgspec.Struct, frozen=True, kw_only=True):
    """The resource is gone and its credentials no longer work."""

    ok: bool = True
    id: UUID
    status: str


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """Liveness or readiness, with one entry per dependency checked."""

    ok: bool
    checks: dict[str, str]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every 4xx and 5xx body."""

    ok: bool = False
    error: str
    message: str
    request_id: str
