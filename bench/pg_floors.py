"""The Postgres floors of docs/floors.md that only a pgbench script or psql timing reproduced.

    .venv/bin/python -m bench.pg_floors [--cycles 200] [--quick] [--fsync]

On a throwaway stack (``.spinup/pg-floors``, configured as ``make bench``'s: fsync off unless
``--fsync``, which the doc's figures were taken with), each statement sent on its own, outside
any transaction, as ``CREATE DATABASE`` needs:

- the event-log ``INSERT ... RETURNING`` on the platform cluster, one at a time, then from 32
  tasks sharing a pool of 10, into a table of the run's own shaped like ``events``;
- ``CREATE ROLE`` + ``CREATE DATABASE`` (creates only) with ``STRATEGY wal_log`` and
  ``file_copy`` at c = 1 and 8: ``file_copy`` once on a freshly checkpointed cluster, once right
  after a burst of ``wal_log`` creates, with the checkpoints each create requested;
- ``--cycles`` create + drop cycles (role, database, drop both), and how the first tenth of them
  compares with the last;
- ``CREATE ROLE ... PASSWORD`` with a password the server hashes, with a pre-hashed SCRAM
  verifier, and with no password;
- a tenant's first connection to its database after ``CREATE DATABASE``, and the next one.

Why a module of its own: these are floors of the design (ADR 0010, docs/scaling.md), and one
``make bench`` row per statement would mix them into the end-to-end tables. Every name it makes
starts with ``floor_<run>_``; it drops only names of that shape, and drops all of them at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import asyncpg
import uvloop

from bench.__main__ import bench_stack
from bench.harness import PG_POOL_SETTING, POOL_FILL_TIMEOUT_S, Progress
from bench.measure import Measurement, measure, percentile, summary
from bench.pg_pool import wait_for_pool
from pg_provisioner.driver import scram_sha256_verifier
from shared.postgres.pool import open_pool


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How much of each floor one run measures.

    Attributes:
        inserts: event-log appends made one at a time.
        insert_burst: appends made by ``INSERT_TASKS`` tasks over a pool of ``INSERT_POOL``.
        creates: ``CREATE ROLE`` + ``CREATE DATABASE`` per strategy and concurrency level.
        cycles: create + drop cycles, one at a time (the doc's drift is over 200).
        roles: ``CREATE ROLE`` statements per password variant.
        connections: databases whose first and second connection are timed.
        max_seconds: no new call of one measurement starts after this long.
    """

    inserts: int
    insert_burst: int
    creates: int
    cycles: int
    roles: int
    connections: int
    max_seconds: float


FULL = Sizes(
    inserts=2000,
    insert_burst=50_000,
    creates=50,
    cycles=200,
    roles=200,
    connections=50,
    max_seconds=20.0,
)
QUICK = Sizes(
    inserts=20, insert_burst=200, creates=3, cycles=4, roles=5, connections=3, max_seconds=10.0
)

#: The doc's event-log rate: a pool of 10 connections shared by 32 tasks.
INSERT_POOL, INSERT_TASKS = 10, 32
#: The concurrency levels of the creates (the doc: flat from c = 1 to c = 8).
CREATE_LEVELS = (1, 8)
WIDTH = 52
_NAME_RE = re.compile(r"^floor_[0-9a-f]{8}_[0-9a-z_]+$")


@dataclass(frozen=True, kw_only=True)
class Floor:
    """One row of the output: what was timed, and the figures docs/floors.md gives for it.

    Attributes:
        label: the statement(s) and how they were sent.
        samples_s: seconds each call took, in the order they were made.
        per_s: calls per second of wall time, where the doc gives a rate.
        p90: also print the p90 (the doc's figure for ``file_copy`` after a burst).
        note: a count beside the timings (checkpoints requested per create).
    """

    label: str
    samples_s: list[float]
    per_s: float | None = None
    p90: bool = False
    note: str = ""

    def line(self) -> str:
        """Median and p99 in ms (``bench.measure.summary``), then p90, the rate, the note."""
        text = summary(self.label, self.samples_s, width=WIDTH)
        if self.p90:
            text += f"  p90 {1000 * percentile(sorted(self.samples_s), 0.9):7.2f} ms"
        if self.per_s is not None:
            text += f"  {self.per_s:8.1f}/s"
        return f"{text}  ({self.note})" if self.note else text


