"""Latency of MongoDriver create/delete against a throwaway SecantusDB.

    .venv/bin/python bench/mongo_driver.py [--rounds 30] [--usage]

Starts its own ``mongo`` server (devstack config, free port, ``.spinup/mongo-bench``), measures
sequential creates, deletes of empty tenants, and deletes of tenants that wrote a document and
hold an open connection (so ``dropDatabase`` has files to remove and ``killOp`` has work), then
stops the server.

``--usage``: instead, what the usage sweep costs the server (ADR 0061): one tenant's measure at
10,000 and 100,000 documents, and three sweeps in a row of 20 tenants of 10,000 documents, each
with the server's CPU and how long another tenant's ``find_one`` waited meanwhile. The driver
remembers its measures with ``settle_s=0``, so the steady state shows at the second sweep.
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

from bench.cpu import CpuMeter
from bench.measure import summary
from devstack import mongo
from devstack.profile import Profile, Secrets
from mongo_provisioner.driver import MongoDriver
from shared.contracts.kinds import MongoCredentials, MongoLimits
from shared.usage_memo import UsageMemo

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


_DOCUMENT = {"body": "x" * 400}


async def _fill(credentials: MongoCredentials, documents: int) -> None:
    tenant: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(credentials.connection_url)
    try:
        for _ in range(documents // 1000):
            await tenant[credentials.database].items.insert_many(
                [dict(_DOCUMENT) for _ in range(1000)]
            )
    finally:
        await tenant.close()


async def _while_probing(
    probed: MongoCredentials,
    pid: int,
    work: Any,  # noqa: ANN401 (any awaitable)
) -> tuple[float, float, float]:
    """Wall time and server CPU of ``work`` (ms), and the longest ``find_one`` of ``probed``."""
    other: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(probed.connection_url)
    waits: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            began = time.perf_counter()
            await other[probed.database].x.find_one({})
            waits.append(1000 * (time.perf_counter() - began))
            await asyncio.sleep(0.01)

    prober = asyncio.create_task(probe())
    meter = CpuMeter({"server": pid})
    meter.start()
    wall = time.perf_counter()
    await work
    wall, cpu = 1000 * (time.perf_counter() - wall), meter.per_call(1)["server"]
    done.set()
    await prober
    await other.close()
    return wall, cpu, max(waits)


async def measure_usage(url: str, host: str, port: int, pid: int) -> None:
    """What a usage measure and a sweep cost the server, and another tenant's wait."""
    driver = MongoDriver(
        AsyncMongoClient(url), public_host=host, public_port=port, measures=UsageMemo(settle_s=0)
    )
    try:
        probed = await driver.create(uuid.uuid4(), LIMITS)
        big = uuid.uuid4()
        credentials = await driver.create(big, MongoLimits(storage_mb=1000))
        held = 0
        for documents in (10_000, 100_000):
            await _fill(credentials, documents - held)
            held = documents
            # A sweep of its own each time: the tenant just wrote, so it is measured.
            wall, cpu, waited = await _while_probing(probed, pid, driver.usage([big]))
            print(  # noqa: T201
                f"one tenant of {documents:,} documents: a measure {wall:.0f} ms, the server"
                f" {cpu:.0f} ms; another tenant's find_one waited up to {waited:.1f} ms"
            )
        await driver.delete(big)
        tenants = [uuid.uuid4() for _ in range(20)]
        for rid in tenants:
            await _fill(await driver.create(rid, MongoLimits(storage_mb=1000)), 10_000)
        for sweep in (1, 2, 3):
            wall, cpu, waited = await _while_probing(probed, pid, driver.usage(tenants))
            print(  # noqa: T201
                f"sweep {sweep} of 20 tenants of 10,000 documents: {wall:.0f} ms, the server"
                f" {cpu:.0f} ms; another tenant's find_one waited up to {waited:.1f} ms"
            )
    finally:
        await driver.close()


def main() -> None:
    """Start a throwaway SecantusDB, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--usage", action="store_true", help="what usage sweeps cost instead")
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
        url, host, port = (
            env["SPINUP_MONGO_ADMIN_URL"],
            env["SPINUP_MONGO_HOST"],
            profile.ports.mongo,
        )
        if args.usage and server.pid is not None:
            asyncio.run(measure_usage(url, host, port, server.pid))
        else:
            asyncio.run(measure(url, host, port, args.rounds))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
