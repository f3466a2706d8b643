"""Where the time of one ``POST /cache/new`` goes: each layer of the path timed on its own.

    .venv/bin/python -m bench.breakdown [--calls 200]

On one throwaway stack (``.spinup/breakdown``, configured as ``make bench``'s: the usage sweep at
its production interval), one call at a time, from the inside out: the Redis driver's
``create`` (the backend floor); the worker's whole ``provision`` of a create with new ids run in
this process (the driver, then one append of the intent and the outcome, which counts the caps:
ADR 0032, 0040), first alone,
then nudging the relay as the worker does (the relay and the events stream then work while the
create runs);
the same command sent over NATS to the running redis-provisioner; and the HTTP call through the
gateway, beside ``GET /healthz``. Each line's median minus the one before it is what that layer
adds. Every create is a real resource in the log (the driver's own are deleted again): nothing is
appended that the platform would not append itself.

Then the steps a create cannot do without, each alone: admission's rate limit (one ``EVALSHA``)
and a NATS request-reply to another process. Their medians plus
``GET /healthz`` and the in-process ``provision`` are the floor of this design at c = 1: what a
create would take if nothing but its own steps ran and no layer added a microsecond of its own.

Then where the CPU goes: the same ``POST /cache/new`` one at a time, with the CPU time every
process of the stack (with its children: Postgres backends) spent meanwhile, per create. The
machine's cores over their sum is the rate at that cost; under load some of it is shared
(flushes, batches, group commits), so the stack does somewhat better at c = 64.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
import nats
import uvloop
from redis.asyncio import Redis

from bench.__main__ import bench_stack
from bench.cpu import LOAD_GENERATOR, CpuMeter, cores, cpu_bound_per_s, stack_processes
from bench.drivers import connected
from bench.harness import caller, echo_responder
from bench.measure import summary
from gateway.admission.ratelimit import RateLimiter
from redis_provisioner.driver import RedisDriver
from shared.bus import Bus
from shared.contracts.commands import ProvisionResource
from shared.contracts.kinds import RedisLimits, ResourceKind
from shared.contracts.subjects import ENDPOINTS
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection, ResourceReadModel
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.plans import load_plans
from shared.postgres.pool import open_pool


async def _timed(calls: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return samples


async def breakdown(url: str, env: dict[str, str], calls: int) -> list[str]:
    """One summary line per layer, inside out, then each step alone and their sum."""
    plans = load_plans(Path(env["SPINUP_PLANS_FILE"]))
    tier_name = plans.anonymous_tier
    tier = plans.tiers[tier_name]
    limits = tier.limits(ResourceKind.REDIS)
    if not isinstance(limits, RedisLimits):  # pragma: no cover
        msg = "the plans gave a Redis resource limits of another kind"
        raise TypeError(msg)
    keyring = Keyring.from_setting(env["SPINUP_SEAL_KEYS"])

    def command() -> ProvisionResource:
        return ProvisionResource(
            command_id=uuid.uuid4(),
            correlation_id="bench-breakdown",
            deadline=time.time() + 10,
            resource_id=uuid.uuid4(),
            kind=ResourceKind.REDIS,
            tier=tier_name,
            limits=limits,
            token_hash=uuid.uuid4().hex,
            # A network of its own each time, as for the HTTP creates below.
            fingerprint=uuid.uuid4().hex,
            new_ids=True,
            caps=tier.caps,
        )

    layers: dict[str, list[float]] = {}
    platform = await open_pool(env["SPINUP_PLATFORM_DSN"], size=8)
    bus = await Bus.connect(env["SPINUP_NATS_URL"], name="bench-breakdown")
    try:
        async with connected(ResourceKind.REDIS, env) as driver:
            if not isinstance(driver, RedisDriver):  # pragma: no cover
                msg = "bench.drivers connected Redis with another driver"
                raise TypeError(msg)
            made: list[uuid.UUID] = []

            async def raw_create() -> None:
                made.append(uuid.uuid4())
                await driver.create(made[-1], limits)

            layers[_DRIVER] = await _timed(calls, raw_create)
            for tenant in made:  # the log knows nothing of these: leave no orphan behind
                await driver.delete(tenant)
            for label, nudge in ((_IN_PROCESS, None), (_NUDGED, bus.nudge_relay)):
                lifecycle = ResourceLifecycle(
                    EventStore(platform, [ResourceProjection()], nudge=nudge),
                    keyring,
                    driver,
                    resources=ResourceReadModel(platform),
                    create_concurrency=8,
                    delete_concurrency=4,
                )
                layers[label] = await _timed(
                    calls, functools.partial(_provision_new, lifecycle, command)
                )
        endpoint = ENDPOINTS[ResourceKind.REDIS].provision
        layers[_OVER_NATS] = await _timed(calls, lambda: bus.request(endpoint, command()))
        async with aiohttp.ClientSession(url) as http:

            async def get_healthz() -> None:
                async with http.get("/healthz") as response:
                    response.raise_for_status()

            created = itertools.count()

            async def post_cache_new() -> None:
                # Each create from its own network, as in the harness: one holder's caps would
                # count every resource made before it.
                async with http.post("/cache/new", headers=caller(next(created))) as response:
                    response.raise_for_status()

            layers[_HEALTHZ] = await _timed(calls, get_healthz)
            layers[_OVER_HTTP] = await _timed(calls, post_cache_new)
        # The creates above leave the relay and the reaper a backlog: let it drain first, so
        # the steps alone are timed on a stack as idle as the layers' first calls found it.
        await asyncio.sleep(_SETTLE_S)
        layers.update(await _steps_alone(env, calls))
    finally:
        await bus.close()
        await platform.close()
    floor_ms = 1000 * sum(statistics.median(layers[step]) for step in _DESIGN_FLOOR)
    whole_ms = 1000 * statistics.median(layers[_OVER_HTTP])
    floor_line = (
        f"{'the steps alone, summed':<{_WIDTH}}         median {floor_ms:7.2f} ms"
        f"  ({' + '.join(_DESIGN_FLOOR_SHORT)}; POST /cache/new is {whole_ms / floor_ms:.1f}x)"
    )
    return [*(summary(label, s, width=_WIDTH) for label, s in layers.items()), floor_line]


async def _provision_new(
    lifecycle: ResourceLifecycle, command: Callable[[], ProvisionResource]
) -> None:
    await lifecycle.provision(command())


_SETTLE_S = 2.0
_WIDTH = 48
_DRIVER = "redis driver create"
_IN_PROCESS = "provision in-process (driver + 1 append)"
_NUDGED = "same, nudging the relay as the worker does"
_OVER_NATS = "+ NATS to redis-provisioner"
_HEALTHZ = "GET /healthz"
_OVER_HTTP = "+ HTTP, admission: POST /cache/new"
_RATE = "alone: rate limit (one EVALSHA)"
_ECHO = "alone: NATS request-reply to another process"
#: What a create cannot do without, each measured alone: the HTTP request, admission's rate
#: limit, one request-reply, and the worker's provision (the driver, then one append that counts
#: the caps).
_DESIGN_FLOOR = (_HEALTHZ, _RATE, _ECHO, _IN_PROCESS)
_DESIGN_FLOOR_SHORT = ("healthz", "rate", "echo", "provision")


async def _steps_alone(env: Mapping[str, str], calls: int) -> dict[str, list[float]]:
    """Admission's rate limit and a request-reply, each alone, as the gateway makes them."""
    steps: dict[str, list[float]] = {}
    redis = Redis.from_url(env["SPINUP_REDIS_URL"])
    try:
        limiter = RateLimiter(redis)
        holders = itertools.count()
        steps[_RATE] = await _timed(
            calls,
            lambda: limiter.spend(f"bench-breakdown:{next(holders)}", 1_000_000),
        )
    finally:
        await redis.aclose()
    async with echo_responder(env["SPINUP_NATS_URL"]) as (subject, _):
        client = await nats.connect(env["SPINUP_NATS_URL"], name="bench-breakdown")
        try:
            steps[_ECHO] = await _timed(calls, lambda: client.request(subject, b"ping", timeout=5))
        finally:
            await client.close()
    return steps


