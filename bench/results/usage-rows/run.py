"""What recording a usage sweep's figures costs the platform Postgres, per page of 500 (ADR 0062).

    .venv/bin/python bench/results/usage-rows/run.py 100000 1000000

A scratch kept with its results. On a throwaway stack's platform Postgres, ``resource_usage``
holds N rows; every round records every row again, in pages of 500, with the figure it already
holds (a tenant at rest), by three statements in turn: the upsert that rewrote every row (before),
one that leaves a row in its ``ON CONFLICT ... WHERE`` (considered), and the one built
(``ResourceReadModel.record_usage``: rows compared first, only those that differ written). For
each it prints the session's CPU and wall time per page and the WAL written per page.
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from datetime import timedelta

import uvloop

from bench.__main__ import bench_stack
from bench.cpu import CpuMeter
from shared.eventlog.projections import _RECORD_USAGE
from shared.eventlog.schema import migrate
from shared.pgpool import open_pool

PAGE = 500
ROUNDS = 3
REWRITE = (
    "INSERT INTO resource_usage (resource_id, usage_bytes, measured_at)"
    " SELECT id, bytes, now() FROM unnest($1::uuid[], $2::bigint[]) AS m(id, bytes)"
    " ON CONFLICT (resource_id) DO UPDATE"
    " SET usage_bytes = EXCLUDED.usage_bytes, measured_at = EXCLUDED.measured_at"
)
IN_CONFLICT_CLAUSE = REWRITE + (
    " WHERE resource_usage.usage_bytes IS DISTINCT FROM EXCLUDED.usage_bytes"
    " OR resource_usage.measured_at <= now() - $3::interval"
)
STATEMENTS = {
    "rewrite every row (before)": REWRITE,
    "ON CONFLICT ... WHERE": IN_CONFLICT_CLAUSE,
    "compare first (built)": _RECORD_USAGE,
}


async def _rounds(dsn: str, rows: int) -> None:
    pool = await open_pool(dsn, size=1)
    await migrate(pool)
    await pool.execute("TRUNCATE resource_usage")
    ids = [uuid.uuid4() for _ in range(rows)]
    sizes = [random.randrange(10**6) for _ in range(rows)]
    await pool.execute(REWRITE, ids, sizes)
    await pool.execute("VACUUM ANALYZE resource_usage")
    meter = CpuMeter({"pg": await pool.fetchval("SELECT pg_backend_pid()")})
    refresh = timedelta(minutes=10)
    for round_ in range(ROUNDS):
        for name, sql in STATEMENTS.items():
            extra = () if sql is REWRITE else (refresh,)
            lsn = await pool.fetchval("SELECT pg_current_wal_lsn()")
            meter.start()
            started = time.perf_counter()
            pages = 0
            for i in range(0, rows, PAGE):
                await pool.execute(sql, ids[i : i + PAGE], sizes[i : i + PAGE], *extra)
                pages += 1
            wall_ms = (time.perf_counter() - started) * 1000 / pages
            cpu_ms = meter.per_call(pages).get("pg", 0.0)
            wal = await pool.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", lsn
            )
            print(  # noqa: T201
                f"| {rows:,} | {round_ + 1} | {name} | {cpu_ms:.2f} | {wall_ms:.2f} |"
                f" {float(wal) / pages / 1024:.1f} |",
                flush=True,
            )
    await pool.close()


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [100_000]
    print("| rows | round | statement | Postgres CPU ms/page | wall ms/page | WAL KiB/page |")  # noqa: T201
    print("|---:|---:|---|---:|---:|---:|")  # noqa: T201
    with bench_stack(durable=False, name="urows") as stack:
        for rows in sizes:
            uvloop.run(_rounds(stack.env()["SPINUP_PLATFORM_DSN"], rows))


if __name__ == "__main__":
    main()
