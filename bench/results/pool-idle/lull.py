import asyncio, sys, time, json

sys.path.insert(0, "/work/main")
import aiohttp
from bench.__main__ import bench_stack
from bench.harness import caller, gateway_connector, interleaved

LULL_S = 320
count = 0


async def measure(stack):
    global count
    async with aiohttp.ClientSession(stack.gateway_url, connector=gateway_connector(16)) as http:

        async def one():
            global count
            count += 1
            t = time.perf_counter()
            async with http.post("/cache/new", headers=caller(count)) as r:
                assert r.status == 201
                await r.read()
            return (time.perf_counter() - t) * 1000

        for _ in range(20):
            await one()
        for _ in range(3):
            await asyncio.gather(*(one() for _ in range(16)))
        warm = sorted(await asyncio.gather(*(one() for _ in range(16))))
    await asyncio.sleep(LULL_S)
    async with aiohttp.ClientSession(stack.gateway_url, connector=gateway_connector(16)) as http:

        async def one2():
            global count
            count += 1
            t = time.perf_counter()
            async with http.post("/cache/new", headers=caller(count)) as r:
                assert r.status == 201
                await r.read()
            return (time.perf_counter() - t) * 1000

        # the gateway's keep-alive connections are new here in both arms
        await one2()
        after = sorted(await asyncio.gather(*(one2() for _ in range(16))))
    return {
        "warm_burst_p50": round(warm[8], 1),
        "warm_burst_max": round(warm[-1], 1),
        "after_lull_p50": round(after[8], 1),
        "after_lull_max": round(after[-1], 1),
    }


async def main(stack):
    result = await interleaved(
        stack,
        restart=["redis-provisioner"],
        settings={"SPINUP_AB_POOL_IDLE_S": "0"},
        rounds=2,
        measure=lambda: measure(stack),
        label="lull",
    )
    print(json.dumps(result))


with bench_stack(durable=False, name="lull") as stack:
    asyncio.run(main(stack))
