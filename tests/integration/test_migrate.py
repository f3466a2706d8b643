"""The platform schema's migration on a database an older release made."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.contracts.events import NotifyTargetSet
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.schema import migrate
from shared.eventlog.store import EventStore
from shared.naming import resource_stream
from shared.testing.factories import provision_requested

pytestmark = pytest.mark.integration

#: The columns ADR 0037 added to ``resources``.
NOTIFY_COLUMNS = (
    "notify_url",
    "notify_generation",
    "notify_leads",
    "notify_from",
    "over_quota_event",
    "over_quota_usage",
    "over_quota_quota",
)


@pytest.fixture
async def scratch(env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose tables are those of a schema of its own, dropped afterwards."""
    schema = f"scratch_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(env["SPINUP_PLATFORM_DSN"])
    await admin.execute(f"CREATE SCHEMA {schema}")
    pool = await asyncpg.create_pool(
        env["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2, server_settings={"search_path": schema}
    )
    try:
        yield pool
    finally:
        await pool.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def test_rows_written_before_the_notify_columns_get_them_from_the_log(
    scratch: asyncpg.Pool, env: dict[str, str]
) -> None:
    await migrate(scratch)
    store = EventStore(
        scratch, Keyring.from_setting(env["SPINUP_SEAL_KEYS"]), [ResourceProjection()]
    )
    rid = uuid.uuid4()
    target = NotifyTargetSet(
        resource_id=rid, url="https://example.com/h", secret_generation=2, lead_seconds=[600]
    )
    await store.append(
        resource_stream(rid),
        0,
        [provision_requested(rid), target],
        command_id=uuid.uuid4(),
        correlation_id="test",
    )
    # The table as the release before them left it: the row has no target.
    await scratch.execute(
        "ALTER TABLE resources " + ", ".join(f"DROP COLUMN {c}" for c in NOTIFY_COLUMNS)
    )
    await migrate(scratch)
    row = await scratch.fetchrow("SELECT notify_url, notify_generation FROM resources")
    assert tuple(row) == ("https://example.com/h", 2)
    # Once: a later start finds nothing to fill in, and rebuilds nothing.
    await scratch.execute("UPDATE resources SET notify_generation = 9")
    await migrate(scratch)
    assert await scratch.fetchval("SELECT notify_generation FROM resources") == 9
