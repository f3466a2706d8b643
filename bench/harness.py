"""Every measurement of ``make bench``, against one running stack, in one run.

For each kind: its driver's raw ``create`` and ``delete`` (the floor), then ``POST /<kind>/new``
end to end, at each concurrency level; the gateway's own floor (``GET /healthz`` and a NATS
request-reply echo); ``GET /resources/{token}``; webhook capture with 1 KB bodies (every answered
request must be stored); and ``POST /db/new`` while the reaper deletes expired databases.
``Sizes`` says how much of each: ``FULL`` for ``make bench``, ``SMOKE`` for the test suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import nats

from bench import drivers, profile
from bench.cpu import stack_processes, until_quiet
from bench.machine import describe_machine, versions
from bench.measure import KEPT_ERRORS, Measurement, measure
from bench.pg_pool import pool_members_taken, served_from_pool, wait_for_pool
from devstack.stack import Stack
from gateway.resources.routes import KIND_ROUTES
from shared.contracts.kinds import ResourceKind
from shared.naming import RETIRED_PREFIX
from shared.plans import load_plans

#: Path of ``POST /<kind>/new`` for every kind, from the gateway's own route table.
NEW_PATH = {route.kind: f"/{route.path}/new" for route in KIND_ROUTES}

#: pg-provisioner's setting that sizes its warm pool of databases. When the bench started the
#: stack, ``POST /db/new`` is measured twice: from the pool (pg-provisioner restarted with
#: ``Sizes.pool_size``, the pool full before each level) and cold (restarted with 0).
PG_POOL_SETTING = "SPINUP_PG_POOL_SIZE"
#: How long the pool may take to fill before a level (a refill is a CREATE DATABASE each).
POOL_FILL_TIMEOUT_S = 300.0
#: How long the cold ``/db/new`` waits for the drop queue to finish the run's earlier deletes.
DROPS_TIMEOUT_S = 600.0

# Webhook capture sends bodies of this size (issue 6: 1 KB).
WEBHOOK_BODY = b"x" * 1024
# Bodies answered by the receiver are stored: GET .../requests shows at most ``requests_kept``,
# so the sends are spread over enough receivers that none is trimmed.


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How much of everything one run measures.

    Attributes:
        levels: the concurrency levels of every provisioning and floor measurement.
        calls: calls per level for provisioning (raw and end to end); fewer when it is slow.
        floor_calls: calls per level for ``GET /healthz`` and the NATS echo.
        max_seconds: no new call of one measurement starts after this long.
        reads: ``GET /resources/{token}`` calls, at the highest level. Several seconds' worth:
            3,000 took about 1.5 s, and a usage sweep's burst of a second or more beside it
            decided the row (bench/README.md, "The reads and capture rows").
        webhook_sends: 1 KB requests sent to webhook receivers, at the highest level (as many
            seconds as the reads).
        reaped: databases made to expire for the reaper measurement.
        reaper_probes: ``POST /db/new`` calls that measure the idle latency: about as many as
            the busy phase makes (1,000 deletes take about a minute, 300 probes), so both p99s
            rest on as many samples (with 100, the idle p99 was the second slowest call, and
            one stall of the VM set it: 34-914 ms over seven runs).
        reaper_wait_s: how long the reaper may take to delete them all (reported if reached).
        settle_s: how long a phase waits for the work of the ones before it to end (``settle``).
        pool_size: pg-provisioner's warm pool while ``POST /db/new`` (pool) is measured; a level
            makes at most this many calls, all of them from the full pool.
        s3_base_tenants: the S3 tenants (identities) pre-loaded for the "few tenants" create.
        s3_tenants: the S3 tenants pre-loaded for the "many tenants" create (issue 18: 5,000).
        s3_probes: S3 creates at c=1 timed at each of the two sizes (and rotates at c=16).
    """

    levels: tuple[int, ...]
    calls: Mapping[int, int]
    floor_calls: Mapping[int, int]
    max_seconds: float
    reads: int
    webhook_sends: int
    reaped: int
    reaper_probes: int
    reaper_wait_s: float
    settle_s: float
    pool_size: int
    s3_base_tenants: int
    s3_tenants: int
    s3_probes: int

    @property
    def top(self) -> int:
        """The highest concurrency level."""
        return max(self.levels)


FULL = Sizes(
    levels=(1, 16, 64),
    calls={1: 100, 16: 500, 64: 1000},
    floor_calls={1: 1000, 16: 3000, 64: 5000},
    max_seconds=12.0,
    reads=12000,
    webhook_sends=12000,
    reaped=1000,
    reaper_probes=300,
    reaper_wait_s=300.0,
    settle_s=180.0,
    pool_size=200,
    s3_base_tenants=50,
    s3_tenants=5000,
    s3_probes=50,
)
SMOKE = Sizes(
    levels=(1, 4),
    calls={1: 2, 4: 4},
    floor_calls={1: 10, 4: 20},
    max_seconds=10.0,
    reads=20,
    webhook_sends=24,
    reaped=3,
    reaper_probes=3,
    reaper_wait_s=60.0,
    settle_s=5.0,
    pool_size=4,
    s3_base_tenants=50,
    s3_tenants=80,
    s3_probes=3,
)

