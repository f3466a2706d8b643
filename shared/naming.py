"""Names of backend objects, derived from resource ids, and the guard before any drop.

Why this exists: a driver that drops the wrong database destroys someone's data. Every name a
driver creates comes from ``tenant_name`` (or, for objects no tenant can reach, ``pool_name`` and
``retired_name``); every drop first passes ``guard_tenant_name`` or ``guard_disposable_name``.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from shared.contracts.errors import DropRefusedError

if TYPE_CHECKING:
    from uuid import UUID

TENANT_PREFIX = "t_"
_TENANT_NAME_RE = re.compile(r"^t_[0-9a-f]{32}$")
#: A warm-pool member, made ahead of any request and owned by nobody (``pool_name``).
POOL_PREFIX = "p_"
#: A deleted tenant's objects, renamed while they wait to be dropped (``retired_name``).
RETIRED_PREFIX = "x_"
_DISPOSABLE_NAME_RE = re.compile(r"^[px]_[0-9a-f]{32}$")


def tenant_name(resource_id: UUID) -> str:
    """``t_<32 hex>``: opaque, fixed length, valid unquoted in SQL, Redis, NATS and S3."""
    return f"{TENANT_PREFIX}{resource_id.hex}"


def guard_tenant_name(name: str) -> str:
    """Return ``name`` if it is a tenant name; refuse anything else.

    Raises:
        DropRefusedError: ``name`` was not made by ``tenant_name``.
    """
    if not _TENANT_NAME_RE.fullmatch(name):
        msg = f"refusing to drop {name!r}: not a tenant name"
        raise DropRefusedError(msg)
    return name


def tenant_resource_id(name: str) -> UUID | None:
    """The resource id a ``tenant_name`` was made from; ``None`` for any other name."""
    if not _TENANT_NAME_RE.fullmatch(name):
        return None
    return uuid.UUID(hex=name.removeprefix(TENANT_PREFIX))


def pool_name(member_id: UUID) -> str:
    """``p_<32 hex>``: a warm-pool member; same shape as a tenant name, so a rename fits."""
    return f"{POOL_PREFIX}{member_id.hex}"


def pool_member_id(name: str) -> UUID | None:
    """The member id a ``pool_name`` was made from; ``None`` for any other name."""
    if not name.startswith(POOL_PREFIX) or not _DISPOSABLE_NAME_RE.fullmatch(name):
        return None
    return uuid.UUID(hex=name.removeprefix(POOL_PREFIX))


def retired_name() -> str:
    """``x_<32 random hex>``: a fresh name for a deleted tenant's objects until they are dropped.

    Random, not derived from the resource: a retried delete never collides with a first one.
    """
    return f"{RETIRED_PREFIX}{uuid.uuid4().hex}"


def guard_disposable_name(name: str) -> str:
    """Return ``name`` if it is a pool member's or a retired name; refuse anything else.

    Raises:
        DropRefusedError: ``name`` was made neither by ``pool_name`` nor by ``retired_name``.
    """
    if not _DISPOSABLE_NAME_RE.fullmatch(name):
        msg = f"refusing to drop {name!r}: neither a pool member's nor a retired name"
        raise DropRefusedError(msg)
    return name


def pool_stream(member_id: UUID) -> str:
    """The event stream id of one warm-pool member."""
    return f"pool-{member_id}"


def resource_stream(resource_id: UUID) -> str:
    """The event stream id of one resource."""
    return f"resource-{resource_id}"


def notification_stream(resource_id: UUID) -> str:
    """The event stream id of one resource's notifications (its outbox, docs/adr/0027)."""
    return f"notification-{resource_id}"
