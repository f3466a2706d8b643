"""What one reaper sweep and one notifier pass cost as resources accumulate (ADR 0035, 0037).

    .venv/bin/python -m bench.due [--sizes 10000,100000,1000000]

On a throwaway stack's platform Postgres, fills ``resources`` with rows the way a platform ages:
most gone (deleted or expired), the rest live with their expiry ahead, and one in a hundred due now
(expired, suspended past its grace, provisioning past its deadline, stalled), spread over the
kinds. For each size it times the query a worker answers ``FindDue`` with
(``ResourceReadModel.due``, one kind, at most 1,000) and the stack-deployer's stuck-deploy query,
200 calls each, and prints their medians and the plan Postgres chose. It also times what a usage
sweep does in the log for one kind: every page of its active resources read and its usage recorded,
as a worker does (``sweep_usage``; each tenant measuring what it measured the sweep before, as most
do at rest), 20 sweeps, with the CPU its Postgres session spent and the WAL. One resource in a
hundred has a notify target, and those live within the hour of their expiry were warned at an hour
already; it also times one notifier pass (``to_queue`` and ``to_deliver``, as a leader after its
first pass asks them; the stack's own notifier runs meanwhile and queues what the rows make due, so
the pass timed finds little left to queue, as in steady state). The rows are written straight into
the projections, not appended: only the reads and the usage rows are measured.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import uvloop

from bench.__main__ import bench_stack
from bench.cpu import CpuMeter
from gateway.resources.outbox import OUTBOX_SCHEMA, to_deliver, to_queue
from shared.contracts.kinds import ResourceKind
from shared.eventlog.projections import DUE_SQL, ResourceReadModel
from shared.eventlog.schema import migrate
from shared.lifecycle import USAGE_BATCH
from shared.postgres.pool import open_pool

_CALLS = 200
_USAGE_SWEEPS = 20
#: What every tenant of the usage sweeps measures, sweep after sweep.
_IDLE_USAGE = 4_096
# Row i's status: 70 % gone, 29 % live with their expiry ahead, 1 % due in one of five ways.
_FILL = """
INSERT INTO resources (id, version, status, kind, created_at, expires_at, deadline, updated_at,
                       needs_cleanup, delete_at, deploy_status, deploy_moved_at)
SELECT gen_random_uuid(), 2,
       CASE WHEN i % 100 < 35 THEN 'deleted' WHEN i % 100 < 70 THEN 'expired'
            WHEN i % 100 < 99 THEN 'active'
            ELSE (ARRAY['active', 'suspended', 'provisioning', 'failed', 'deleting'])
                 [i / 100 % 5 + 1]
       END,
       (ARRAY['postgres', 'redis', 'mongo', 'nats', 's3', 'webhook', 'stack'])[i % 7 + 1],
       $2::timestamptz - interval '2 days',
       CASE WHEN i % 100 < 99 THEN $2::timestamptz + (i % 86400) * interval '1 second'
            ELSE $2::timestamptz - interval '1 minute' END,
       $2::timestamptz - interval '1 hour',
       $2::timestamptz - interval '1 hour',
       i % 100 = 99, $2::timestamptz - interval '1 minute',
       CASE WHEN i % 7 = 6 THEN 'running' END, $2::timestamptz - interval '1 hour'
FROM generate_series($1::bigint, $1::bigint + $3::bigint - 1) AS i
"""
# One row in a hundred has a notify target (warnings an hour and ten minutes ahead).
_TARGET = """
UPDATE resources SET notify_url = 'https://example.com/hook', notify_generation = 1,
    notify_leads = '{3600,600}', notify_from = expires_at - interval '1 hour'
WHERE notify_url IS NULL AND ('x' || substr(id::text, 1, 2))::bit(8)::int < 3
"""
# The live targeted ones within the hour were warned at the hour, delivered.
_WARNED = """
INSERT INTO notifications (id, resource_id, outbox_version, notification_type, url,
                           secret_generation, body, expires_at, lead_seconds, attempts, next_at)
SELECT gen_random_uuid(), id, 2, 'resource.expiring', notify_url, 1, '{}', expires_at, 3600, 1,
       NULL
FROM resources r WHERE notify_from <= $1 AND status = 'active' AND expires_at > $1
  AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.resource_id = r.id)