#: How many S3 creates (and rotates, deletes) at once pre-load the tenants of ``s3_tenant_scaling``.
PRELOAD_CONCURRENCY = 16
#: A phase starts once the stack uses less than this many cores (idle, it uses a few hundredths).
QUIET_CORES = 0.15
#: Waits for quiet longer than this are noted in the results.
SETTLE_NOTED_S = 3.0

#: ``POST /db/new`` probes of the reaper measurement start at most this often: a sample of the
#: latency, not a second load on the cluster the reaper is busy with.
PROBE_INTERVAL_S = 0.2
#: However slowly the databases to expire are made, the run does not wait longer than this for
#: them to expire (``all_created_before_first_expiry`` in the results says if it overlapped).
MAX_TTL_S = 120


@dataclass(kw_only=True)
class Row:
    """One measurement of the report, with the floor it is compared with (if any)."""

    group: str
    measurement: Measurement
    kind: str | None = None
    floor: Measurement | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON: figures, errors, and the ratio to its floor."""
        m = self.measurement
        row: dict[str, Any] = {
            "group": self.group,
            "name": m.name,
            "kind": self.kind,
            "concurrency": m.concurrency,
            **m.figures(),
            "cpu_ms_by_process": m.cpu_ms_by_process,
            "error_samples": m.error_samples,
        }
        if self.floor is not None:
            floor = self.floor.figures()
            row["floor"] = {"name": self.floor.name, **floor}
            row["p50_ratio"] = _ratio(m.ms(0.5), self.floor.ms(0.5))
            row["per_s_ratio"] = _ratio(m.per_second, self.floor.per_second)
        return row


def _ratio(value: float, floor: float) -> float | None:
    if floor <= 0 or math.isnan(floor) or math.isnan(value):
        return None
    return round(value / floor, 2)


@dataclass(kw_only=True)
class Results:
    """What one run found: machine, versions, rows and the special measurements."""

    mode: str
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    webhook_capture: dict[str, Any] = field(default_factory=dict)
    reaper: dict[str, Any] = field(default_factory=dict)
    s3_tenants: dict[str, Any] = field(default_factory=dict)
    profile: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started_at: str = ""
    duration_s: float = 0.0

    def add(self, row: Row, progress: Progress) -> Row:
        """Keep ``row`` and print it."""
        self.rows.append(row)
        progress.result(row.measurement.line())
        return row

    def find(self, group: str, kind: str | None, concurrency: int) -> Row | None:
        """The row of ``group`` for ``kind`` at ``concurrency``, if it was measured."""
        for row in self.rows:
            if (row.group, row.kind, row.measurement.concurrency) == (group, kind, concurrency):
                return row
        return None

    def as_dict(self) -> dict[str, Any]:
        """Everything as JSON (latency samples are summarised, not kept)."""
        return {
            "mode": self.mode,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 1),
            "machine": self.machine,
            "versions": self.versions,
            "rows": [row.as_dict() for row in self.rows],
            "webhook_capture": self.webhook_capture,
            "reaper": self.reaper,
            "s3_tenants": self.s3_tenants,
            "profile": self.profile,
            "notes": self.notes,
        }


class Progress:
    """One line on stderr saying what runs now (rewritten in place on a terminal)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self._quiet = quiet
        self._tty = sys.stderr.isatty()
        self._what = ""
        self._printed = ""

    def step(self, what: str) -> None:
        """A new measurement starts."""
        self._what = what
        self._show(what)

    def count(self, total: int) -> Callable[[int], None]:
        """A callback that shows how many of ``total`` calls of the current step are done."""

        def done(finished: int) -> None:
            if self._tty:
                self._show(f"{self._what}  {finished}/{total}")

        return done

    def result(self, line: str) -> None:
        """A finished measurement's line, kept on screen."""
        if self._quiet:
            return
        if self._tty:
            sys.stderr.write("\r\x1b[2K")
        print(line, flush=True)  # noqa: T201

    def _show(self, text: str) -> None:
        if self._quiet:
            return
        if self._tty:
            sys.stderr.write(f"\r\x1b[2K[bench] {text}"[:200])
            sys.stderr.flush()
        elif not text[-1].isdigit() and text != self._printed:
            self._printed = text
            sys.stderr.write(f"[bench] {text}\n")


@dataclass(kw_only=True)
class Target:
    """What the bench runs against: a gateway, the services' environment, and maybe the stack.

    ``stack`` is None when the bench reuses a stack it did not start (``--reuse``): then it can
    neither start a short-TTL gateway for the reaper measurement nor restart pg-provisioner.
    ``clean_up``: delete what the run made over HTTP at the end (a stack the bench started is
    wiped instead: deleting thousands of databases would take minutes).
    """

    gateway_url: str
    env: Mapping[str, str]
    stack: Stack | None = None
    clean_up: bool = True

    @property
    def processes(self) -> dict[str, int]:
        """The stack's processes by name, whose CPU each measurement counts (none if reused)."""
        return stack_processes(self.stack) if self.stack is not None else {}


#: How many client networks the creates come from (``caller``).
CALLER_NETWORKS = 512


