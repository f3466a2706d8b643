"""Which restart makes the first c=16 burst slow: restart one service, 100 creates at c=1, then 16 at once."""
import asyncio, sys, time, statistics, os
sys.path.insert(0, "/work/main")
import aiohttp, uvloop
from bench.__main__ import bench_stack
from bench.harness import caller, gateway_connector, restart_with
from bench.measure import measure
PATH = os.environ.get("BPATH", "/cache/new")
async def burst(url, off):
    async with aiohttp.ClientSession(url, connector=gateway_connector(1)) as http:
        async def one(i):
            async with http.post(PATH, headers=caller(off + i)) as r:
                await r.read(); assert r.status == 201, r.status
        await measure("c1", one, calls=100, concurrency=1)
    async with aiohttp.ClientSession(url, connector=gateway_connector(16)) as http:
        async def one(i):
            async with http.post(PATH, headers=caller(off + 1000 + i)) as r:
                await r.read(); assert r.status == 201, r.status
        if os.environ.get("PREOPEN"):
            async def hz(i):
                async with http.get("/healthz") as r:
                    await r.read()
            await measure("hz", hz, calls=16, concurrency=16)
        first = await measure("b1", one, calls=16, concurrency=16)
        second = await measure("b2", one, calls=16, concurrency=16)
        rest = await measure("b3", one, calls=300, concurrency=16)
    return first.ms(0.5), second.ms(0.5), rest.ms(0.5)
def main():
    with bench_stack(durable=False, name="burst") as stack:
        url = stack.gateway_url
        uvloop.run(burst(url, 0))
        res = {}
        targets = os.environ.get("TARGETS","none,gateway,redis-provisioner,both").split(",")
        for rnd in range(3):
            for t in targets:
                svcs = {"none": [], "both": ["gateway", "redis-provisioner"]}.get(t, [t])
                restart_with(stack, svcs, {}, on=True)
                time.sleep(3)
                r = uvloop.run(burst(url, 10_000 * (rnd * 10 + targets.index(t) + 1)))
                res.setdefault(t, []).append(r)
                print(rnd, t, [round(x, 1) for x in r], flush=True)
        for t, rows in res.items():
            print(t, "first16 p50 median", round(statistics.median(r[0] for r in rows), 1), "second", round(statistics.median(r[1] for r in rows), 1), "later", round(statistics.median(r[2] for r in rows), 1))
main()
