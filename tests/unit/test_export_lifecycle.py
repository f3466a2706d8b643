"""Suspend and export in the worker's lifecycle (ADR 0030), through the running pg-provisioner:
an unexpired resource is never suspended, a suspended one keeps its data for the export and is
not deleted before its grace ends, and suspending twice is harmless.

The stack's reaper follows the same log and may get to a step first: every step is idempotent,
so the assertions hold whoever acted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from pg_provisioner.driver import PostgresDriver
from shared.bus import Bus
from shared.contracts.commands import DeprovisionResource, ExportResource, SuspendResource
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import DeprovisionReason, ResourceKind
from shared.contracts.subjects import ENDPOINTS, PROVISION_POSTGRES
from shared.lifecycle import ExportingDriver
from shared.observability.tracing import TracedDriver
from shared.testing.factories import deprovision_command, provision_command
from shared.testing.polling import eventually

ENDS = ENDPOINTS[ResourceKind.POSTGRES]
GRACE_S = 6

#: What an ended session raises on its next query: the server's FATAL, a closed socket, or
#: asyncpg's own state error when the termination arrived between two messages.
ENDED_SESSION = (
    asyncpg.PostgresError,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@pytest.fixture
async def bus(env: dict[str, str]) -> AsyncIterator[Bus]:
    connected = await Bus.connect(env["SPINUP_NATS_URL"], name="test-export-lifecycle")
    yield connected
    await connected.close()


def suspend(resource_id: uuid.UUID) -> SuspendResource:
    return SuspendResource(
        command_id=uuid.uuid4(),
        correlation_id="test",
        deadline=time.time() + ENDS.suspend.timeout,
        resource_id=resource_id,
    )


def expiry_delete(resource_id: uuid.UUID) -> DeprovisionResource:
    return deprovision_command(
        resource_id,
        reason=DeprovisionReason.EXPIRED,
        deadline_in=ENDS.deprovision.timeout,
        correlation_id="test",
    )


async def export_bytes(bus: Bus, resource_id: uuid.UUID) -> bytes:
    _, chunks = await bus.request_stream(
        ENDS.export,
        lambda subject, window: ExportResource(
            command_id=uuid.uuid4(),
            correlation_id="test",
            deadline=time.time() + ENDS.export.timeout,
            resource_id=resource_id,
            format="custom",
            stream_subject=subject,
            window=window,
        ),
    )
    return b"".join([chunk async for chunk in chunks])


async def test_an_unexpired_resource_is_not_suspended(bus: Bus, driver: PostgresDriver) -> None:
    command = provision_command(
        expires_at=datetime.now(UTC) + timedelta(hours=1), export_grace_seconds=GRACE_S
    )
    reply = await bus.request(PROVISION_POSTGRES, command)
    with pytest.raises(SpinupError) as refused:
        await bus.request(ENDS.suspend, suspend(command.resource_id))
    assert refused.value.code is ErrorCode.INVALID_COMMAND
    assert "Not expired" in refused.value.message
    conn = await asyncpg.connect(reply.credentials.connection_url)
    await conn.close()
    await bus.request(
        ENDS.deprovision,
        deprovision_command(
            command.resource_id, deadline_in=ENDS.deprovision.timeout, correlation_id="test"
        ),
    )
    assert not await driver.exists(command.resource_id)


async def test_suspended_keeps_the_data_for_export_until_the_grace_ends(
    bus: Bus, driver: PostgresDriver
) -> None:
    expires_at = datetime.now(UTC) + timedelta(seconds=1)
    command = provision_command(expires_at=expires_at, export_grace_seconds=GRACE_S)
    reply = await bus.request(PROVISION_POSTGRES, command)
    conn = await asyncpg.connect(reply.credentials.connection_url)
    await conn.execute("CREATE TABLE kept AS SELECT generate_series(1, 1000) AS n")
    await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.2)

    first = await bus.request(ENDS.suspend, suspend(command.resource_id))
    again = await bus.request(ENDS.suspend, suspend(command.resource_id))
    assert again.already
    assert first.delete_at == again.delete_at == expires_at + timedelta(seconds=GRACE_S)
    # The credentials stopped: the open session was ended, a new one is refused.
    with pytest.raises(ENDED_SESSION):
        await conn.fetchval("SELECT 1")
    await conn.close()
    with pytest.raises(asyncpg.PostgresError):
        await asyncpg.connect(reply.credentials.connection_url)

    # The data is there for the export; an expiry delete waits for the grace to end.
    assert (await export_bytes(bus, command.resource_id)).startswith(b"PGDMP")
    if datetime.now(UTC) < first.delete_at - timedelta(seconds=1):
        with pytest.raises(SpinupError) as early:
            await bus.request(ENDS.deprovision, expiry_delete(command.resource_id))
        assert "kept for an export" in early.value.message
        assert await driver.exists(command.resource_id)

    await asyncio.sleep(max(0.0, (first.delete_at - datetime.now(UTC)).total_seconds()) + 0.2)
    await bus.request(ENDS.deprovision, expiry_delete(command.resource_id))

    async def deleted() -> bool:
        return not await driver.exists(command.resource_id)

    assert await eventually(deleted)
    with pytest.raises(SpinupError) as gone:
        await export_bytes(bus, command.resource_id)
    assert gone.value.code is ErrorCode.RESOURCE_GONE


class _Exporter:
    kind = ResourceKind.REDIS

    async def suspend(self, resource_id: uuid.UUID) -> None: ...

    async def export(self, resource_id: uuid.UUID, fmt: str) -> AsyncIterator[bytes]:
        yield f"{resource_id} {fmt}".encode()


class _Plain:
    kind = ResourceKind.STACK


def test_a_traced_driver_can_export_exactly_when_the_driver_it_wraps_can() -> None:
    # With tracing on, the lifecycle holds a TracedDriver: it must not hide export and suspend
    # (the resource would be deleted at expiry), nor claim them for a driver without.
    assert isinstance(TracedDriver(_Exporter()), ExportingDriver)  # type: ignore[arg-type]
    assert not isinstance(TracedDriver(_Plain()), ExportingDriver)  # type: ignore[arg-type]
