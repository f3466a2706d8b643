"""Latency of MongoDriver create/delete against a throwaway SecantusDB.

    .venv/bin/python bench/mongo_driver.py [--rounds 30]

Starts its own ``mongo`` server (devstack config, free port, ``.spinup/mongo-bench``), measures
sequential creates, deletes of empty tenants, and deletes of tenants that wrote a document and
hold an open connection (so ``dropDatabase`` has files to remove and ``killOp`` has work), then
stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.measure import summary
from devstack import mongo
from devstack.profile import Profile, Secrets
from mongo_provisioner.driver import MongoDriver
from shared.contracts.kinds import MongoLimits

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMITS = MongoLimits(storage_mb=10)


async def timed(samples: list[float], operation: Any) -> Any:  # noqa: ANN401 (any awaitable)
    """Await ``operation`` and append how long it took to ``samples``."""
    began = time.perf_counter()
    result = await operation
    samples.append(time.perf_counter() - began)
    return result


async def measure(url: str, host: str, port: int, rounds: int) -> None:
    """Run every measurement against the server at ``url`` and print the results."""
    # Tenants connect where the server listens, as the worker tells them to.
    driver = await MongoDriver.connect(url, public_host=host, public_port=port)
    try:
        creates: list[float] = []
        deletes: list[float] = []
        ids = [uuid.uuid4() for _ in range(rounds)]
        for rid in ids:
            await timed(creates, driver.create(rid, LIMITS))
        for rid in ids:
            await timed(deletes, driver.delete(rid))
        print(summary("create", creates))  # noqa: T201
        print(summary("delete (never used)", deletes))  # noqa: T201

        used: list[float] = []
        for _ in range(rounds):
            rid = uuid.uuid4()
            credentials = await driver.create(rid, LIMITS)
            tenant: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(credentials.connection_url)
            await tenant[credentials.database].notes.insert_one({"body": "x"})
            await timed(used, driver.delete(rid))
            await tenant.close()
        print(summary("delete (data + open connection)", used))  # noqa: T201
    finally:
        await driver.close()


def main() -> None:
    """Start a throwaway SecantusDB, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    profile = Profile.test(REPO_ROOT, name="mongo-bench")
    shutil.rmtree(profile.directory, ignore_errors=True)
    for path in (profile.logs_dir, profile.run_dir, profile.data_dir):
        path.mkdir(parents=True, exist_ok=True)
    secrets = Secrets()
    server = mongo.make_server(profile, secrets)
    server.init()
    server.start()
    try:
        server.wait_ready()
        env = mongo.worker_env(profile, secrets)
        asyncio.run(
            measure(
                env["SPINUP_MONGO_ADMIN_URL"],
                env["SPINUP_MONGO_HOST"],
                profile.ports.mongo,
                args.rounds,
            )
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
