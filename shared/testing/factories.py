"""Contract objects for tests, with every field defaulted and any field overridable."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from shared.contracts.commands import DeprovisionResource, ProvisionResource, RotateCredentials
from shared.contracts.events import ResourceProvisionRequested
from shared.contracts.kinds import Caps, DeprovisionReason, PostgresLimits, ResourceKind

LIMITS = PostgresLimits(
    storage_mb=10, connections=2, statement_timeout_ms=5000, temp_file_limit_mb=8
)


def provision_requested(resource_id: uuid.UUID, **overrides: Any) -> ResourceProvisionRequested:  # noqa: ANN401
    """A ``ResourceProvisionRequested`` event for a Postgres database."""
    event = ResourceProvisionRequested(
        resource_id=resource_id,
        kind=ResourceKind.POSTGRES,
        tier="anonymous",
        limits=LIMITS,
        token_hash=uuid.uuid4().hex,
        fingerprint="test",
        name=None,
        expires_at=None,
        deadline=datetime.now(UTC) + timedelta(seconds=15),
    )
    return msgspec.structs.replace(event, **overrides)


def provision_command(*, deadline_in: float = 15.0, **overrides: Any) -> ProvisionResource:  # noqa: ANN401
    """A ``ProvisionResource`` command for a new Postgres database."""
    command = ProvisionResource(
        command_id=uuid.uuid4(),
        correlation_id=f"test-{uuid.uuid4().hex[:8]}",
        deadline=time.time() + deadline_in,
        resource_id=uuid.uuid4(),
        kind=ResourceKind.POSTGRES,
        tier="anonymous",
        limits=LIMITS,
        token_hash=uuid.uuid4().hex,
        fingerprint="test",
    )
    return msgspec.structs.replace(command, **overrides)


def at_its_cap(**overrides: Any) -> ProvisionResource:  # noqa: ANN401
    """A create with new ids from a holder of its own whose caps allow no live resource of it."""
    return provision_command(
        new_ids=True,
        fingerprint=f"test-{uuid.uuid4().hex}",
        caps=Caps(active_per_kind=0, provisions_per_day=10),
        **overrides,
    )


def deprovision_command(
    resource_id: uuid.UUID,
    *,
    reason: DeprovisionReason = DeprovisionReason.DELETED,
    deadline_in: float = 15.0,
    **overrides: Any,  # noqa: ANN401
) -> DeprovisionResource:
    """A ``DeprovisionResource`` command for ``resource_id``: deleted by its holder, by default."""
    command = DeprovisionResource(
        command_id=uuid.uuid4(),
        correlation_id=f"test-{uuid.uuid4().hex[:8]}",
        deadline=time.time() + deadline_in,
        resource_id=resource_id,
        reason=reason,
    )
    return msgspec.structs.replace(command, **overrides)


def rotate_command(resource_id: uuid.UUID, *, deadline_in: float = 10.0) -> RotateCredentials:
    """A ``RotateCredentials`` command for ``resource_id``."""
    return RotateCredentials(
        command_id=uuid.uuid4(),
        correlation_id=f"test-{uuid.uuid4().hex[:8]}",
        deadline=time.time() + deadline_in,
        resource_id=resource_id,
    )
