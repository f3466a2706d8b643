"""A usage sweep in pages (ADR 0049), against the real platform Postgres and customer Redis.

The reaper asks for page after page; each is a request of its own, so a page lost with a killed
worker costs only that page's timeout. What must hold: the pages together measure every live
resource of the kind once, each page at most a batch, and the last one says there is no next.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import msgspec
import pytest

from redis_provisioner.driver import RedisDriver
from shared.contracts.commands import SweepUsage
from shared.contracts.kinds import RedisLimits, ResourceKind
from shared.contracts.replies import UsageSwept
from shared.eventlog.projections import ACTIVE_PAGE_SQL
from shared.lifecycle import ResourceLifecycle
from shared.testing.factories import provision_command

pytestmark = pytest.mark.integration

BATCH = 2


def page(after: uuid.UUID | None, sweep_id: uuid.UUID | None = None) -> SweepUsage:
    return SweepUsage(
        command_id=uuid.uuid4(),
        correlation_id="test-usage-pages",
        deadline=9e9,
        kind=ResourceKind.REDIS,
        after=after,
        sweep_id=sweep_id,
    )


def count_scans(driver: RedisDriver, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the SCAN steps ``driver`` asks of the server from now on: ``[steps]``."""
    steps = [0]
    scan = driver._admin.scan

    async def counted(*args: Any, **kwargs: Any) -> Any:
        steps[0] += 1
        return await scan(*args, **kwargs)

    monkeypatch.setattr(driver._admin, "scan", counted)
    return steps


async def with_three_caches(
    lifecycle_of: Callable[..., ResourceLifecycle], redis_driver: RedisDriver
) -> ResourceLifecycle:
    """A Redis worker's lifecycle measuring ``BATCH`` a page, without rest, and three caches."""
    lifecycle = lifecycle_of(redis_driver, usage_batch=BATCH, usage_sweep_duty=1.0)
    for _ in range(3):
        await lifecycle.provision(
            provision_command(kind=ResourceKind.REDIS, limits=RedisLimits(memory_mb=8))
        )
    return lifecycle


async def test_the_pages_of_a_sweep_measure_every_live_resource_once(
    lifecycle_of: Callable[..., ResourceLifecycle],
    redis_driver: RedisDriver,
    platform_db: asyncpg.Pool,
) -> None:
    lifecycle = await with_three_caches(lifecycle_of, redis_driver)
    live = await platform_db.fetchval(
        "SELECT count(*) FROM resources WHERE kind = 'redis' AND status = 'active'"
    )
    pages: list[UsageSwept] = [await lifecycle.sweep_usage(page(None))]
    while (after := pages[-1].next_after) is not None:
        pages.append(await lifecycle.sweep_usage(page(after)))
    assert all(swept.measured <= BATCH for swept in pages)
    assert sum(swept.measured for swept in pages) == live
    assert len(pages) == live // BATCH + 1  # the last page is short, or empty after a full one
    assert pages[-1].next_after is None


async def test_every_page_of_a_sweep_is_measured_from_one_scan_of_the_keyspace(
    lifecycle_of: Callable[..., ResourceLifecycle],
    redis_driver: RedisDriver,
    platform_db: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A scan for each page made a sweep cost pages x keys (docs/adr/0060).
    lifecycle = await with_three_caches(lifecycle_of, redis_driver)
    scans = count_scans(redis_driver, monkeypatch)
    sweep_id = uuid.uuid4()
    pages: list[UsageSwept] = [await lifecycle.sweep_usage(page(None, sweep_id))]
    one_census = scans[0]
    while (after := pages[-1].next_after) is not None:
        pages.append(await lifecycle.sweep_usage(page(after, sweep_id)))
    assert len(pages) >= 2
    assert one_census >= 1
    assert scans[0] == one_census, "the later pages scanned the keyspace again"
    await lifecycle.sweep_usage(page(None, uuid.uuid4()))
    assert scans[0] > one_census, "a new sweep counts the keyspace anew"


async def test_a_page_rests_before_it_answers_but_never_past_its_deadline(
    lifecycle_of: Callable[..., ResourceLifecycle], redis_driver: RedisDriver
) -> None:
    # A duty of 0.001 %: the rest after a batch would be 99,999 times its measuring, a minute.
    lifecycle = lifecycle_of(redis_driver, usage_batch=1, usage_sweep_duty=0.00001)
    for _ in range(2):
        await lifecycle.provision(
            provision_command(kind=ResourceKind.REDIS, limits=RedisLimits(memory_mb=8))
        )
    first = msgspec.structs.replace(page(None), deadline=time.time() + 4)
    started = time.monotonic()
    swept = await lifecycle.sweep_usage(first)
    answered_in = time.monotonic() - started
    assert swept.next_after is not None
    assert 1.0 < answered_in < 3.0, "it rests, and answers two seconds before the deadline"


async def test_a_page_reads_no_ended_resource_however_many_there_are(
    platform_db: asyncpg.Pool,
) -> None:
    # 100,000 resources of five kinds, one in four active, in a transaction rolled back. Walking
    # the ids read every ended row on the way to filling a page (ADR 0058); reading every active
    # row of the kind and sorting them read ten pages' worth. A page reads its own rows.
    async with platform_db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(
                "INSERT INTO resources (id, version, status, kind, needs_cleanup)"
                " SELECT gen_random_uuid(), 2,"
                "  CASE WHEN i % 4 = 0 THEN 'active' ELSE 'deleted' END,"
                "  (ARRAY['postgres', 'redis', 'mongo', 'nats', 's3'])[i % 5 + 1], false"
                " FROM generate_series(1, 100000) AS i"
            )
            await conn.execute("ANALYZE resources")
            explained = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {ACTIVE_PAGE_SQL}", "redis", uuid.UUID(int=0), 500
            )
        finally:
            await transaction.rollback()
    # The rows each scan of the table fetched (a bitmap's index pass is counted by its heap scan).
    scans = [
        node
        for node in _plan_nodes(json.loads(explained)[0]["Plan"])
        if node["Node Type"].endswith("Scan") and node["Node Type"] != "Bitmap Index Scan"
    ]
    read = sum(
        (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
        for node in scans
    )
    assert read <= 2 * 500, scans


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)