def caller(index: int) -> dict[str, str]:
    """The header that makes create ``index`` come from one of ``CALLER_NETWORKS`` /24 networks.

    A run's thousands of creates from one address would each have a plan's caps counted over
    every resource made before it (up to the roomy cap, thousands of rows): a cost no real caller
    pays, since a network is held to its plan's few. The bench stack trusts its loopback peer as a
    proxy (``bench.__main__.BENCH_OVERRIDES``), so each create names a network of RFC 2544's
    benchmarking range, 198.18.0.0/15, as a crowd of users would arrive. A stack that trusts no
    proxy (``--reuse``, the smoke run) ignores the header: every call is then one network's.
    """
    network = index % CALLER_NETWORKS
    return {"X-Forwarded-For": f"198.{18 + network // 256}.{network % 256}.7"}


#: How long the bench keeps an idle connection to the gateway: under uvicorn's 5 s keep-alive.
#: A client that keeps one longer (aiohttp's default is 15 s) may send a request on a connection
#: the server is closing that moment, and the call fails with "Server disconnected".
CLIENT_KEEPALIVE_S = 3.0


def gateway_connector(limit: int) -> aiohttp.TCPConnector:
    """Keep-alive connections to the gateway, at most ``limit``, dropped before the server does."""
    return aiohttp.TCPConnector(limit=limit, keepalive_timeout=CLIENT_KEEPALIVE_S)


