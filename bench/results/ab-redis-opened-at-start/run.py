"""The first burst after a gateway restart, A/B: restart the gateway, 100 creates at c=1, 16 GET /healthz at once (the client's connections), then 16 creates at once, 16 more, 300 at c=16.

PREOPEN=1 .venv/bin/python bench/results/ab-redis-opened-at-start/run.py (B: the switch in switch.diff applied).
"""
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
        targets = ["A", "B"]
        for rnd in range(4):
            for t in (targets if rnd % 2 == 0 else targets[::-1]):
                restart_with(stack, ["gateway"], {"AB_NO_REDIS_OPEN": "1"}, on=t == "B")
                time.sleep(3)
                r = uvloop.run(burst(url, 10_000 * (rnd * 10 + targets.index(t) + 1)))
                res.setdefault(t, []).append(r)
                print(rnd, t, [round(x, 1) for x in r], flush=True)
        for t, rows in res.items():
            print(t, "first16 p50 median", round(statistics.median(r[0] for r in rows), 1), "second", round(statistics.median(r[1] for r in rows), 1), "later", round(statistics.median(r[2] for r in rows), 1))
main()
