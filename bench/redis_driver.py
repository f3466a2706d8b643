"""Latency of RedisDriver create/delete against a throwaway customer Redis.

    .venv/bin/python bench/redis_driver.py [--rounds 100] [--users 1000]

Starts its own ``customer-redis`` (devstack config, free port, ``.spinup/redis-bench``), measures
sequential creates and deletes, a burst of concurrent deletes, and what one ``ACL SAVE`` would
cost with ``--users`` users (why users are not saved, ADR 0045), then stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from bench.measure import summary
from devstack import customer_redis
from devstack.profile import Profile, Secrets
from redis_provisioner.driver import RedisDriver
from shared.contracts.kinds import RedisLimits

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMITS = RedisLimits(memory_mb=10)


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


def main() -> None:
    """Start a throwaway customer Redis, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--users", type=int, default=1000)
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
        asyncio.run(
            measure(
                env["SPINUP_CUSTOMER_REDIS_URL"],
                profile.ports.customer_redis,
                args.rounds,
                args.users,
            )
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