@contextlib.asynccontextmanager
async def _http(url: str, concurrency: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session with ``concurrency`` keep-alive connections to ``url``."""
    connector = gateway_connector(concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        yield session


async def _expect(response: aiohttp.ClientResponse, status: int) -> bytes:
    body = await response.read()
    if response.status != status:
        msg = f"{response.method} {response.url.path}: {response.status} {body[:200]!r}"
        raise RuntimeError(msg)
    return body


class Created(msgspec.Struct):
    """The part of a ``POST /<kind>/new`` answer the bench keeps."""

    id: uuid.UUID
    token: str
    expires_at: datetime | None = None
    credentials: dict[str, Any] = {}
    limits: dict[str, Any] = {}


_created = msgspec.json.Decoder(Created)


class Bench:
    """One run: measures into ``results`` as it goes."""

    def __init__(
        self, target: Target, sizes: Sizes, progress: Progress, mode: str, *, profile: bool = False
    ) -> None:
        self.target = target
        self.profile = profile
        self.sizes = sizes
        self.progress = progress
        self.results = Results(mode=mode)
        #: Everything made over HTTP, by kind: removed (and timed) at the end.
        self.created: dict[ResourceKind, list[Created]] = {kind: [] for kind in ResourceKind}

    async def run(self) -> Results:
        """Every measurement, in order; the results also when one part fails."""
        began = time.perf_counter()
        self.results.started_at = datetime.now().astimezone().isoformat(timespec="seconds")
        self.progress.step("machine and versions")
        self.results.machine = describe_machine()
        self.results.versions = await versions(self.target.env)
        try:
            await self.gateway_floor()
            for kind in NEW_PATH:
                await self.settle(kind.value)
                await self.provisioning(kind)
            await self.settle("the reads")
            await self.reads()
            await self.settle("webhook capture")
            await self.webhook_capture()
            await self.settle("the reaper measurement")
            await self.reaper_effect()
            if self.profile:
                await self.settle("the profile")
                await self.profile_cache_new()
            await self.clean_up()
        finally:
            self.results.duration_s = time.perf_counter() - began
        return self.results

    # --- helpers ------------------------------------------------------------------------------

    async def settle(self, phase: str) -> None:
        """Wait for the stack to go quiet before ``phase``; the notes say when that took long."""
        processes = self.target.processes
        if not processes:
            return
        self.progress.step(f"waiting for the stack to go quiet before {phase}")
        waited, cores = await until_quiet(
            processes, below_cores=QUIET_CORES, within_s=self.sizes.settle_s
        )
        if cores >= QUIET_CORES:
            self.results.notes.append(
                f"{phase} was measured with the stack still using {cores:.2f} cores after"
                f" {waited:.0f} s of waiting for the work before it to end."
            )
        elif waited > SETTLE_NOTED_S:
            self.results.notes.append(f"The stack took {waited:.0f} s to go quiet before {phase}.")

    async def _measure(
        self,
        name: str,
        call: Callable[[int], Awaitable[object]],
        *,
        calls: int,
        concurrency: int,
        max_seconds: float | None = None,
        helpers: Mapping[str, int] | None = None,
    ) -> Measurement:
        """``measure``, counting the CPU of the stack's processes and of the bench's ``helpers``."""
        self.progress.step(f"{name} c={concurrency}")
        processes = self.target.processes
        return await measure(
            name,
            call,
            calls=calls,
            concurrency=concurrency,
            max_seconds=self.sizes.max_seconds if max_seconds is None else max_seconds,
            progress=self.progress.count(calls),
            # Without the stack's processes (a reused stack) a helper's CPU alone would mislead.
            processes={**processes, **(helpers or {})} if processes else None,
        )

    # --- the gateway's floor ------------------------------------------------------------------

    async def gateway_floor(self) -> None:
        """``GET /healthz`` (HTTP and Litestar only) and a NATS request-reply echo."""
        for level in self.sizes.levels:
            async with _http(self.target.gateway_url, level) as http:

                async def healthz(_: int, http: aiohttp.ClientSession = http) -> None:
                    async with http.get("/healthz") as response:
                        await _expect(response, 200)

                measured = await self._measure(
                    "GET /healthz", healthz, calls=self.sizes.floor_calls[level], concurrency=level
                )
                self.results.add(Row(group="floor", measurement=measured), self.progress)
        async with echo_responder(self.target.env["SPINUP_NATS_URL"]) as (subject, responder):
            client = await nats.connect(self.target.env["SPINUP_NATS_URL"], name="bench")
            try:

                async def echo(_: int) -> None:
                    await client.request(subject, b"ping", timeout=5)

                for level in self.sizes.levels:
                    measured = await self._measure(
                        "NATS request-reply echo",
                        echo,
                        calls=self.sizes.floor_calls[level],
                        concurrency=level,
                        helpers={"echo responder": responder},
                    )
                    self.results.add(Row(group="floor", measurement=measured), self.progress)
            finally:
                await client.close()

    # --- provisioning: raw floor and end to end -----------------------------------------------

    async def provisioning(self, kind: ResourceKind) -> None:
        """``kind``'s driver create at each level (then its deletes), then ``POST /<kind>/new``."""
        if kind in drivers.KINDS:
            await self.raw(kind)
        else:
            self.results.notes.append(f"{kind}: no driver in bench/drivers.py, so no raw floor.")
        if kind is ResourceKind.S3:
            await self.s3_tenant_scaling()
        if kind is ResourceKind.POSTGRES:
            await self._db_new_variants()
        else:
            await self._end_to_end(kind, label="")

    async def raw(self, kind: ResourceKind) -> None:
        """``kind``'s driver create at each level, then every tenant it made deleted."""
        limits = _anonymous_limits(self.target.env, kind)
        async with drivers.connected(kind, self.target.env) as driver:
            made: list[uuid.UUID] = []
            for level in self.sizes.levels:
                ids = [uuid.uuid4() for _ in range(self.sizes.calls[level])]

                async def create(i: int, ids: list[uuid.UUID] = ids) -> None:
                    await driver.create(ids[i], limits)
                    made.append(ids[i])

                measured = await self._measure(
                    f"{kind} create (driver)",
                    create,
                    calls=len(ids),
                    concurrency=level,
                )
                self.results.add(
                    Row(group="raw create", kind=kind, measurement=measured), self.progress
                )

            # Deletes after every create: a DROP DATABASE between creates slows the ones after
            # it (docs/floors.md), and the floor is the create alone.
            async def delete(i: int) -> None:
                await driver.delete(made[i])

            measured = await self._measure(
                f"{kind} delete (driver)", delete, calls=len(made), concurrency=self.sizes.top
            )
            if measured.calls < len(made):
                self.results.notes.append(
                    f"{kind}: {len(made) - measured.calls} of the driver's {len(made)} tenants"
                    f" were left undeleted when the delete measurement's time was up."
                )
            self.results.add(
                Row(group="raw delete", kind=kind, measurement=measured), self.progress
            )

    async def s3_tenant_scaling(self) -> None:
        """One S3 create at c=1 with few tenants and with many, pre-loaded by the driver at c=16.

        Issue 18: with identities rewritten in full on each change, a create cost grew with the
        tenants the cluster holds. The ratio of the two medians says whether it still does. At
        the many tenants, rotates at c=16 too; then every tenant made here is deleted at c=16.
        """
        kind, sizes = ResourceKind.S3, self.sizes
        limits = _anonymous_limits(self.target.env, kind)
        group = "s3 tenants"
        async with drivers.connected(kind, self.target.env) as driver:
            made: list[uuid.UUID] = []

            async def create_into(
                name: str, count: int, concurrency: int, *, timed: bool = True
            ) -> Measurement:
                ids = [uuid.uuid4() for _ in range(count)]

                async def create(i: int) -> None:
                    await driver.create(ids[i], limits)
                    made.append(ids[i])

                measured = await self._measure(
                    name,
                    create,
                    calls=count,
                    concurrency=concurrency,
                    max_seconds=self.sizes.max_seconds if timed else math.inf,
                )
                self.results.add(Row(group=group, kind=kind, measurement=measured), self.progress)
                return measured

            try:
                probes: list[Measurement] = []
                fills: list[Measurement] = []
                for tenants in (sizes.s3_base_tenants, sizes.s3_tenants):
                    fills.append(
                        await create_into(
                            f"s3 pre-load to {tenants} tenants (driver)",
                            max(tenants - len(made), 0),
                            PRELOAD_CONCURRENCY,
                            timed=False,
                        )
                    )
                    probes.append(
                        await create_into(
                            f"s3 create (driver) at {len(made)} tenants", sizes.s3_probes, 1
                        )
                    )
                rotating = made[: sizes.s3_probes * PRELOAD_CONCURRENCY]

                async def rotate(i: int) -> None:
                    await driver.rotate(rotating[i], limits)

                rotated = await self._measure(
                    f"s3 rotate (driver) at {len(made)} tenants",
                    rotate,
                    calls=len(rotating),
                    concurrency=PRELOAD_CONCURRENCY,
                )
                self.results.add(Row(group=group, kind=kind, measurement=rotated), self.progress)
                few, many = probes
                self.results.s3_tenants = {
                    "few_tenants": sizes.s3_base_tenants,
                    "many_tenants": sizes.s3_tenants,
                    "few_p50_ms": round(few.ms(0.5), 2),
                    "many_p50_ms": round(many.ms(0.5), 2),
                    "ratio": _ratio(many.ms(0.5), few.ms(0.5)),
                    "preload_per_s": round(fills[-1].per_second, 1),
                    "rotate_p50_ms": round(rotated.ms(0.5), 2),
                }
            finally:
                count = len(made)

                async def delete(i: int) -> None:
                    await driver.delete(made[i])

                deleted = await self._measure(
                    f"s3 delete (driver) of {count} tenants",
                    delete,
                    calls=count,
                    concurrency=PRELOAD_CONCURRENCY,
                    max_seconds=math.inf,
                )
                self.results.add(Row(group=group, kind=kind, measurement=deleted), self.progress)

    async def _end_to_end(
        self,
        kind: ResourceKind,
        *,
        label: str,
        calls: Callable[[int], int] | None = None,
        before_level: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``POST /<kind>/new`` at every level; ``calls`` and ``before_level`` adjust a level."""
        path = NEW_PATH[kind]
        for level in self.sizes.levels:
            if before_level is not None:
                await before_level()
            count = calls(level) if calls else self.sizes.calls[level]
            async with _http(self.target.gateway_url, level) as http:

                async def new(index: int, http: aiohttp.ClientSession = http) -> None:
                    async with http.post(path, headers=caller(index)) as response:
                        body = await _expect(response, 201)
                    self.created[kind].append(_created.decode(body))

                measured = await self._measure(
                    f"POST {path}{label}", new, calls=count, concurrency=level
                )
            floor = self.results.find("raw create", kind, level)
            self.results.add(
                Row(
                    group=f"end to end{label}",
                    kind=kind,
                    measurement=measured,
                    floor=floor.measurement if floor else None,
                ),
                self.progress,
            )

    async def _db_new_variants(self) -> None:
        """``POST /db/new`` from a full warm pool at every level, then cold (pool off)."""
        stack = self.target.stack
        if stack is None:
            self.results.notes.append(
                "POST /db/new was measured as the reused stack runs (pool or not): the bench"
                " restarts pg-provisioner only in a stack it started."
            )
            await self._end_to_end(ResourceKind.POSTGRES, label="")
            return
        await self._pooled_db_new(stack)
        await self.cold_db_new(stack)

    @contextlib.asynccontextmanager
    async def _pg_pool_of(self, stack: Stack, size: int) -> AsyncIterator[None]:
        """pg-provisioner restarted with a warm pool of ``size``; afterwards, as it was."""
        had = stack.service_env_overrides.get(PG_POOL_SETTING)
        stack.service_env_overrides[PG_POOL_SETTING] = str(size)
        try:
            await asyncio.to_thread(_restart, stack, "pg-provisioner")
            yield
        finally:
            if had is None:
                stack.service_env_overrides.pop(PG_POOL_SETTING, None)
            else:
                stack.service_env_overrides[PG_POOL_SETTING] = had
            await asyncio.to_thread(_restart, stack, "pg-provisioner")

    async def _pooled_db_new(self, stack: Stack) -> None:
        pool_size = self.sizes.pool_size
        async with self._pg_pool_of(stack, pool_size):
            await self.wait_for_drops()
            platform = await asyncpg.create_pool(
                self.target.env["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2
            )
            try:
                taken_before = await pool_members_taken(platform)

                async def fill() -> None:
                    self.progress.step(f"waiting for the warm pool to fill ({pool_size})")
                    await wait_for_pool(platform, pool_size, within_s=POOL_FILL_TIMEOUT_S)

                await self._end_to_end(
                    ResourceKind.POSTGRES,
                    label=" (pool)",
                    calls=lambda level: min(self.sizes.calls[level], pool_size),
                    before_level=fill,
                )
                taken = await pool_members_taken(platform) - taken_before
            finally:
                await platform.close()
        made = sum(
            row.measurement.calls for row in self.results.rows if row.group == "end to end (pool)"
        )
        self.results.notes.append(
            f"POST /db/new (pool): a pool of {pool_size}, full before each level;"
            f" {taken} of {made} calls were served from it (creates that name a pool member)."
        )

    async def cold_db_new(self, stack: Stack) -> None:
        """``POST /db/new`` at every level with pg-provisioner's pool off."""
        async with self._pg_pool_of(stack, 0):
            await self.wait_for_drops()
            await self._end_to_end(ResourceKind.POSTGRES, label=" (cold)")

    async def wait_for_drops(self) -> None:
        """Until no retired database is left on the customer cluster to drop.

        The raw creates ``POST /db/new`` is compared with ran on a cluster with nothing to drop;
        the raw deletes since then left hundreds of ``DROP DATABASE`` (each forcing a
        checkpoint) to pg-provisioner's drop queue, which would otherwise run under the pooled
        and cold creates, and under every kind measured after them.
        """
        self.progress.step("waiting for the drop queue to finish the run's deletes")
        conn = await asyncpg.connect(self.target.env["SPINUP_CUSTOMER_PG_ADMIN_DSN"])
        try:
            deadline = time.monotonic() + DROPS_TIMEOUT_S
            while left := await conn.fetchval(
                "SELECT count(*) FROM pg_database WHERE starts_with(datname, $1)", RETIRED_PREFIX
            ):
                if time.monotonic() > deadline:
                    self.results.notes.append(
                        f"POST /db/new was measured with {left} databases still to drop."
                    )
                    return
                await asyncio.sleep(1.0)
        finally:
            await conn.close()

    # --- reads, webhook capture ---------------------------------------------------------------

    async def reads(self) -> None:
        """``GET /resources/{token}`` over every token made so far, at the highest level."""
        tokens = [made.token for kind in ResourceKind for made in self.created[kind]]
        level = self.sizes.top
        async with _http(self.target.gateway_url, level) as http:

            async def show(i: int) -> None:
                async with http.get(f"/resources/{tokens[i % len(tokens)]}") as response:
                    await _expect(response, 200)

            measured = await self._measure(
                "GET /resources/{token}", show, calls=self.sizes.reads, concurrency=level
            )
        self.results.add(Row(group="read", measurement=measured), self.progress)

    async def webhook_capture(self) -> None:
        """1 KB requests to webhook receivers at the highest level; every answered one stored."""
        level = self.sizes.top
        async with _http(self.target.gateway_url, level) as http:
            async with http.post(NEW_PATH[ResourceKind.WEBHOOK]) as response:
                first = _created.decode(await _expect(response, 201))
            kept = int(first.limits["requests_kept"])
            receivers = [first]
            while len(receivers) * kept < self.sizes.webhook_sends:
                async with http.post(NEW_PATH[ResourceKind.WEBHOOK]) as response:
                    receivers.append(_created.decode(await _expect(response, 201)))
            self.created[ResourceKind.WEBHOOK] += receivers
            urls = [str(r.credentials["receive_url"]) for r in receivers]
            answered = [0] * len(receivers)

            async def send(i: int) -> None:
                which = i % len(receivers)
                async with http.post(urls[which], data=WEBHOOK_BODY) as response:
                    await _expect(response, 200)
                answered[which] += 1

            measured = await self._measure(
                "POST <receive_url> (1 KB)",
                send,
                calls=self.sizes.webhook_sends,
                concurrency=level,
                max_seconds=math.inf,  # every send is counted against what was stored
            )
            self.results.add(Row(group="webhook capture", measurement=measured), self.progress)
            stored = 0
            short: list[str] = []
            for receiver, sent in zip(receivers, answered, strict=True):
                async with http.get(f"/webhook/{receiver.token}/requests") as response:
                    count = int(msgspec.json.decode(await _expect(response, 200))["count"])
                stored += count
                if count != sent:
                    short.append(f"{receiver.id}: {sent} answered, {count} stored")
        self.results.webhook_capture = {
            "receivers": len(receivers),
            "body_bytes": len(WEBHOOK_BODY),
            "concurrency": level,
            "sent": measured.calls,
            "answered": len(measured.latencies_s),
            "stored": stored,
            "lost": len(measured.latencies_s) - stored,
            "mismatches": short,
            "per_s": round(measured.per_second, 1),
        }
        self.progress.result(
            f"webhook capture: {measured.calls} sent, {len(measured.latencies_s)} answered,"
            f" {stored} stored"
        )

    # --- the reaper ---------------------------------------------------------------------------

    async def reaper_effect(self) -> None:
        """``POST /db/new`` latency idle, then while the reaper deletes expired databases."""
        stack = self.target.stack
        if stack is None:
            self.results.notes.append(
                "The reaper measurement needs a short-TTL gateway, which the bench starts only"
                " in a stack it started or was handed; not measured with --reuse."
            )
            return
        path = NEW_PATH[ResourceKind.POSTGRES]
        # Each phase's resource ids, in the order of its latencies (both skip a failed call).
        idle_ids: list[str] = []
        busy_ids: list[str] = []
        async with _http(self.target.gateway_url, 1) as http:

            def db_new(ids: list[str]) -> Callable[[], Awaitable[None]]:
                async def create() -> None:
                    async with http.post(path) as response:
                        made = _created.decode(await _expect(response, 201))
                    self.created[ResourceKind.POSTGRES].append(made)
                    ids.append(str(made.id))

                return create

            self.progress.step(f"POST {path} (reaper idle)")
            idle = await paced(
                f"POST {path} (reaper idle)",
                db_new(idle_ids),
                until=lambda m: m.calls >= self.sizes.reaper_probes,
            )
            self.results.add(Row(group="reaper", measurement=idle), self.progress)

            # The expired databases must all exist before the first one expires: the TTL is
            # the time their creation should take at the rate measured earlier, twice, plus slack.
            made = self.results.find(
                "end to end (cold)", ResourceKind.POSTGRES, self.sizes.top
            ) or self.results.find("end to end", ResourceKind.POSTGRES, self.sizes.top)
            rate = made.measurement.per_second if made else 1.0
            ttl = min(math.ceil(2 * self.sizes.reaped / max(rate, 1.0)) + 3, MAX_TTL_S)

            def short_ttl(plans: dict[str, Any]) -> None:
                tier = plans["tiers"][plans["anonymous_tier"]]
                tier["ttl_seconds"] = ttl
                # Dropped at expiry, not after the export grace (ADR 0030): the drops are measured.
                if tier.get("lifetime"):
                    tier["lifetime"]["export_grace_seconds"] = 0

            with tmp_dir() as directory, stack.gateway_with_plans(directory, short_ttl) as short:
                doomed = await self._make_expiring(str(short.url), path)
            created_by = time.time()
            expiries = [d.expires_at.timestamp() for d in doomed if d.expires_at is not None]
            first_expiry = min(expiries, default=created_by)
            self.progress.step(f"waiting {max(0.0, first_expiry - time.time()):.0f} s for expiry")
            await asyncio.sleep(max(0.0, first_expiry - time.time()))

            ids = [d.id for d in doomed]
            pool = await asyncpg.create_pool(
                self.target.env["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2
            )
            try:
                began = time.perf_counter()
                watcher = asyncio.create_task(self._until_deleted(pool, ids))
                busy = await paced(
                    f"POST {path} (reaper deleting)",
                    db_new(busy_ids),
                    until=lambda _: watcher.done(),
                )
                left = await watcher
                took = time.perf_counter() - began
                served = await served_from_pool(pool, idle_ids + busy_ids)
            finally:
                await pool.close()
        self.results.add(Row(group="reaper", measurement=busy), self.progress)
        deleted = len(ids) - left
        if left:
            self.results.notes.append(
                f"The reaper had deleted {deleted} of {len(ids)} expired databases when the"
                f" measurement stopped after {took:.0f} s."
            )
        self.results.reaper = {
            "expired_databases": len(ids),
            "deleted": deleted,
            "ttl_s": ttl,
            "all_created_before_first_expiry": created_by <= first_expiry,
            "deleted_within_s": round(took, 1),
            "deletes_per_s": round(deleted / took, 1) if took > 0 else None,
            "probe_interval_s": PROBE_INTERVAL_S,
            "idle_p50_ms": round(idle.ms(0.5), 2),
            "idle_p99_ms": round(idle.ms(0.99), 2),
            "busy_p50_ms": round(busy.ms(0.5), 2),
            "busy_p99_ms": round(busy.ms(0.99), 2),
            "p99_ratio": _ratio(busy.ms(0.99), idle.ms(0.99)),
            **cold_probes(idle, idle_ids, busy, busy_ids, served),
        }

    async def _make_expiring(self, url: str, path: str) -> list[Created]:
        """``reaped`` databases made through the short-TTL gateway, a few at a time."""
        doomed: list[Created] = []
        level = min(8, self.sizes.top)
        async with _http(url, level) as http:

            async def make(index: int) -> None:
                async with http.post(path, headers=caller(index)) as response:
                    doomed.append(_created.decode(await _expect(response, 201)))

            measured = await self._measure(
                f"POST {path} (short TTL, to expire)",
                make,
                calls=self.sizes.reaped,
                concurrency=level,
                max_seconds=math.inf,
            )
        self.results.add(Row(group="reaper", measurement=measured), self.progress)
        return doomed

    async def _until_deleted(self, pool: asyncpg.Pool, ids: list[uuid.UUID]) -> int:
        """Wait until the reaper has deleted all of ``ids`` (or time is up); how many are left."""
        began = time.perf_counter()
        while True:
            left: int = await pool.fetchval(
                "SELECT count(*) FROM resources WHERE id = ANY($1::uuid[])"
                " AND status NOT IN ('expired', 'deleted')",
                ids,
            )
            self.progress.step(f"reaper: {left} of {len(ids)} expired databases left")
            if left == 0 or time.perf_counter() - began > self.sizes.reaper_wait_s:
                return left
            await asyncio.sleep(0.5)

    # --- profile ------------------------------------------------------------------------------

    async def profile_cache_new(self) -> None:
        """py-spy on the gateway while ``POST /cache/new`` runs at c=16 (``bench.profile``)."""
        gateway_pid = self.target.stack.services["gateway"].pid if self.target.stack else None
        if gateway_pid is None:
            self.results.notes.append(
                "The profile needs the gateway's pid: a stack the bench runs."
            )
            return
        seconds = 15.0 if self.sizes is FULL else 3.0
        path = NEW_PATH[ResourceKind.REDIS]
        level = min(16, self.sizes.top)
        with tmp_dir() as directory:
            raw = directory / "profile.txt"
            # The gateway serves from child processes (ADR 0015): the pid alone samples nothing.
            recording = asyncio.create_task(
                profile.record(gateway_pid, seconds, raw, subprocesses=True)
            )
            async with _http(self.target.gateway_url, level) as http:

                async def new(index: int) -> None:
                    async with http.post(path, headers=caller(index)) as response:
                        self.created[ResourceKind.REDIS].append(
                            _created.decode(await _expect(response, 201))
                        )

                measured = await self._measure(
                    f"POST {path} (profiled)",
                    new,
                    calls=10**9,
                    concurrency=level,
                    max_seconds=seconds + 1,
                )
            await recording
            self.results.add(Row(group="profile", measurement=measured), self.progress)
            self.results.profile = profile.summarise(raw)

    # --- clean up -----------------------------------------------------------------------------

    async def clean_up(self) -> None:
        """``DELETE /resources/{token}`` of everything made over HTTP (timed, as a bonus)."""
        if not self.target.clean_up:
            return
        tokens = [made.token for kind in ResourceKind for made in self.created[kind]]
        level = min(16, self.sizes.top)
        async with _http(self.target.gateway_url, level) as http:

            async def remove(i: int) -> None:
                async with http.delete(f"/resources/{tokens[i]}") as response:
                    body = await response.read()
                    # The reaper phase's databases may be gone already; 404/410 mean just that.
                    if response.status not in {200, 404, 410}:
                        msg = f"DELETE: {response.status} {body[:200]!r}"
                        raise RuntimeError(msg)

            measured = await self._measure(
                "DELETE /resources/{token}",
                remove,
                calls=len(tokens),
                concurrency=level,
                max_seconds=math.inf,
            )
        self.results.add(Row(group="delete", measurement=measured), self.progress)


async def paced(
    name: str,
    call: Callable[[], Awaitable[None]],
    *,
    until: Callable[[Measurement], bool],
    interval_s: float = PROBE_INTERVAL_S,
) -> Measurement:
    """One ``call`` at a time, starting at most every ``interval_s``, until ``until``.

    Its CPU is not counted: paced calls leave the cores mostly to whatever else runs (the
    reaper), so the CPU per call would be theirs.
    """
    result = Measurement(name=name, concurrency=1)
    began = time.perf_counter()
    while not until(result):
        started = time.perf_counter()
        try:
            await call()
        except Exception as exc:  # noqa: BLE001 (counted like every failure)
            result.errors += 1
            if len(result.error_samples) < KEPT_ERRORS:
                result.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
        else:
            result.latencies_s.append(time.perf_counter() - started)
        await asyncio.sleep(max(0.0, interval_s - (time.perf_counter() - started)))
    result.wall_s = time.perf_counter() - began
    return result


def cold_probes(
    idle: Measurement,
    idle_ids: list[str],
    busy: Measurement,
    busy_ids: list[str],
    served: set[str],
) -> dict[str, int]:
    """How many probes of each phase the warm pool did not serve, and whether the slow were those.

    A cold create runs ``CREATE DATABASE`` on its request's path: the likeliest reason for a
    probe over the target (twice the idle p99), so the results say how many of those were cold.
    """
    bound_s = 2 * idle.ms(0.99) / 1000
    slow = [made for made, took in zip(busy_ids, busy.latencies_s, strict=True) if took > bound_s]
    return {
        "idle_probes": len(idle_ids),
        "busy_probes": len(busy_ids),
        "idle_cold": sum(made not in served for made in idle_ids),
        "busy_cold": sum(made not in served for made in busy_ids),
        "busy_over_target": len(slow),
        "busy_over_target_cold": sum(made not in served for made in slow),
    }


def _anonymous_limits(env: Mapping[str, str], kind: ResourceKind) -> Any:  # noqa: ANN401
    """What the anonymous tier gives ``kind`` in the plans the stack serves."""
    plans = load_plans(Path(env["SPINUP_PLANS_FILE"]))
    return plans.tiers[plans.anonymous_tier].limits(kind)


def _restart(stack: Stack, service: str) -> None:
    stack.stop_service(service)
    stack.start_service(service)


def restart_with(stack: Stack, services: list[str], settings: dict[str, str], *, on: bool) -> None:
    """Restart ``services`` with ``settings`` in their environment (``on``) or without them."""
    for name, value in settings.items():
        if on:
            stack.service_env_overrides[name] = value
        else:
            stack.service_env_overrides.pop(name, None)
    for service in services:
        _restart(stack, service)


async def interleaved(
    stack: Stack,
    *,
    restart: list[str],
    settings: dict[str, str],
    rounds: int,
    measure: Callable[[], Awaitable[dict[str, Any]]],
    label: str,
) -> dict[str, list[dict[str, Any]]]:
    """``measure`` each round as the stack runs (A) and, given ``settings``, with them (B).

    Before each measurement ``restart`` is restarted with the settings or without them. The
    variants alternate which goes first, so a drift of the machine falls on both. Each result is
    printed as it comes, so a run cut short still shows its rounds.
    """
    variants = ["A", "B"] if settings else ["A"]
    measured: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    for number in range(rounds):
        order = variants if number % 2 == 0 else variants[::-1]
        for variant in order:
            await asyncio.to_thread(restart_with, stack, restart, settings, on=variant == "B")
            result = await measure()
            measured[variant].append(result)
            line = f"[{label}] round {number + 1} {variant}: {json.dumps(result)}"
            print(line, file=sys.stderr)  # noqa: T201
    return measured


def medians_of(
    measured: Mapping[str, list[dict[str, Any]]], keys: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Each variant's median of each of ``keys`` over its rounds."""
    return {
        variant: {key: statistics.median(result[key] for result in results) for key in keys}
        for variant, results in measured.items()
    }


@contextlib.contextmanager
def tmp_dir() -> Iterator[Path]:
    """A scratch directory, removed afterwards."""
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="spinup-bench-") as name:
        yield Path(name)


@contextlib.asynccontextmanager
async def echo_responder(nats_url: str) -> AsyncIterator[tuple[str, int]]:
    """A separate process answering requests on a fresh subject with their own payload.

    Yields the subject and the process's pid.
    """
    subject = f"bench.echo.{uuid.uuid4().hex}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.echo",
        subject,
        env={**os.environ, "SPINUP_NATS_URL": nats_url},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None  # noqa: S101 (PIPE was asked for)
        ready = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        if ready.strip() != b"ready":
            msg = f"the echo responder did not start: {ready!r}"
            raise RuntimeError(msg)
        yield subject, process.pid
    finally:
        process.terminate()
        await process.wait()
