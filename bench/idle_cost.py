"""What a stack spends per minute on tenants nobody is using: the sweeps, reloads and watches.

    .venv/bin/python -m bench.idle_cost [--tenants 1600] [--kinds s3,postgres,...] [--wait 660]
        [--seconds 180] [--name idle] [--cache-keys 0]

On one throwaway stack configured as ``make bench``'s, but with every periodic pass at its
production interval (usage sweeps and reconciles every minute, the reaper's pass every 10 s,
the notifier's every second; ``bench_stack(production_periods=True)``), it reads the CPU each
process spends per minute while nothing is asked of it, makes ``--tenants`` resources of each
kind through the API, waits ``--wait`` seconds (the S3 usage sweep lists a bucket at every sweep
for ten minutes after it first sees it, ADR 0057), and reads the CPU per minute again. The
difference is what those tenants cost at rest, by process. ``--cache-keys N``: each cache's
tenant writes N keys of 100 bytes with its own credentials first (a Redis sweep walks every
key, ADR 0060).

Two checkouts run at once (``git worktree``) measure a change before and after in the same
minutes: give each its own ``--name``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import uvloop

from bench.__main__ import bench_stack
from bench.cpu import LOAD_GENERATOR, CpuMeter, stack_processes
from bench.harness import NEW_PATH, caller, gateway_connector
from bench.measure import measure
from shared.contracts.kinds import ResourceKind

#: The kinds a usage sweep measures, all made by default.
SWEPT = (
    ResourceKind.POSTGRES,
    ResourceKind.REDIS,
    ResourceKind.MONGO,
    ResourceKind.NATS,
    ResourceKind.S3,
    ResourceKind.WEBHOOK,
)
#: Postgres creates are cold (tens of ms each); more at once only queue on the cluster.
_CONCURRENCY = {ResourceKind.POSTGRES: 8}


async def per_minute(processes: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU seconds each of the stack's processes spends per minute over the next ``seconds``."""
    meter = CpuMeter(processes)
    meter.start()
    await asyncio.sleep(seconds)
    spent_ms = meter.per_call(1)
    spent_ms.pop(LOAD_GENERATOR, None)  # this script, asleep
    return {name: round(ms / 1000 * 60 / seconds, 3) for name, ms in spent_ms.items()}


async def make_tenants(
    url: str, kinds: list[ResourceKind], count: int
) -> dict[ResourceKind, list[dict[str, Any]]]:
    """``count`` resources of each of ``kinds``, through the API; what each create answered."""
    made: dict[ResourceKind, list[dict[str, Any]]] = {}
    async with aiohttp.ClientSession(url, connector=gateway_connector(16)) as http:
        for number, kind in enumerate(kinds):
            bodies = made.setdefault(kind, [])

            async def new(
                index: int,
                kind: ResourceKind = kind,
                base: int = number,
                bodies: list[dict[str, Any]] = bodies,
            ) -> None:
                async with http.post(NEW_PATH[kind], headers=caller(base * 100_000 + index)) as r:
                    if r.status != 201:  # noqa: PLR2004
                        msg = f"{NEW_PATH[kind]}: {r.status} {await r.text()}"
                        raise RuntimeError(msg)
                    bodies.append(await r.json())

            outcome = await measure(
                kind.value, new, calls=count, concurrency=_CONCURRENCY.get(kind, 16)
            )
            print(f"made {count} {kind.value}: {outcome.errors} errors", flush=True)  # noqa: T201
    return made


async def fill_caches(caches: list[dict[str, Any]], keys: int) -> None:
    """Each cache's tenant writes ``keys`` keys of 100 bytes under its prefix, as itself."""

    async def fill(index: int) -> None:
        cache = caches[index]
        tenant = aioredis.Redis.from_url(cache["connection_url"])
        try:
            async with tenant.pipeline(transaction=False) as pipe:
                for number in range(keys):
                    pipe.set(f"{cache['credentials']['key_prefix']}{number}", b"x" * 100)
                await pipe.execute()
        finally:
            await tenant.aclose()

    outcome = await measure("fill", fill, calls=len(caches), concurrency=16)
    print(  # noqa: T201
        f"filled {len(caches)} caches, {keys} keys each: {outcome.errors} errors",
        outcome.error_samples,
        flush=True,
    )


def _line(label: str, cpu: dict[str, float]) -> str:
    shown = {name: value for name, value in sorted(cpu.items(), key=lambda i: -i[1]) if value}
    return f"{label}: {sum(cpu.values()):.2f} CPU-s a minute {shown}"


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Measure empty, make the tenants, wait, measure again."""
    kinds = [ResourceKind(kind) for kind in args.kinds.split(",")]
    with bench_stack(durable=False, name=args.name, production_periods=True) as stack:
        processes = stack_processes(stack)
        empty = await per_minute(processes, args.seconds)
        print(_line("empty", empty), flush=True)  # noqa: T201
        began = time.monotonic()
        made = await make_tenants(stack.gateway_url, kinds, args.tenants)
        if args.cache_keys:
            await fill_caches(made.get(ResourceKind.REDIS, []), args.cache_keys)
        await asyncio.sleep(max(0.0, args.wait - (time.monotonic() - began)))
        loaded = await per_minute(processes, args.seconds)
        print(_line(f"{args.tenants} of each", loaded), flush=True)  # noqa: T201
    added = {
        name: round(loaded.get(name, 0.0) - empty.get(name, 0.0), 3) for name in loaded | empty
    }
    print(_line("their cost", added), flush=True)  # noqa: T201
    return {
        "kinds": args.kinds,
        "tenants": args.tenants,
        "cache_keys": args.cache_keys,
        "empty": empty,
        "loaded": loaded,
    }


def main() -> None:
    """Parse arguments and measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1600, help="resources of each kind")
    parser.add_argument("--kinds", default=",".join(kind.value for kind in SWEPT))
    parser.add_argument("--wait", type=float, default=660.0, help="from the first create")
    parser.add_argument("--seconds", type=float, default=180.0, help="each measurement")
    parser.add_argument("--name", default="idle", help="the stack's name (.spinup/<name>)")
    parser.add_argument("--cache-keys", type=int, default=0, help="keys each cache's tenant writes")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    figures = uvloop.run(run(args))
    if args.json:
        with open(args.json, "w") as out:  # noqa: PTH123
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
