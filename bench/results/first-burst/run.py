"""The first burst after a start, the scratch of 2026-12-06 (17:00-17:35 UTC), kept as one script.

    .venv/bin/python bench/results/first-burst/run.py restarts [none,gateway,...]  # 3 rounds
    .venv/bin/python bench/results/first-burst/run.py redis-open                  # 4 rounds A/B
    .venv/bin/python bench/results/first-burst/run.py worker-warm                 # 4 rounds A/B
    .venv/bin/python bench/results/first-burst/run.py append-rehearsed            # 4 rounds A/B

Each round: restart, 100 ``/cache/new`` before the burst, the load generator's 16 connections
opened with ``GET /healthz`` (unless ``NEW_CONNECTIONS=1``), then 16 creates at once, 16 more,
300 at c=16; p50 of each. ``restarts`` restarts the services named; ``redis-open`` restarts the
gateway, B with ``AB_NO_REDIS_OPEN=1`` (the switch in ``../ab-redis-opened-at-start/``, never
committed); ``worker-warm`` restarts redis-provisioner, B sending the 100 creates 8 at a time;
``append-rehearsed`` restarts redis-provisioner, B with ``AB_NO_APPEND_REHEARSAL=1`` (its
connections do not rehearse the append at start; the switch in ``append-rehearsed.diff``).
"""

import os
import statistics
import sys
import time

import aiohttp
import uvloop

from bench.__main__ import bench_stack
from bench.harness import caller, gateway_connector, restart_with
from bench.measure import measure

PATH = "/cache/new"


async def burst(url: str, offset: int, before_at_once: int = 1) -> tuple[float, float, float]:
    async with aiohttp.ClientSession(url, connector=gateway_connector(before_at_once)) as http:

        async def before(i: int) -> None:
            async with http.post(PATH, headers=caller(offset + i)) as response:
                await response.read()
                assert response.status == 201, response.status

        await measure("before", before, calls=100, concurrency=before_at_once)
    async with aiohttp.ClientSession(url, connector=gateway_connector(16)) as http:

        async def one(i: int) -> None:
            async with http.post(PATH, headers=caller(offset + 1000 + i)) as response:
                await response.read()
                assert response.status == 201, response.status

        if not os.environ.get("NEW_CONNECTIONS"):

            async def healthz(_: int) -> None:
                async with http.get("/healthz") as response:
                    await response.read()

            await measure("connections", healthz, calls=16, concurrency=16)
        first = await measure("first", one, calls=16, concurrency=16)
        second = await measure("second", one, calls=16, concurrency=16)
        later = await measure("later", one, calls=300, concurrency=16)
    return first.ms(0.5), second.ms(0.5), later.ms(0.5)


def main() -> None:
    mode = sys.argv[1]
    arms = sys.argv[2].split(",") if mode == "restarts" and len(sys.argv) > 2 else ["A", "B"]
    rounds = 3 if mode == "restarts" else 4
    with bench_stack(durable=False, name="burst") as stack:
        uvloop.run(burst(stack.gateway_url, 0))
        results: dict[str, list[tuple[float, float, float]]] = {}
        for number in range(rounds):
            for arm in arms if number % 2 == 0 else arms[::-1]:
                before_at_once = 1
                if mode == "restarts":
                    both = ["gateway", "redis-provisioner"]
                    services = {"none": [], "both": both}.get(arm, [arm])
                    restart_with(stack, services, {}, on=True)
                elif mode == "redis-open":
                    restart_with(stack, ["gateway"], {"AB_NO_REDIS_OPEN": "1"}, on=arm == "B")
                elif mode == "append-rehearsed":
                    switch = {"AB_NO_APPEND_REHEARSAL": "1"}
                    restart_with(stack, ["redis-provisioner"], switch, on=arm == "B")
                else:
                    restart_with(stack, ["redis-provisioner"], {}, on=True)
                    before_at_once = 8 if arm == "B" else 1
                time.sleep(3)
                offset = 10_000 * (number * 10 + arms.index(arm) + 1)
                got = uvloop.run(burst(stack.gateway_url, offset, before_at_once))
                results.setdefault(arm, []).append(got)
                print(number, arm, [round(x, 1) for x in got], flush=True)
        for arm, rows in results.items():
            medians = [round(statistics.median(row[i] for row in rows), 1) for i in range(3)]
            print(arm, "p50 medians: first 16, next 16, 300 at c=16:", medians)


main()
