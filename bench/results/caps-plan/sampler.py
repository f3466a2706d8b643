import asyncio, collections, json, sys
import asyncpg, uvloop
from bench.__main__ import bench_stack
from bench.ab import _measure_kind, _QUIET_CORES, _SETTLE_S
from bench.cpu import until_quiet
from shared.contracts.kinds import ResourceKind

async def run(stack):
    env = stack.env()
    pool = await asyncpg.create_pool(env["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2)
    seen = collections.Counter()
    stop = asyncio.Event()
    async def sample():
        while not stop.is_set():
            rows = await pool.fetch("SELECT backend_type, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS q FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()")
            for r in rows:
                seen[(r['backend_type'], r['q'])] += 1
            bg = await pool.fetch("SELECT backend_type FROM pg_stat_activity WHERE backend_type LIKE 'autovacuum%' AND state IS DISTINCT FROM 'idle'")
            for r in bg: seen[(r['backend_type'], 'autovacuum worker present')] += 1
            await asyncio.sleep(0.05)
    processes = {n: p.pid for n, p in {**stack.servers, **stack.services}.items() if p.pid}
    for rnd in range(4):
        await until_quiet(processes, below_cores=_QUIET_CORES, within_s=_SETTLE_S)
        seen.clear(); stop.clear()
        t = asyncio.create_task(sample())
        fig = await _measure_kind(stack.gateway_url, ResourceKind.REDIS, processes, 800, 8.0)
        stop.set(); await t
        print("ROUND", rnd, fig["c16_per_s"], fig["cpu_ms"], json.dumps(fig["cpu_ms_by_process"]), flush=True)
        for (bt, q), n in seen.most_common(12):
            print(f"   {n:5d} {bt:20s} {q}", flush=True)
        av = await pool.fetch("SELECT relname, n_live_tup, autovacuum_count, autoanalyze_count FROM pg_stat_user_tables ORDER BY n_live_tup DESC LIMIT 6")
        print("   tables:", [tuple(r) for r in av], flush=True)
        from shared.eventlog.projections import _COUNT_HELD_ANONYMOUS
        fp = await pool.fetchval("SELECT fingerprint FROM resources WHERE account_id IS NULL LIMIT 1")
        async with pool.acquire() as c:
            await c.execute("SET plan_cache_mode = force_generic_plan")
            q = _COUNT_HELD_ANONYMOUS.replace("$1","$1::text").replace("$2","$2::text").replace("$3","$3::int").replace("$4","$4::int")
            await c.execute(f"PREPARE g(text,text,int,int) AS {_COUNT_HELD_ANONYMOUS}")
            plan = await c.fetch("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE g('" + fp + "', 'redis', 5000, 5000)")
            print("   generic:", " | ".join(r[0].strip() for r in plan), flush=True)
            await c.execute("DEALLOCATE g; RESET plan_cache_mode")
        la = await pool.fetch("SELECT relname, last_autoanalyze, last_autovacuum FROM pg_stat_user_tables WHERE relname IN ('resources','events')")
        print("   analyzed:", [tuple(r) for r in la], flush=True)
    await pool.close()

with bench_stack(durable=False, name="pgs") as stack:
    uvloop.run(run(stack))
