"""The platform schema's migration on a database an older release made."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.contracts.events import NotifyTargetSet
from shared.contracts.kinds import ResourceKind
from shared.eventlog.projections import (
    ResourceProjection,
    ResourceReadModel,
)
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


async def test_rows_written_before_the_notify_columns_get_them_from_the_log(
    scratch: asyncpg.Pool, env: dict[str, str]
) -> None:
    await migrate(scratch)
    store = EventStore(scratch, [ResourceProjection()])
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


async def test_the_anonymous_caps_count_can_only_take_an_index_of_its_network(
    scratch: asyncpg.Pool, env: dict[str, str]
) -> None:
    # A release before this one left account indexes that held anonymous rows too.
    await migrate(scratch)
    await scratch.execute(
        "CREATE INDEX resources_account_live ON resources (account_id, kind);"
        " CREATE INDEX resources_account_made ON resources (account_id, created_at);"
        # And one on the network alone, which resources_anonymous_made covers.
        " CREATE INDEX resources_fingerprint ON resources (fingerprint)"
    )
    await migrate(scratch)
    indexes = {row["indexname"] for row in await scratch.fetch("SELECT indexname FROM pg_indexes")}
    gone = {
        "resources_account",
        "resources_account_live",
        "resources_account_made",
        "resources_fingerprint",
    }
    assert not gone & indexes
    assert {"resources_owned", "resources_owned_live", "resources_owned_made"} <= indexes

    store = EventStore(scratch, [ResourceProjection()])
    account = uuid.uuid4()
    for network, owner in [("net-a", None), ("net-a", None), ("net-b", None), ("net-c", account)]:
        rid = uuid.uuid4()
        event = provision_requested(rid, fingerprint=network, account_id=owner)
        await store.append(
            resource_stream(rid), 0, [event], command_id=uuid.uuid4(), correlation_id="test"
        )
    read_model = ResourceReadModel(scratch)
    counted = {
        network: await read_model.count_held(
            ResourceKind.POSTGRES,
            account_id=None,
            fingerprint=network,
            live_up_to=100,
            today_up_to=100,
        )
        for network in ("net-a", "net-b", "net-c")
    }
    assert counted == {"net-a": (2, 2), "net-b": (1, 1), "net-c": (0, 0)}
    assert await read_model.count_held(
        ResourceKind.POSTGRES, account_id=account, fingerprint="x", live_up_to=100, today_up_to=100
    ) == (1, 1)

    # Every index that leads with the account holds no anonymous row, so none can serve an
    # anonymous count (``account_id IS NULL``). One that did was taken by the count's cached
    # generic plan in a bench run: it scanned every anonymous live resource of the kind and
    # filtered by network, a cost that grew with the platform, on every create.
    leading_with_account = await scratch.fetch(
        "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) AS predicate FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_attribute a"
        "   ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = 'resources'::regclass AND a.attname = 'account_id'"
    )
    assert {row["relname"] for row in leading_with_account} == {
        "resources_owned",
        "resources_owned_live",
        "resources_owned_made",
    }
    for row in leading_with_account:
        assert "account_id IS NOT NULL" in (row["predicate"] or ""), row