class Names:
    """Names unique to one run (``floor_<8 hex>_<label><n>``), and the guard before a drop."""

    def __init__(self) -> None:
        self.prefix = f"floor_{uuid.uuid4().hex[:8]}_"
        self._made = 0

    def new(self, label: str) -> str:
        """A name no earlier run or call made: valid unquoted, and ``sameuser`` in pg_hba."""
        self._made += 1
        return f"{self.prefix}{label}{self._made}"

    def guard(self, name: str) -> str:
        """``name`` if this run made it; refuse to drop anything else.

        Raises:
            ValueError: ``name`` is not one of this run's.
        """
        if not name.startswith(self.prefix) or not _NAME_RE.fullmatch(name):
            msg = f"refusing to drop {name!r}: not made by this run of bench.pg_floors"
            raise ValueError(msg)
        return name


def _passed(measured: Measurement) -> Measurement:
    """``measured``, once every call succeeded: a floor with failed calls in it means nothing."""
    if measured.errors:
        msg = f"{measured.name}: {measured.errors} calls failed: {measured.error_samples}"
        raise RuntimeError(msg)
    return measured


async def settings(dsn: str, cluster: str) -> str:
    """One line: the cluster's version and the settings the doc's figures depend on."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('server_version') AS version,"
            " current_setting('fsync') AS fsync,"
            " current_setting('synchronous_commit') AS sync,"
            " current_setting('shared_buffers') AS buffers,"
            " pg_size_pretty(pg_database_size('template1')) AS template1"
        )
    finally:
        await conn.close()
    if row is None:  # pragma: no cover  (a SELECT without FROM returns one row)
        msg = f"{cluster}: no settings"
        raise RuntimeError(msg)
    return (
        f"{cluster}: PostgreSQL {row['version']}, fsync {row['fsync']}, synchronous_commit"
        f" {row['sync']}, shared_buffers {row['buffers']}, template1 {row['template1']}"
    )


async def event_log_inserts(dsn: str, names: Names, sizes: Sizes) -> list[Floor]:
    """``INSERT ... RETURNING`` of one event, as ``EventStore`` appends, alone and from 32 tasks.

    Into a table of the run's own with the log's columns, defaults and indexes: the stack's own
    log stays as the platform wrote it (no relay, projection or reaper sees these rows).
    """
    table = names.new("events")
    pool = await open_pool(dsn, size=INSERT_POOL)
    try:
        await pool.execute(f"CREATE TABLE {table} (LIKE events INCLUDING ALL)")
        statement = (
            f"INSERT INTO {table} (stream_id, version, event_id, event_type, data, command_id,"
            " correlation_id) VALUES ($1, 1, $2, 'FloorMeasured', '{}'::jsonb, $3, 'pg-floors')"
            " RETURNING position"
        )
        streams = iter(range(sizes.inserts + sizes.insert_burst))

        async def insert(_: int) -> None:
            await pool.fetchval(statement, f"floor-{next(streams)}", uuid.uuid4(), uuid.uuid4())

        alone = _passed(await measure("insert", insert, calls=sizes.inserts, concurrency=1))
        burst = _passed(
            await measure(
                "insert",
                insert,
                calls=sizes.insert_burst,
                concurrency=INSERT_TASKS,
                max_seconds=sizes.max_seconds,
            )
        )
    finally:
        try:
            await pool.execute(f"DROP TABLE IF EXISTS {names.guard(table)}")
        finally:
            await pool.close()
    return [
        Floor(label="event-log INSERT ... RETURNING, one at a time", samples_s=alone.latencies_s),
        Floor(
            label=f"  the same, {INSERT_TASKS} tasks over a pool of {INSERT_POOL}",
            samples_s=burst.latencies_s,
            per_s=burst.per_second,
        ),
    ]


class Customer:
    """The customer cluster as its admin: the run's DDL, timed, and the drops after it."""

    def __init__(self, admin: asyncpg.Pool, names: Names, sizes: Sizes) -> None:
        self.admin = admin
        self.names = names
        self.sizes = sizes
        # Plain text on purpose: the server hashes it (SCRAM, 4,096 rounds) as the doc's script
        # made it do. Random, so none of the run's roles opens with a guessable password.
        self.password = uuid.uuid4().hex

    async def create(self, name: str, strategy: str) -> None:
        """The doc's create: a login role with a password, then its database."""
        await self.admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{self.password}'")
        await self.admin.execute(f"CREATE DATABASE {name} OWNER {name} STRATEGY {strategy}")

    async def drop(self, name: str) -> None:
        """Drop the database ``name`` (if made) and its role; only a name of this run's."""
        name = self.names.guard(name)
        await self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await self.admin.execute(f"DROP ROLE IF EXISTS {name}")

    async def drop_everything(self) -> None:
        """Every database and role of this run: between phases, and at the end whatever failed."""
        left = await self.admin.fetch(
            "SELECT datname AS name FROM pg_database WHERE starts_with(datname, $1)"
            " UNION SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
            self.names.prefix,
        )
        for row in left:
            await self.drop(row["name"])

    async def checkpoints_requested(self) -> int:
        """Checkpoints requested since the cluster started (PostgreSQL 17 moved the counter)."""
        count: int = await self.admin.fetchval(
            "SELECT num_requested FROM pg_stat_checkpointer"
            if await self.admin.fetchval("SELECT current_setting('server_version_num')::int")
            >= 170000  # noqa: PLR2004  (the release that moved it)
            else "SELECT checkpoints_req FROM pg_stat_bgwriter"
        )
        return count

    async def creates(
        self, strategy: str, concurrency: int, *, label: str = "", p90: bool = False
    ) -> Floor:
        """``sizes.creates`` creates at ``concurrency``, nothing dropped in between."""
        before = await self.checkpoints_requested()
        made = [self.names.new(strategy[0]) for _ in range(self.sizes.creates)]

        async def create(i: int) -> None:
            await self.create(made[i], strategy)

        measured = _passed(
            await measure(
                strategy,
                create,
                calls=len(made),
                concurrency=concurrency,
                max_seconds=self.sizes.max_seconds,
            )
        )
        requested = (await self.checkpoints_requested() - before) / measured.calls
        return Floor(
            label=label or f"CREATE ROLE + DATABASE {strategy}, c={concurrency}",
            samples_s=measured.latencies_s,
            per_s=measured.per_second,
            p90=p90,
            note=f"{requested:.1f} checkpoints requested per create",
        )

    async def strategies(self) -> list[Floor]:
        """``file_copy`` on a clean cluster, ``wal_log``, then ``file_copy`` right after it."""
        floors = []
        # A clean start: the stack's own work (its warm pool's creates) leaves dirty pages.
        await self.admin.execute("CHECKPOINT")
        floors += [await self.creates("file_copy", level) for level in CREATE_LEVELS]
        await self.drop_everything()
        await self.admin.execute("CHECKPOINT")
        floors += [await self.creates("wal_log", level) for level in CREATE_LEVELS]
        # No drop or checkpoint in between: file_copy's checkpoints now flush wal_log's pages.
        floors.append(
            await self.creates(
                "file_copy", 1, label="  file_copy again, right after the wal_log ones", p90=True
            )
        )
        await self.drop_everything()
        return floors

    async def cycles(self) -> list[Floor]:
        """Create + drop, one cycle at a time; the first tenth of the cycles against the last."""

        async def cycle(_: int) -> None:
            name = self.names.new("c")
            await self.create(name, "wal_log")
            await self.drop(name)

        measured = _passed(await measure("cycle", cycle, calls=self.sizes.cycles, concurrency=1))
        tenth = max(1, len(measured.latencies_s) // 10)
        return [
            Floor(
                label="create + drop cycle (wal_log), c=1",
                samples_s=measured.latencies_s,
                per_s=measured.per_second,
            ),
            Floor(label=f"  its first {tenth} cycles", samples_s=measured.latencies_s[:tenth]),
            Floor(label=f"  its last {tenth} cycles", samples_s=measured.latencies_s[-tenth:]),
        ]

    async def roles(self) -> list[Floor]:
        """``CREATE ROLE`` with a password the server hashes, a verifier, and none."""
        verifier = scram_sha256_verifier(self.password)
        variants = {
            "CREATE ROLE ... PASSWORD (server hashes it)": f" PASSWORD '{self.password}'",
            "CREATE ROLE ... PASSWORD 'SCRAM-SHA-256$...'": f" PASSWORD '{verifier}'",
            "CREATE ROLE ... (no password)": "",
        }
        floors = []
        for label, password in variants.items():

            async def create_role(_: int, password: str = password) -> None:
                await self.admin.execute(f"CREATE ROLE {self.names.new('r')} LOGIN{password}")

            measured = _passed(
                await measure(label, create_role, calls=self.sizes.roles, concurrency=1)
            )
            floors.append(Floor(label=label, samples_s=measured.latencies_s))
            await self.drop_everything()
        return floors

    async def connections(self, host: str, port: int) -> list[Floor]:
        """A tenant's first connection to a new database, then its second, as the tenant."""
        first: list[float] = []
        later: list[float] = []
        for _ in range(self.sizes.connections):
            name = self.names.new("n")
            await self.create(name, "wal_log")
            for samples in (first, later):
                began = time.perf_counter()
                conn = await asyncpg.connect(
                    host=host, port=port, user=name, password=self.password, database=name
                )
                samples.append(time.perf_counter() - began)
                await conn.close()
            await self.drop(name)
        return [
            Floor(label="first connection after CREATE DATABASE", samples_s=first),
            Floor(label="  the next connection", samples_s=later),
        ]


async def pg_floors(
    env: Mapping[str, str], sizes: Sizes, progress: Progress | None = None
) -> tuple[list[str], list[Floor]]:
    """Measure every floor on the stack whose service environment is ``env``.

    Returns:
        The clusters' settings (one line each), and the floors in the order they were measured.
    """
    progress = progress or Progress(quiet=True)
    names = Names()
    platform_dsn = env["SPINUP_PLATFORM_DSN"]
    customer_dsn = env["SPINUP_CUSTOMER_PG_ADMIN_DSN"]
    header = [
        await settings(platform_dsn, "platform cluster"),
        await settings(customer_dsn, "customer cluster"),
    ]
    progress.step("waiting for the stack's warm pool to fill")
    platform = await open_pool(platform_dsn, size=1)
    try:
        # A refill is a CREATE DATABASE: none may run under the measurements.
        await wait_for_pool(
            platform, int(env.get(PG_POOL_SETTING, "0")), within_s=POOL_FILL_TIMEOUT_S
        )
    finally:
        await platform.close()
    progress.step("event-log INSERT on the platform cluster")
    floors = await event_log_inserts(platform_dsn, names, sizes)
    # The platform's pool: no session reset on release, so c = 8 times the DDL, not a RESET ALL.
    admin = await open_pool(customer_dsn, size=max(CREATE_LEVELS))
    customer = Customer(admin, names, sizes)
    steps: list[tuple[str, Callable[[], Awaitable[list[Floor]]]]] = [
        ("CREATE DATABASE, wal_log and file_copy", customer.strategies),
        ("create + drop cycles", customer.cycles),
        ("CREATE ROLE with and without a password", customer.roles),
        (
            "first and later connections",
            lambda: customer.connections(
                env["SPINUP_CUSTOMER_PG_HOST"], int(env["SPINUP_CUSTOMER_PG_PORT"])
            ),
        ),
    ]
    try:
        for what, step in steps:
            progress.step(what)
            floors += await step()
    finally:
        try:
            await customer.drop_everything()
        finally:
            await admin.close()
    return header, floors


def main() -> None:
    """Start a throwaway stack, measure, print one line per floor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cycles",
        type=int,
        help=f"create + drop cycles (default {FULL.cycles}, quick {QUICK.cycles})",
    )
    parser.add_argument("--quick", action="store_true", help="a few calls of each (~1 min)")
    parser.add_argument(
        "--fsync", action="store_true", help="the stack's Postgres with fsync on (the doc's)"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.cycles is not None:
        sizes = dataclasses.replace(sizes, cycles=args.cycles)
    print("starting a stack (.spinup/pg-floors)…", flush=True)  # noqa: T201
    with bench_stack(durable=args.fsync, name="pg-floors") as stack:
        header, floors = uvloop.run(pg_floors(stack.env(), sizes, Progress()))
    print("\n".join([*header, *(floor.line() for floor in floors)]))  # noqa: T201


if __name__ == "__main__":
    main()
