"""Latency of RedisDriver create/delete against a throwaway customer Redis.

    .venv/bin/python bench/redis_driver.py [--rounds 100] [--users 1000]

Starts its own ``customer-redis`` (devstack config, free port, ``.spinup/redis-bench``), measures
sequential creates and deletes, a burst of concurrent deletes, and what one ``ACL SAVE`` would
cost with ``--users`` users (why users are not saved, ADR 0045), then stops the server.

``--keys 100000,1000000``: instead, what deleting caches costs while other tenants hold that
many keys (100 per tenant): a delete as it is now (the user, then the tenant named for the next
pass), one ``unlink_deleted`` pass for 100 deleted caches, and a delete as it was before
2026-12-07 (a SCAN of the keyspace for its prefix, each time), a usage page of 500 and of
10,000 of those tenants, and a whole usage sweep of them in pages of 500 (one census of the
keyspace for the sweep, ADR 0060), in wall time, the server's CPU (``INFO cpu``) and, for the
usage, the CPU of this process, which stands in for the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path

import redis.asyncio as aioredis

from bench.measure import summary
from devstack import customer_redis
from devstack.profile import Profile, Secrets
from redis_provisioner.driver import DELETED_TENANTS_KEY, RedisDriver, key_prefix
from shared.contracts.kinds import RedisLimits
from shared.lifecycle import USAGE_BATCH
from shared.naming import tenant_name

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMITS = RedisLimits(memory_mb=10)
#: The id the backend probe asks about (``shared.worker``): no resource has it.
_NOBODY = uuid.UUID(int=0)


async def measure(url: str, port: int, rounds: int, users: int) -> None:
    """Run every measurement against the server at ``url`` and print the results."""
    driver = await RedisDriver.connect(url, public_host="127.0.0.1", public_port=port, pool_size=8)
    admin = aioredis.Redis.from_url(url)
    try:
        ids = [uuid.uuid4() for _ in range(rounds)]
        creates: list[float] = []
        for rid in ids:
            began = time.perf_counter()
            await driver.create(rid, LIMITS)
            creates.append(time.perf_counter() - began)
        print(summary("create (empty server)", creates))  # noqa: T201
        deletes: list[float] = []
        for rid in ids:
            began = time.perf_counter()
            await driver.delete(rid)
            deletes.append(time.perf_counter() - began)
        print(summary("delete, one at a time", deletes))  # noqa: T201

        crowd = [uuid.uuid4() for _ in range(users)]
        for rid in crowd:
            await driver.create(rid, LIMITS)
        began = time.perf_counter()
        await admin.execute_command("ACL", "SAVE")  # type: ignore[no-untyped-call]
        saved_ms = 1000 * (time.perf_counter() - began)
        print(f"{f'ACL SAVE with {users} users':<34} {saved_ms:.2f} ms")  # noqa: T201
        loaded: list[float] = []
        extra = [uuid.uuid4() for _ in range(rounds)]
        for rid in extra:
            began = time.perf_counter()
            await driver.create(rid, LIMITS)
            loaded.append(time.perf_counter() - began)
        print(summary(f"create ({users} users present)", loaded))  # noqa: T201
        began = time.perf_counter()
        await asyncio.gather(*(driver.delete(rid) for rid in extra))
        burst = time.perf_counter() - began
        print(f"{str(rounds) + ' deletes at once':<34} {1000 * burst:.1f} ms in all")  # noqa: T201
        for rid in crowd:
            await driver.delete(rid)
    finally:
        await admin.aclose()
        await driver.close()


_KEYS_PER_TENANT = 100
_DELETED_PER_PASS = 100
#: Usage pages timed: the lifecycle's default, and what a Redis page may hold.
_USAGE_PAGES = (500, 10_000)


async def _server_cpu_s(admin: aioredis.Redis) -> float:
    cpu = await admin.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def _timed(admin: aioredis.Redis, work: Awaitable[object]) -> tuple[float, float, float]:
    """Wall time, the server's CPU and this process's CPU, in ms, of ``work``."""
    cpu, client, wall = await _server_cpu_s(admin), time.process_time(), time.perf_counter()
    await work
    wall, client = time.perf_counter() - wall, time.process_time() - client
    return 1000 * wall, 1000 * (await _server_cpu_s(admin) - cpu), 1000 * client


async def _scan_per_delete(driver: RedisDriver, admin: aioredis.Redis, rid: uuid.UUID) -> None:
    """A delete as it was before 2026-12-07: the user, then a SCAN of the keyspace for its keys."""
    await driver.delete(rid)
    await admin.srem(DELETED_TENANTS_KEY, tenant_name(rid))
    doomed = [key async for key in admin.scan_iter(match=f"{key_prefix(rid)}*", count=1000)]
    if doomed:
        await admin.unlink(*doomed)


async def _tenants_with_keys(
    driver: RedisDriver, admin: aioredis.Redis, count: int
) -> list[uuid.UUID]:
    made = [uuid.uuid4() for _ in range(count)]
    for rid in made:
        await driver.create(rid, LIMITS)
        async with admin.pipeline(transaction=False) as pipe:
            for index in range(_KEYS_PER_TENANT):
                pipe.set(f"{key_prefix(rid)}{index}", b"v")
            await pipe.execute()
    return made


async def _sweep(driver: RedisDriver, tenants: list[uuid.UUID]) -> None:
    """Every tenant's usage, a page of ``USAGE_BATCH`` at a time, as one sweep asks it."""
    sweep_id = uuid.uuid4()
    for start in range(0, len(tenants), USAGE_BATCH):
        await driver.usage(tenants[start : start + USAGE_BATCH], sweep_id=sweep_id)


