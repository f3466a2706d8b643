"""Names of backend objects, derived from resource ids, and the guard before any drop.

Why this exists: a driver that drops the wrong database destroys someone's data. Every name a
driver creates comes from ``tenant_name``; every drop first passes ``guard_tenant_name``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from shared.contracts.errors import DropRefusedError

if TYPE_CHECKING:
    from uuid import UUID

TENANT_PREFIX = "t_"
_TENANT_NAME_RE = re.compile(r"^t_[0-9a-f]{32}$")


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


def resource_stream(resource_id: UUID) -> str:
    """The event stream id of one resource."""
    return f"resource-{resource_id}"