async def cpu_per_create(url: str, processes: Mapping[str, int], calls: int) -> list[str]:
    """CPU milliseconds each process spent per ``POST /cache/new``, made one at a time."""
    meter = CpuMeter(processes)
    async with aiohttp.ClientSession(url) as http:
        meter.start()
        for index in range(calls):
            async with http.post("/cache/new", headers=caller(index)) as response:
                response.raise_for_status()
        spent = meter.per_call(calls)
    spent.pop(LOAD_GENERATOR, None)
    total = sum(spent.values())
    lines = [
        f"  {name:<24} {ms:6.2f} ms"
        for name, ms in spent.items()
        if ms >= 0.05  # noqa: PLR2004  (below a twentieth of a millisecond: idle)
    ]
    lines.append(f"  {'all of the stack':<24} {total:6.2f} ms")
    rate = cpu_bound_per_s(total) or float("inf")
    lines.append(
        f"  at this cost {cores()} cores make {rate:.0f} creates/s (load shares some of it)"
    )
    return [f"CPU per POST /cache/new (n={calls}, one at a time):", *lines]


def main() -> None:
    """Start a throwaway stack, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per layer")
    args = parser.parse_args()
    with bench_stack(durable=False, name="breakdown") as stack:
        processes = stack_processes(stack)
        lines = uvloop.run(breakdown(stack.gateway_url, stack.env(), args.calls))
        lines += uvloop.run(cpu_per_create(stack.gateway_url, processes, args.calls))
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
