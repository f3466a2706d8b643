"""A burst of 16 /cache/new after 320 s idle, against the same burst warm (README.md here).

B needs the temporary switch this measurement used in shared/pgpool.py:
``max_inactive_connection_lifetime=float(os.environ.get("SPINUP_AB_POOL_IDLE_S", "300"))``.
"""

import asyncio
import itertools
import json
import time

import aiohttp

from bench.__main__ import bench_stack
from bench.harness import caller, gateway_connector, interleaved

LULL_S = 320
BURST = 16
callers = itertools.count()


async def create(http: aiohttp.ClientSession) -> float:
    """One /cache/new from a fresh caller network; its latency in ms."""
    started = time.perf_counter()
    async with http.post("/cache/new", headers=caller(next(callers))) as response:
        assert response.status == 201
        await response.read()
    return (time.perf_counter() - started) * 1000


async def burst(http: aiohttp.ClientSession) -> list[float]:
    return sorted(await asyncio.gather(*(create(http) for _ in range(BURST))))


async def measure(stack) -> dict[str, float]:
    async with aiohttp.ClientSession(stack.gateway_url, connector=gateway_connector(BURST)) as http:
        for _ in range(20):
            await create(http)
        for _ in range(3):
            await burst(http)
        warm = await burst(http)
    await asyncio.sleep(LULL_S)
    # New keep-alive connections to the gateway in both arms.
    async with aiohttp.ClientSession(stack.gateway_url, connector=gateway_connector(BURST)) as http:
        await create(http)
        after = await burst(http)
    return {
        "warm_burst_p50": round(warm[BURST // 2], 1),
        "warm_burst_max": round(warm[-1], 1),
        "after_lull_p50": round(after[BURST // 2], 1),
        "after_lull_max": round(after[-1], 1),
    }


async def main(stack) -> None:
    result = await interleaved(
        stack,
        restart=["redis-provisioner"],
        settings={"SPINUP_AB_POOL_IDLE_S": "0"},
        rounds=2,
        measure=lambda: measure(stack),
        label="lull",
    )
    print(json.dumps(result))


if __name__ == "__main__":
    with bench_stack(durable=False, name="lull") as running:
        asyncio.run(main(running))
