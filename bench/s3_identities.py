"""What every stored S3 identity costs SeaweedFS, from none to 100,000 (ADR 0019, ADR 0055).

    .venv/bin/python -m bench.s3_identities [--identities 0,20000,100000] [--rounds 40]

On a throwaway test stack (``.spinup/s3-bench``). Identities are written straight into the
credential store (a key each, no actions, no bucket), so 100,000 take seconds; the S3 gateway
holds them after its next full reload, which the driver's watch finds. Then, at each count:

- the gateway's full reload (once a minute): how many queries it made of the credential
  database (its transaction counter), and the CPU of the ``weed`` process and of the platform
  Postgres over the minute up to it;
- the driver's create, rotate and delete, one at a time: each is a bucket and an identity
  change that the filer stores and pushes to the gateway, which copies every identity it holds
  to merge one.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

import asyncpg

from bench import drivers
from bench.cpu import cpu_seconds_by_tree, stack_processes
from bench.measure import summary
from devstack.seaweed import CREDENTIAL_DATABASE, credential_dsn
from devstack.stack import Stack
from shared.contracts.kinds import ResourceKind, S3Limits
from storage_provisioner.driver import S3Driver

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMITS = S3Limits(storage_mb=3)
LOAD_PREFIX = "spinup-bench-load-"
# SeaweedFS 4.48's reload interval, and how long a wait for one may take.
RELOAD_EVERY_S = 60.0
RELOAD_WAIT_S = 150.0
SAMPLE_EVERY_S = 0.2
# Postgres publishes an idle backend's statistics within 10 s (PGSTAT_IDLE_INTERVAL).
PUBLISHED_S = 11.0


async def store_identities(conn: asyncpg.Connection, prefix: str, total: int) -> None:
    """Make the stored identities named ``prefix<n>`` number ``total`` (a key each, no actions).

    Written straight into SeaweedFS's tables: the S3 gateway holds them from its next reload.
    """
    have = await conn.fetchval("SELECT count(*) FROM users WHERE username LIKE $1", prefix + "%")
    names = [f"{prefix}{n}" for n in range(have, total)]
    await conn.execute("INSERT INTO users (username, email) SELECT unnest($1::text[]), ''", names)
    await conn.execute(
        "INSERT INTO credentials (username, access_key, secret_key)"
        " SELECT n, 'LOAD' || md5(n), md5(n) FROM unnest($1::text[]) n",
        names,
    )


async def remove_identities(conn: asyncpg.Connection, prefix: str) -> None:
    """Remove what ``store_identities`` stored."""
    await conn.execute("DELETE FROM credentials WHERE username LIKE $1", prefix + "%")
    await conn.execute("DELETE FROM users WHERE username LIKE $1", prefix + "%")


async def _next_reload(driver: S3Driver) -> None:
    seen = driver.reloads_found
    deadline = time.monotonic() + RELOAD_WAIT_S
    while driver.reloads_found == seen:
        if time.monotonic() > deadline:
            msg = "the S3 gateway did not reload its identities"
            raise RuntimeError(msg)
        await asyncio.sleep(SAMPLE_EVERY_S)


async def _one_reload(stack: Stack, conn: asyncpg.Connection, driver: S3Driver) -> str:
    """The next reload: its queries of the credential database, and CPU up to its landing."""
    # From the end of one reload the next is a minute away. Postgres publishes a backend's
    # counts once it is idle, up to seconds late: read the counter once the last reload's are in.
    await _next_reload(driver)
    await asyncio.sleep(PUBLISHED_S)
    processes = stack_processes(stack)
    roots = {name: processes[name] for name in ("seaweed", "platform-pg")}
    cpu_before = cpu_seconds_by_tree(roots)
    began = time.monotonic()
    query = "SELECT xact_commit FROM pg_stat_database WHERE datname = $1"
    first = await conn.fetchval(query, CREDENTIAL_DATABASE)
    await _next_reload(driver)
    minute = time.monotonic() - began
    cpu_after = cpu_seconds_by_tree(roots)
    # Nothing else queries the credential database while the bench waits.
    await asyncio.sleep(PUBLISHED_S)
    queries = await conn.fetchval(query, CREDENTIAL_DATABASE) - first
    cpu = {name: cpu_after[name] - cpu_before[name] for name in roots}
    return (
        f"reload: {queries} queries of the credential database; over the {minute:.0f} s till "
        f"it landed, weed {cpu['seaweed']:.2f} s CPU, platform Postgres "
        f"{cpu['platform-pg']:.2f} s CPU"
    )


async def _driver_calls(driver: S3Driver, rounds: int) -> list[str]:
    ids = [uuid.uuid4() for _ in range(rounds)]
    lines = []
    for label, call in (
        ("create", lambda rid: driver.create(rid, LIMITS)),
        ("rotate", lambda rid: driver.rotate(rid, LIMITS)),
        ("delete", driver.delete),
    ):
        spent = []
        for rid in ids:
            began = time.perf_counter()
            await call(rid)
            spent.append(time.perf_counter() - began)
        lines.append(summary(f"  driver {label}, one at a time", spent))
    return lines


async def measure(stack: Stack, points: list[int], rounds: int) -> None:
    """Every measurement at each identity count, printed as it comes."""
    async with drivers.connected(ResourceKind.S3, stack.env()) as connected:
        if not isinstance(connected, S3Driver):
            raise TypeError(type(connected))
        await _measure(stack, connected, points, rounds)


async def _measure(stack: Stack, driver: S3Driver, points: list[int], rounds: int) -> None:
    watch = asyncio.create_task(driver.watch_reloads(SAMPLE_EVERY_S))
    conn = await asyncpg.connect(credential_dsn(stack.profile, stack.secrets))
    try:
        for total in points:
            await store_identities(conn, LOAD_PREFIX, total)
            await _next_reload(driver)  # the gateway holds them from here
            print(f"{total} stored identities")  # noqa: T201
            print("  " + await _one_reload(stack, conn, driver))  # noqa: T201
            for line in await _driver_calls(driver, rounds):
                print(line)  # noqa: T201
    finally:
        watch.cancel()
        await remove_identities(conn, LOAD_PREFIX)
        await conn.close()


def main() -> None:
    """Start the stack, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--identities", default="0,20000,100000")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    points = [int(p) for p in args.identities.split(",")]
    with Stack.for_tests(REPO_ROOT, name="s3-bench") as stack:
        asyncio.run(measure(stack, points, args.rounds))


if __name__ == "__main__":
    main()