async def measure_keyspace(url: str, port: int, points: list[int]) -> None:
    """Deletes against a keyspace of each size in ``points`` (other tenants' keys)."""
    driver = await RedisDriver.connect(url, public_host="127.0.0.1", public_port=port, pool_size=8)
    admin = aioredis.Redis.from_url(url)
    try:
        held: list[uuid.UUID] = []
        for point in points:
            if point > len(held) * _KEYS_PER_TENANT:
                missing = point // _KEYS_PER_TENANT - len(held)
                held += await _tenants_with_keys(driver, admin, missing)
            print(f"{len(held) * _KEYS_PER_TENANT:,} keys held by other tenants:")  # noqa: T201
            doomed = await _tenants_with_keys(driver, admin, _DELETED_PER_PASS + 1)
            wall, cpu, _ = await _timed(admin, driver.delete(doomed[0]))
            print(f"  a delete now:              {wall:8.2f} ms, server {cpu:8.2f} ms")  # noqa: T201
            for rid in doomed[1:]:
                await driver.delete(rid)
            wall, cpu, _ = await _timed(admin, driver.unlink_deleted())
            print(  # noqa: T201
                f"  one pass for {len(doomed)} deletes: {wall:8.1f} ms, server {cpu:8.1f} ms"
            )
            before = (await _tenants_with_keys(driver, admin, 1))[0]
            wall, cpu, _ = await _timed(admin, _scan_per_delete(driver, admin, before))
            print(f"  a delete before:           {wall:8.1f} ms, server {cpu:8.1f} ms")  # noqa: T201
            for page in _USAGE_PAGES:
                wall, cpu, client = await _timed(admin, driver.usage(held[:page]))
                print(  # noqa: T201
                    f"  a usage page of {min(page, len(held)):>6,}:  {wall:8.1f} ms,"
                    f" server {cpu:8.1f} ms, worker {client:8.1f} ms"
                )
            wall, cpu, _ = await _timed(admin, driver.exists(_NOBODY))
            print(  # noqa: T201
                f"  a backend probe as before (exists of an id nobody has): {wall:8.1f} ms,"
                f" server {cpu:8.1f} ms"
            )
            wall, cpu, _ = await _timed(admin, driver.capacity())
            print(  # noqa: T201
                f"  a backend probe now (capacity):                     {wall:8.1f} ms,"
                f" server {cpu:8.1f} ms"
            )
            wall, cpu, client = await _timed(admin, _sweep(driver, held))
            print(  # noqa: T201
                f"  a sweep of {len(held):>6,} in pages of {USAGE_BATCH}: {wall:8.1f} ms,"
                f" server {cpu:8.1f} ms, worker {client:8.1f} ms"
            )
    finally:
        await admin.aclose()
        await driver.close()


def main() -> None:
    """Start a throwaway customer Redis, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--keys", help="keyspace sizes for deletes, comma-separated")
    args = parser.parse_args()
    profile = Profile.test(REPO_ROOT, name="redis-bench")
    shutil.rmtree(profile.directory, ignore_errors=True)
    for path in (profile.logs_dir, profile.run_dir, profile.data_dir):
        path.mkdir(parents=True, exist_ok=True)
    secrets = Secrets()
    server = customer_redis.make_server(profile, secrets)
    server.init()
    server.start()
    try:
        server.wait_ready()
        env = customer_redis.worker_env(profile, secrets)
        url, port = env["SPINUP_CUSTOMER_REDIS_URL"], profile.ports.customer_redis
        if args.keys:
            points = sorted(int(point) for point in args.keys.split(","))
            asyncio.run(measure_keyspace(url, port, points))
        else:
            asyncio.run(measure(url, port, args.rounds, args.users))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
