"""``/db/new`` from pg-provisioner's warm pool against the same call with the pool off.

    .venv/bin/python bench/pg_pool.py [--requests 300] [--concurrency 16]

Starts a throwaway durable stack (fsync on, ``.spinup/pool-bench``) with a pool of
``--requests`` members, waits until it is full, and sends that many ``POST /db/new`` at
``--concurrency``: every one is served from the pool. Then the same on a stack with the pool off
(``SPINUP_PG_POOL_SIZE=0``), where every call runs ``CREATE DATABASE``, and the raw
``CREATE ROLE`` + ``CREATE DATABASE`` of the driver, one at a time, for the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg
import httpx

from bench.measure import REPO_ROOT, summary, timed_http
from devstack.profile import TEST_OVERRIDES, Ports, Profile
from devstack.stack import Stack
from pg_provisioner.driver import PostgresDriver
from shared.testing.factories import LIMITS

FILL_TIMEOUT_S = 600


def _stack(name: str, pool_size: int) -> Stack:
    overrides = {**TEST_OVERRIDES, "SPINUP_PG_POOL_SIZE": str(pool_size)}
    # Durable (fsync on), unlike the test profile: the numbers are meant for production shape.
    profile = Profile(
        name=name,
        root=REPO_ROOT,
        ports=Ports.free(),
        overrides=overrides,
        wipe=True,
        durable=True,
        roomy_plans=True,
    )
    return Stack(profile)


#: A create the warm pool served: its ``ResourceProvisioned`` names the member (docs/adr/0047).
_POOLED_CREATE = "event_type = 'ResourceProvisioned' AND data->>'pool_member' IS NOT NULL"


async def ready_pool_members(platform: asyncpg.Pool) -> int:
    """Members whose stream ends in ``PoolMemberReady`` and that no create has taken yet."""
    count: int = await platform.fetchval(
        "SELECT count(*) FROM events e WHERE e.stream_id LIKE 'pool-%'"
        " AND e.event_type = 'PoolMemberReady' AND NOT EXISTS (SELECT 1 FROM events later"
        " WHERE later.stream_id = e.stream_id AND later.version > e.version)"
        " AND NOT EXISTS (SELECT 1 FROM events taken WHERE taken.event_type"
        " = 'ResourceProvisioned' AND taken.data->>'pool_member' = e.data->>'member_id')"
    )
    return count


async def pool_members_taken(platform: asyncpg.Pool) -> int:
    """Creates the warm pool served so far (each named its member)."""
    count: int = await platform.fetchval(f"SELECT count(*) FROM events WHERE {_POOLED_CREATE}")
    return count


async def served_from_pool(platform: asyncpg.Pool, resource_ids: list[str]) -> set[str]:
    """Which of ``resource_ids`` the warm pool served.

    The others ran ``CREATE DATABASE`` on their request's path (a cold create).
    """
    rows = await platform.fetch(
        f"SELECT data->>'resource_id' AS id FROM events WHERE {_POOLED_CREATE}"
        " AND data->>'resource_id' = ANY($1::text[])",
        resource_ids,
    )
    return {row["id"] for row in rows}


async def wait_for_pool(platform: asyncpg.Pool, size: int, *, within_s: float) -> float:
    """Wait until ``size`` members are ready; the seconds it took.

    Raises:
        TimeoutError: the pool did not fill within ``within_s``.
    """
    began = time.monotonic()
    while await ready_pool_members(platform) < size:
        if time.monotonic() - began > within_s:
            msg = f"the warm pool did not fill to {size} within {within_s:.0f} s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.25)
    return time.monotonic() - began


async def _burst(url: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    """``requests`` calls of ``POST /db/new`` at ``concurrency``; latencies and wall time."""
    samples: list[float] = []
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def client() -> None:
            for _ in remaining:
                elapsed = await timed_http(lambda: http.post("/db/new"), 201)
                samples.append(elapsed)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return samples, time.perf_counter() - began


def _report(label: str, samples: list[float], wall_s: float) -> None:
    print(f"{summary(label, samples)}  {len(samples) / wall_s:7.1f}/s")  # noqa: T201


async def _warm(stack: Stack, requests: int, concurrency: int) -> None:
    env = stack.env()
    platform = await asyncpg.create_pool(env["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2)
    try:
        filled_s = await wait_for_pool(platform, requests, within_s=FILL_TIMEOUT_S)
        print(f"pool of {requests} filled in {filled_s:.1f} s")  # noqa: T201
        samples, wall = await _burst(stack.gateway_url, requests, concurrency)
        taken = await pool_members_taken(platform)
        _report(f"/db/new from the pool, c={concurrency}", samples, wall)
        print(f"  served from the pool: {taken} of {requests}")  # noqa: T201
    finally:
        await platform.close()


async def _cold(stack: Stack, requests: int, concurrency: int) -> None:
    samples, wall = await _burst(stack.gateway_url, requests, concurrency)
    _report(f"/db/new, pool off, c={concurrency}", samples, wall)
    env = stack.env()
    driver = await PostgresDriver.connect(
        env["SPINUP_CUSTOMER_PG_ADMIN_DSN"],
        public_host=env["SPINUP_CUSTOMER_PG_HOST"],
        public_port=int(env["SPINUP_CUSTOMER_PG_PORT"]),
        pool_size=2,
    )
    try:
        raw: list[float] = []
        for _ in range(min(requests, 50)):
            began = time.perf_counter()
            await driver.create(uuid.uuid4(), LIMITS)
            raw.append(time.perf_counter() - began)
        print(summary("raw driver create (role + database), c=1", raw))  # noqa: T201
    finally:
        await driver.close(drain_timeout=0)


def main() -> None:
    """Measure the warm stack, then the cold one; each stack stops after its part."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    with _stack("pool-bench", args.requests) as stack:
        asyncio.run(_warm(stack, args.requests, args.concurrency))
    if not args.skip_cold:
        with _stack("pool-bench", 0) as stack:
            asyncio.run(_cold(stack, args.requests // 3, args.concurrency))


if __name__ == "__main__":
    main()
