"""``POST /db/new`` one at a time while the workers' usage sweeps measure thousands of tenants.

    .venv/bin/python -m bench.sweep_effect [--tenants 1000] [--seconds 60] [--rounds 2] [--set N=v]

The reaper asks every kind's worker to measure each live resource of its kind, once a minute in
production. On one throwaway stack (``.spinup/sweep``, configured as ``make bench``'s but sweeping
every ``SWEEP_EVERY_S``), this makes ``--tenants`` resources of each kind a sweep measures, then
probes ``POST /db/new`` every 0.2 s for ``--seconds``, a few sweeps' worth. With ``--set`` every
round measures A (as the stack runs) and B (the workers, and each ``--restart``, restarted with
the settings),
alternating which goes first, and prints the medians of p50, p99 and max (docs/adr/0044).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import uvloop

from bench.__main__ import bench_stack
from bench.cpu import stack_processes, until_quiet
from bench.harness import (
    NEW_PATH,
    POOL_FILL_TIMEOUT_S,
    caller,
    gateway_connector,
    interleaved,
    medians_of,
    paced,
)
from bench.pg_pool import wait_for_pool
from devstack.profile import TEST_OVERRIDES
from shared.contracts.kinds import ResourceKind

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.stack import Stack

#: How often the stack's reaper starts a usage sweep: a few sweeps fall in each measurement.
SWEEP_EVERY_S = 15.0
#: The kinds whose usage a sweep measures, and the workers that measure them.
MEASURED = {
    ResourceKind.POSTGRES: "pg-provisioner",
    ResourceKind.REDIS: "redis-provisioner",
    ResourceKind.MONGO: "mongo-provisioner",
    ResourceKind.NATS: "queue-provisioner",
    ResourceKind.S3: "storage-provisioner",
}
#: The stack's warm pool: the test profile's, as ``make bench``'s reaper measurement has it.
POOL_SIZE = int(TEST_OVERRIDES["SPINUP_PG_POOL_SIZE"])
_QUIET_CORES = 0.15
_SETTLE_S = 60.0
_MAKERS = 16


async def make_tenants(url: str, count: int) -> dict[ResourceKind, int]:
    """``count`` resources of each measured kind, from as many client networks as it takes.

    Returns how many of each kind the gateway answered 201 for; any other answer raises.
    """
    made = dict.fromkeys(MEASURED, 0)
    async with aiohttp.ClientSession(url, connector=gateway_connector(_MAKERS)) as http:

        async def maker(kind: ResourceKind, indexes: Iterator[int]) -> None:
            path = NEW_PATH[kind]
            for index in indexes:
                async with http.post(path, headers=caller(index)) as response:
                    if response.status != 201:  # noqa: PLR2004
                        body = await response.read()
                        msg = f"POST {path} answered {response.status}: {body[:300]!r}"
                        raise RuntimeError(msg)
                made[kind] += 1

        for kind in MEASURED:
            # One iterator shared by the makers: each index is made once.
            indexes = iter(range(count))
            await asyncio.gather(*(maker(kind, indexes) for _ in range(_MAKERS)))
            print(f"[sweep] {made[kind]} x {kind.value}", file=sys.stderr)  # noqa: T201
    return made


async def probe(
    stack: Stack,
    platform: asyncpg.Pool,
    seconds: float,
    *,
    pool_size: int = POOL_SIZE,
    settle_s: float = _SETTLE_S,
) -> dict[str, Any]:
    """``POST /db/new`` every 0.2 s for ``seconds``, once the warm pool is full and all quiet."""
    await wait_for_pool(platform, pool_size, within_s=POOL_FILL_TIMEOUT_S)
    await until_quiet(stack_processes(stack), below_cores=_QUIET_CORES, within_s=settle_s)
    path = NEW_PATH[ResourceKind.POSTGRES]
    async with aiohttp.ClientSession(stack.gateway_url, connector=gateway_connector(1)) as http:

        async def create() -> None:
            async with http.post(path) as response:
                body = await response.read()
                if response.status != 201:  # noqa: PLR2004
                    msg = f"POST {path} answered {response.status}: {body[:300]!r}"
                    raise RuntimeError(msg)

        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        measured = await paced(
            f"POST {path} (sweeps)", create, until=lambda _: loop.time() >= until
        )
    return {
        "calls": measured.calls,
        "errors": measured.errors,
        "p50_ms": round(measured.ms(0.5), 2),
        "p99_ms": round(measured.ms(0.99), 2),
        "max_ms": round(measured.ms(1.0), 2),
    }


async def _run(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    settings = dict(item.split("=", 1) for item in args.set)
    await make_tenants(stack.gateway_url, args.tenants)
    platform = await asyncpg.create_pool(stack.env()["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2)
    try:
        rounds = await interleaved(
            stack,
            restart=[*MEASURED.values(), *args.restart],
            settings=settings,
            rounds=args.rounds,
            measure=lambda: probe(stack, platform, args.seconds),
            label="sweep",
        )
    finally:
        await platform.close()
    return {
        "set": settings,
        "tenants_per_kind": args.tenants,
        "seconds": args.seconds,
        "sweep_every_s": SWEEP_EVERY_S,
        "rounds": rounds,
        "medians": medians_of(rounds, ("p50_ms", "p99_ms", "max_ms")),
    }


def main() -> None:
    """Start a throwaway stack, measure A (and B), print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000, help="resources of each kind")
    parser.add_argument("--seconds", type=float, default=60.0, help="probing, per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="NAME=value for B")
    parser.add_argument(
        "--restart", action="append", default=[], help="a service to restart too (the reaper)"
    )
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    stack = bench_stack(durable=False, name="sweep")
    stack.service_env_overrides["SPINUP_REAPER_USAGE_INTERVAL_S"] = str(SWEEP_EVERY_S)
    with stack:
        result = uvloop.run(_run(stack, args))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    for variant, medians in result["medians"].items():
        print(f"{variant}: {json.dumps(medians)}")  # noqa: T201


if __name__ == "__main__":
    main()
