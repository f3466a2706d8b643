"""A record of how README.md's figures were taken (not a tool): restart gateway and redis-provisioner with
pools warmed (A) and with the switch below set (B), then c=1 x100 and c=16 x500 of each kind.

    .venv/bin/python bench/results/ab-warm-connections/run.py [rounds]

The switch, in shared/pgpool.warm_pool, never committed:

    if os.environ.get("AB_NOWARM"):
        return
"""
import asyncio, sys, time, statistics, json
from pathlib import Path
import aiohttp, uvloop
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # run from anywhere
from bench.__main__ import bench_stack
from bench.harness import caller, gateway_connector, interleaved
from bench.measure import measure
from bench.cpu import stack_processes, until_quiet
ROUNDS=int(sys.argv[1]) if len(sys.argv)>1 else 4
off=[0]
async def level(url, path, c, n):
    async with aiohttp.ClientSession(url, connector=gateway_connector(c)) as http:
        async def new(i):
            async with http.post(path, headers=caller(i+off[0])) as r:
                await r.read(); assert r.status==201
        m = await measure("x", new, calls=n, concurrency=c)
    off[0]+=n
    return m
def main():
    with bench_stack(durable=False, name="scr") as stack:
        url=stack.gateway_url
        async def one():
            out={}
            procs=stack_processes(stack)
            await until_quiet(procs, below_cores=0.3, within_s=20)
            for path in ("/cache/new","/webhook/new"):
                await level(url, path, 1, 100)
                m=await level(url, path, 16, 500)
                lat=[x*1000 for x in m.latencies_s]
                out[path]={"first16_p50": round(statistics.median(lat[:16]),1), "first16_max": round(max(lat[:16]),1), "first100_p50": round(statistics.median(lat[:100]),1), "rate": round(m.per_second)}
            return out
        async def go():
            res = await interleaved(stack, restart=["gateway","redis-provisioner"], settings={"AB_NOWARM":"1"}, rounds=ROUNDS, measure=one, label="warm")
            for path in ("/cache/new","/webhook/new"):
                for k in ("first16_p50","first16_max","first100_p50","rate"):
                    a=[r[path][k] for r in res["A"]]; b=[r[path][k] for r in res["B"]]
                    print(f"{path} {k:13} A(warm) {statistics.median(a):7.1f} {a}  B(cold) {statistics.median(b):7.1f} {b}")
        uvloop.run(go())
main()