"""


async def _notifier_pass(conn: asyncpg.Connection, now: datetime, since: datetime) -> None:
    await to_queue(conn, now, since, 512)
    await to_deliver(conn, now, 512)


async def _usage_sweep(model: ResourceReadModel) -> int:
    """Read and record every page of one kind as ``sweep_usage`` does; how many pages.

    Every tenant measures the same as at the sweep before, as most do at rest.
    """
    after = None
    pages = 0
    while True:
        page = await model.active_page(ResourceKind.REDIS, after=after, limit=USAGE_BATCH)
        await model.record_usage({state.resource_id: _IDLE_USAGE for state in page})
        pages += 1
        if len(page) < USAGE_BATCH:
            return pages
        after = page[-1].resource_id


async def _median_ms(call: object, calls: int = _CALLS) -> float:
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()  # type: ignore[operator]
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def _measure(dsn: str, sizes: list[int]) -> list[str]:
    pool = await open_pool(dsn, size=2)
    await migrate(pool, OUTBOX_SCHEMA)
    model = ResourceReadModel(pool)
    # The usage sweeps on a session of their own, whose server process's CPU is read.
    usage_pool = await open_pool(dsn, size=1)
    usage_model = ResourceReadModel(usage_pool)
    session = CpuMeter({"session": await usage_pool.fetchval("SELECT pg_backend_pid()")})
    now = datetime.now(UTC)
    grace = timedelta(seconds=60)
    lines = []
    filled = 0
    try:
        for size in sizes:
            await pool.execute(_FILL, filled, now, size - filled)
            await pool.execute(_TARGET)
            await pool.execute(_WARNED, now)
            filled = size
            await pool.execute("ANALYZE resources")
            await pool.execute("ANALYZE notifications")
            found, backlog = await model.due(ResourceKind.REDIS, now, grace, 1000)
            due_ms = await _median_ms(lambda: model.due(ResourceKind.REDIS, now, grace, 1000))
            stuck_ms = await _median_ms(lambda: model.stuck_stacks(now, grace))
            plan = await _plan(pool, now, grace)
            pages = await _usage_sweep(usage_model)  # the first records every row
            wal_before = await pool.fetchval("SELECT pg_current_wal_lsn()")
            session.start()
            usage_ms = await _median_ms(functools.partial(_usage_sweep, usage_model), _USAGE_SWEEPS)
            usage_cpu_ms = session.per_call(_USAGE_SWEEPS).get("session", 0.0)
            usage_wal = await pool.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", wal_before
            )
            targeted = await pool.fetchval(
                "SELECT count(*) FROM resources WHERE notify_url IS NOT NULL"
            )
            since = now - timedelta(minutes=5)
            # The leader asks on its own session, as the notifier does.
            conn = await asyncpg.connect(dsn)
            try:
                notices, _ = await to_queue(conn, now, since, 512)
                pass_ms = await _median_ms(functools.partial(_notifier_pass, conn, now, since))
            finally:
                await conn.close()
            lines.append(
                f"{size:>9,} resources: due query p50 {due_ms:.2f} ms ({len(found)} returned of"
                f" {backlog} due for one kind), stuck deploys p50 {stuck_ms:.2f} ms; plan: {plan};"
                f" notifier pass p50 {pass_ms:.2f} ms ({targeted:,} targeted,"
                f" {len(notices)} to queue); a usage sweep's pages of one kind p50"
                f" {usage_ms:.1f} ms ({pages} pages), {usage_cpu_ms:.0f} ms of its Postgres"
                f" session's CPU and {usage_wal / _USAGE_SWEEPS / 1024:.0f} KiB of WAL a sweep"
                " (mean; every figure as at the sweep before)"
            )
    finally:
        await usage_pool.close()
        await pool.close()
    return lines


async def _plan(pool: asyncpg.Pool, now: datetime, grace: timedelta) -> str:
    rows = await pool.fetch(
        f"EXPLAIN (COSTS OFF) {DUE_SQL}", ResourceKind.REDIS.value, now, now - grace, 1000
    )
    nodes = [row[0].strip().removeprefix("->  ") for row in rows]
    return " > ".join(
        node.split("  ")[0]
        for node in nodes
        if not node.startswith(("Filter", "Sort Key", "Index Cond", "Recheck"))
    )


def main() -> None:
    """Start a throwaway stack, fill and measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="rows, ascending")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    with bench_stack(durable=False, name="due") as stack:
        lines = uvloop.run(_measure(stack.env()["SPINUP_PLATFORM_DSN"], sizes))
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
