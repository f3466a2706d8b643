"""``POST /db/new`` at a steady pace, one at a time: how many found the warm pool empty.

    .venv/bin/python -m bench.pool_trickle [--rate 10] [--calls 300] [--rounds 3] [--set NAME=v]

A burst is what the warm pool is sized for; a steady trickle is what it sees most of the time.
On one throwaway stack (``.spinup/trickle``, configured as ``make bench``'s, with the production
pool of 16), each round restarts pg-provisioner, waits until its pool is full and the stack is
quiet, then makes ``--calls`` creates, each starting ``1 / --rate`` s after the one before (or
at once, if that one took longer). A create the pool served names its member in its
``ResourceProvisioned``; the others ran ``CREATE DATABASE`` on the request's path. With
``--set`` every round measures A (as the stack runs) and B (with the settings), alternating which
goes first, and prints the medians.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import msgspec
import uvloop

from bench.__main__ import bench_stack
from bench.cpu import stack_processes, until_quiet
from bench.harness import (
    NEW_PATH,
    PG_POOL_SETTING,
    POOL_FILL_TIMEOUT_S,
    Created,
    gateway_connector,
    interleaved,
    medians_of,
    paced,
)
from bench.pg_pool import served_from_pool, wait_for_pool
from shared.contracts.kinds import ResourceKind

if TYPE_CHECKING:
    from devstack.stack import Stack

#: pg-provisioner's own default: the pool production runs with.
POOL_SIZE = 16
_QUIET_CORES = 0.15
_SETTLE_S = 60.0


_created = msgspec.json.Decoder(Created)


async def trickle(
    stack: Stack,
    platform: asyncpg.Pool,
    *,
    rate: float,
    calls: int,
    pool_size: int = POOL_SIZE,
    settle_s: float = _SETTLE_S,
) -> dict[str, Any]:
    """``calls`` paced creates once ``pool_size`` members are ready: latency, how many went cold."""
    await wait_for_pool(platform, pool_size, within_s=POOL_FILL_TIMEOUT_S)
    await until_quiet(stack_processes(stack), below_cores=_QUIET_CORES, within_s=settle_s)
    ids: list[str] = []
    async with aiohttp.ClientSession(stack.gateway_url, connector=gateway_connector(1)) as http:

        async def create() -> None:
            async with http.post(NEW_PATH[ResourceKind.POSTGRES]) as response:
                body = await response.read()
                if response.status != 201:  # noqa: PLR2004
                    msg = f"POST /db/new answered {response.status}: {body[:300]!r}"
                    raise RuntimeError(msg)
            ids.append(str(_created.decode(body).id))

        measured = await paced(
            "POST /db/new (trickle)", create, until=lambda m: m.calls >= calls, interval_s=1 / rate
        )
    from_pool = len(await served_from_pool(platform, ids))
    return {
        "calls": measured.calls,
        "errors": measured.errors,
        "cold": len(ids) - from_pool,
        "p50_ms": round(measured.ms(0.5), 2),
        "p99_ms": round(measured.ms(0.99), 2),
        "max_ms": round(measured.ms(1.0), 2),
    }


async def _run(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    settings = dict(item.split("=", 1) for item in args.set)
    stack.service_env_overrides[PG_POOL_SETTING] = str(POOL_SIZE)
    platform = await asyncpg.create_pool(stack.env()["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2)
    try:
        rounds = await interleaved(
            stack,
            restart=["pg-provisioner"],
            settings=settings,
            rounds=args.rounds,
            measure=lambda: trickle(stack, platform, rate=args.rate, calls=args.calls),
            label="trickle",
        )
    finally:
        await platform.close()
    return {
        "set": settings,
        "rate": args.rate,
        "calls": args.calls,
        "rounds": rounds,
        "medians": medians_of(rounds, ("cold", "p50_ms", "p99_ms", "max_ms")),
    }


def main() -> None:
    """Start a throwaway stack, measure A (and B), print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="creates started per second")
    parser.add_argument("--calls", type=int, default=300, help="creates per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="NAME=value for B")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    with bench_stack(durable=False, name="trickle") as stack:
        result = uvloop.run(_run(stack, args))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    for variant, medians in result["medians"].items():
        print(f"{variant}: {json.dumps(medians)}")  # noqa: T201


if __name__ == "__main__":
    main()
