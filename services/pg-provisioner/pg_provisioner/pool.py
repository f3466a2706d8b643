"""Warm pool and drop queue: the slow DDL of the customer cluster, kept off the request path.

``CREATE DATABASE`` costs 30 to 80 ms and ``DROP DATABASE`` forces a checkpoint every tenant feels
(docs/floors.md). So databases are made ahead of time and handed out by renaming, and deleted
ones are renamed out of the way and dropped later, a few at a time.

Pool members: a role and a database both named ``pool_name(member_id)``, the role with no login
(its password, if set, is useless until a take adds LOGIN), the database with CONNECT revoked
from PUBLIC: owned by nobody, reachable by nobody. Each member has its own event stream
(``pool_stream``): ``PoolMemberRequested`` before the DDL, ``PoolMemberReady`` after it,
``PoolMemberDropped`` when it is discarded. A take renames it to its tenant name, and from then
on it is that resource's: the resource's ``ResourceProvisioned`` names the member, whose own
stream ends at ``Ready``. Which replica takes a member is settled by that rename, which only one
can make, so replicas may share one cluster (docs/adr/0047).

The password of a member is made in this process when the member is made, with its SCRAM
verifier computed then (3.5 ms of CPU), and the verifier is set by the member's ``CREATE ROLE``
(8 ms of the server's: ``_create_member``), all off the request path. A member found by
reconcile after a restart gets a new password that its take sets. The password is kept in memory
only and handed to the one request that takes the member: nobody has seen it before.

Reconcile, at start and then periodically, makes the cluster and the log agree: a ``p_`` object
whose stream ends in ``Ready`` is a member; one with no stream at all is unknown and dropped; one
whose stream ended otherwise (failed, dropped but still there, or taken before docs/adr/0047 but
not renamed) is dropped once its last event is older than a grace period, so a replica's work in
progress is never cut.
Retired (``x_``) objects are always garbage and go to the drop queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import structlog

from pg_provisioner.sql import quote_ident, quote_literal
from shared.contracts.events import (
    PoolMemberDropped,
    PoolMemberReady,
    PoolMemberRequested,
)
from shared.contracts.kinds import ResourceKind
from shared.eventlog.errors import ConcurrencyConflictError
from shared.naming import (
    RETIRED_PREFIX,
    guard_disposable_name,
    pool_member_id,
    pool_name,
    pool_stream,
)
from shared.observability import metrics
from shared.runtime import set_within

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from shared.contracts.events import PoolEvent
    from shared.eventlog.store import EventStore

log = structlog.get_logger("pg_provisioner.pool")

#: A member whose last event is younger than this may be another replica's work in progress.
RECONCILE_GRACE = timedelta(minutes=2)
#: Refills wait until the pool has not been taken from for this long (unless it is running low):
#: a CREATE DATABASE writes megabytes of WAL, and every take's commit would queue behind it.
REFILL_QUIET_S = 0.25
#: After a failed refill, wait this long before the next try (the cluster may be down).
_REFILL_BACKOFF_S = 1.0
#: Every name of a pool member or retired object on the cluster, roles and databases alike.
_DISPOSABLE_NAMES = (
    "SELECT rolname AS name FROM pg_roles WHERE rolname ~ '^[px]_[0-9a-f]{32}$'"
    " UNION SELECT datname FROM pg_database WHERE datname ~ '^[px]_[0-9a-f]{32}$'"
)


def refill_wait(ready: int, reserve: int, since_last_take_s: float) -> float:
    """Seconds refills wait before starting: none once the pool is down to ``reserve``.

    Above it they wait until takes have paused for ``REFILL_QUIET_S``, so a burst of takes
    does not queue its commits behind the WAL of refills.
    """
    if ready <= reserve:
        return 0.0
    return max(0.0, REFILL_QUIET_S - since_last_take_s)


class DropQueue:
    """Names whose role and database are to be dropped, drained a few at a time.

    Only pool-member and retired names are accepted (``guard_disposable_name``): nothing a
    tenant can reach is ever in here. A drop that fails is logged and left for the next sweep
    (``sweep`` at start, the pool's reconcile later), which finds the name on the cluster again.
    """

    def __init__(self, admin: asyncpg.Pool, *, concurrency: int) -> None:
        self._admin = admin
        self._concurrency = concurrency
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the drainers (``concurrency`` of them)."""
        self._workers = [
            asyncio.create_task(self._drain(), name=f"pg-drop-{n}")
            for n in range(self._concurrency)
        ]

    def put(self, name: str) -> None:
        """Queue ``name`` for dropping (once, however often it is put)."""
        guard_disposable_name(name)
        if name not in self._queued:
            self._queued.add(name)
            self._queue.put_nowait(name)

    def __len__(self) -> int:
        return len(self._queued)

    async def sweep_retired(self) -> int:
        """Queue every retired object on the cluster (left by a process that stopped early)."""
        rows = await self._admin.fetch(_DISPOSABLE_NAMES)
        retired = [row["name"] for row in rows if row["name"].startswith(RETIRED_PREFIX)]
        for name in retired:
            self.put(name)
        return len(retired)

    async def join(self, within_s: float) -> bool:
        """Wait until everything queued so far is dropped (or failed); False after ``within_s``."""
        try:
            async with asyncio.timeout(within_s):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def close(self, within_s: float) -> None:
        """Drop what is queued within ``within_s``, then stop; the rest waits for the next sweep."""
        if not await self.join(within_s):
            log.warning("pg_provisioner.drops.left_for_next_start", queued=len(self._queued))
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _drain(self) -> None:
        while True:
            name = await self._queue.get()
            try:
                await self._drop(name)
            except Exception as exc:  # noqa: BLE001  (a drainer must outlive any one drop)
                log.warning("pg_provisioner.drop.failed", name=name, error=repr(exc))
            finally:
                self._queued.discard(name)
                self._queue.task_done()

    async def _drop(self, name: str) -> None:
        ident = quote_ident(guard_disposable_name(name))
        async with self._admin.acquire() as conn:
            # A template is never dropped; a database retired as one before the delete stopped
            # its tenant making it one would otherwise stay for good.
            with contextlib.suppress(asyncpg.InvalidCatalogNameError):
                await conn.execute(f"ALTER DATABASE {ident} IS_TEMPLATE false")
            await conn.execute(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)")
            await conn.execute(f"DROP ROLE IF EXISTS {ident}")


@dataclass(frozen=True, slots=True)
class Member:
    """A ready pool member and the password it will be handed out with.

    ``verifier``: what the take must set as the role's password; ``None`` when the role has it
    already (every member this process made).
    """

    member_id: UUID
    version: int
    password: str
    verifier: str | None

    @property
    def name(self) -> str:
        """Its role's and database's name on the cluster."""
        return pool_name(self.member_id)


class WarmPool:
    """Members made ahead of time on one cluster, refilled in the background.

    ``ddl_slots`` is the cluster's DDL limit, shared with the driver's cold creates, so refills
    and requests together never run more ``CREATE DATABASE`` at once than it allows.

    ``reserve``: at or below this many ready members, refills start however busy the pool is.
    Takes closer together than ``REFILL_QUIET_S`` (a steady five a second) never leave it quiet,
    and waiting for an empty pool sent each take that came during the refills to a cold
    ``CREATE DATABASE`` (bench/README.md, "The warm pool under a steady trickle").
    """

    def __init__(
        self,
        admin: asyncpg.Pool,
        store: EventStore,
        drops: DropQueue,
        *,
        size: int,
        refill_concurrency: int,
        reserve: int,
        ddl_slots: asyncio.Semaphore,
        server: str,
        make_password: Callable[[], tuple[str, str]],
    ) -> None:
        self._admin = admin
        self._store = store
        self._drops = drops
        self._size = size
        self._refill_concurrency = refill_concurrency
        self._ddl_slots = ddl_slots
        self._server = server
        self._make_password = make_password
        self._ready: deque[Member] = deque()
        self._reserve = min(reserve, size - 1)
        self._filling = 0
        self._wanted = asyncio.Event()
        self._last_take = 0.0
        # Read at each scrape: never stale, and nothing to update on the take path.
        metrics.POOL_AVAILABLE.labels(kind=ResourceKind.POSTGRES.value).set_function(
            lambda: len(self._ready)
        )

    @property
    def ready(self) -> int:
        """How many members can be taken right now."""
        return len(self._ready)

    def members(self) -> list[Member]:
        """The ready members, oldest first."""
        return list(self._ready)

    @property
    def size(self) -> int:
        """How many members the pool keeps ready."""
        return self._size

    async def run(self, reconcile_interval_s: float) -> None:
        """Reconcile, then keep the pool full, reconciling every interval; until cancelled."""
        fills: set[asyncio.Task[None]] = set()
        next_reconcile = 0.0
        try:
            while True:
                if time.monotonic() >= next_reconcile:
                    await self._reconcile_logged()
                    next_reconcile = time.monotonic() + reconcile_interval_s
                wait = refill_wait(
                    len(self._ready), self._reserve, time.monotonic() - self._last_take
                )
                if wait > 0:
                    # Woken by each take, which may leave the pool at its reserve.
                    self._wanted.clear()
                    await set_within(self._wanted, wait)
                    continue
                while (
                    len(self._ready) + self._filling < self._size
                    and self._filling < self._refill_concurrency
                ):
                    self._filling += 1
                    task = asyncio.create_task(self._fill_one())
                    fills.add(task)
                    task.add_done_callback(fills.discard)
                self._wanted.clear()
                await set_within(self._wanted, max(0.0, next_reconcile - time.monotonic()))
        finally:
            for task in fills:
                task.cancel()

    async def wait_filled(self, within_s: float) -> bool:
        """Wait until ``size`` members are ready; False after ``within_s`` (for tests)."""
        deadline = time.monotonic() + within_s
        while len(self._ready) < self._size:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def next_member(self) -> Member | None:
        """The oldest ready member, no longer offered here; ``None`` when the pool is empty.

        The caller takes it by renaming it to its tenant's name, which fails if another replica
        renamed it first; if the rename fails otherwise, it calls ``spoil``.
        """
        if not self._ready:
            return None
        self._last_take = time.monotonic()
        self._wanted.set()
        return self._ready.popleft()

    def give_back(self, member: Member) -> None:
        """Offer a member again, first: its take was refused for a reason not its own."""
        self._ready.appendleft(member)

    async def spoil(self, member: Member, reason: str) -> None:
        """A taken member could not be handed out: record that and drop what is left of it."""
        self._drops.put(member.name)
        with contextlib.suppress(ConcurrencyConflictError):
            await self._append(
                member.member_id,
                member.version,
                PoolMemberDropped(member_id=member.member_id, reason=reason),
                correlation_id="pool-spoil",
            )

    async def _fill_one(self) -> None:
        try:
            await self._create_member()
        except Exception as exc:  # noqa: BLE001  (a refill failure must not end the pool)
            log.warning("pg_provisioner.pool.refill_failed", error=repr(exc))
            await asyncio.sleep(_REFILL_BACKOFF_S)
        finally:
            self._filling -= 1
            self._wanted.set()

    async def _create_member(self) -> None:
        """Make a member whose role already has the password it will be handed out with.

        Setting a SCRAM verifier costs the server 8 ms however it was computed: Postgres checks
        that it is not the verifier of an empty password, which runs the verifier's 4,096
        iterations. Here it is part of the refill's ``CREATE ROLE``, off the request path; the
        role stays ``NOLOGIN``, so the password opens nothing until a take adds ``LOGIN``.
        """
        member_id = uuid.uuid4()
        name = pool_name(member_id)
        ident = quote_ident(name)
        password, verifier = await asyncio.to_thread(self._make_password)
        requested = PoolMemberRequested(
            member_id=member_id, kind=ResourceKind.POSTGRES, server=self._server
        )
        await self._append(member_id, 0, requested, correlation_id="pool-refill")
        try:
            async with self._ddl_slots, self._admin.acquire() as conn:
                await conn.execute(
                    f"CREATE ROLE {ident} NOLOGIN PASSWORD {quote_literal(verifier)}"
                    " NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                )
                await conn.execute(f"CREATE DATABASE {ident} OWNER {ident} STRATEGY wal_log")
                await conn.execute(f"REVOKE ALL ON DATABASE {ident} FROM PUBLIC")
        except BaseException:
            self._drops.put(name)
            with contextlib.suppress(Exception):
                failed = PoolMemberDropped(member_id=member_id, reason="creation failed")
                await self._append(member_id, 1, failed, correlation_id="pool-refill")
            raise
        await self._append(
            member_id, 1, PoolMemberReady(member_id=member_id), correlation_id="pool-refill"
        )
        self._ready.append(Member(member_id=member_id, version=2, password=password, verifier=None))
        metrics.POOL_REFILLS.labels(kind=ResourceKind.POSTGRES.value).inc()

    async def _add_ready(self, member_id: UUID, *, version: int) -> None:
        """Offer a member found on the cluster (reconcile) with a new password.

        Its old password went with the process that made it. The new one is set by the take
        (``verifier``), never here: a member found here may be in another take already (the
        stream read is a moment old), and changing its password under that take would hand
        out credentials that do not work. Such a duplicate loses the rename.
        """
        password, verifier = await asyncio.to_thread(self._make_password)
        self._ready.append(
            Member(member_id=member_id, version=version, password=password, verifier=verifier)
        )

    async def _reconcile_logged(self) -> None:
        try:
            await self.reconcile(RECONCILE_GRACE)
        except Exception as exc:  # noqa: BLE001  (tried again next interval)
            log.warning("pg_provisioner.pool.reconcile_failed", error=repr(exc))

    async def reconcile(self, grace: timedelta) -> dict[str, int]:
        """Make the cluster and the log agree (see the module docstring); counts of what it did."""
        # The cluster first, then the log: a member's Requested is committed before its objects
        # exist, so an object listed here without a stream is truly unknown.
        rows = await self._admin.fetch(_DISPOSABLE_NAMES)
        names = {row["name"] for row in rows}
        known = {member.member_id for member in self._ready}
        now = datetime.now(UTC)
        counts = {"adopted": 0, "dropped": 0, "retired": 0}
        for name in sorted(names):
            if name.startswith(RETIRED_PREFIX):
                self._drops.put(name)
                counts["retired"] += 1
                continue
            member_id = pool_member_id(name)
            if member_id is None or member_id in known:
                continue
            events = await self._store.load(pool_stream(member_id))
            last = events[-1] if events else None
            if last is not None and isinstance(last.event, PoolMemberReady):
                await self._add_ready(member_id, version=last.version)
                counts["adopted"] += 1
            elif last is None or last.recorded_at + grace <= now:
                self._drops.put(name)
                counts["dropped"] += 1
                if last is not None and not isinstance(last.event, PoolMemberDropped):
                    with contextlib.suppress(ConcurrencyConflictError):
                        dropped = PoolMemberDropped(member_id=member_id, reason="orphaned")
                        await self._append(
                            member_id, last.version, dropped, correlation_id="pool-reconcile"
                        )
        if any(counts.values()):
            log.info("pg_provisioner.pool.reconciled", **counts)
        return counts

    async def _append(
        self,
        member_id: UUID,
        expected_version: int,
        event: PoolEvent,
        *,
        correlation_id: str,
    ) -> None:
        await self._store.append(
            pool_stream(member_id),
            expected_version,
            [event],
            command_id=uuid.uuid4(),
            correlation_id=correlation_id,
        )
