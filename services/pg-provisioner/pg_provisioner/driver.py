"""Tenant role + database on the customer Postgres.

Why care: this module drops databases. Every name comes from ``shared.naming.tenant_name`` and
passes ``guard_tenant_name`` before any DROP. Statements run one by one outside transactions
(CREATE/DROP DATABASE cannot run inside one). Passwords reach Postgres only as SCRAM verifiers
computed here, so the plaintext never appears in the server's logs or catalogs.

Quota (docs/backends.md, Postgres): Postgres has none, so the usage sweep measures
``pg_database_size`` above an empty database's (``usage``) and blocks writes in two steps. First
a soft block: the database's sessions start read-only (``default_transaction_read_only``); reads
work and the tenant can clean up. If the database keeps growing to ``HARD_BLOCK_USAGE_FACTOR``
times its quota (the tenant turned read-only off and went on writing), a hard block: the
database accepts no connections at all.

It also revokes, in every database, what would let a tenant list other tenants' roles and
databases (``_HIDDEN_RELATIONS``, ``_HIDDEN_FUNCTIONS``; see
docs/adr/0016-tenant-catalog-visibility.md for what is hidden and what it breaks).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import structlog

from pg_provisioner.pool import DropQueue, Member, WarmPool
from pg_provisioner.sql import quote_ident, quote_literal
from shared.contracts.errors import BackendUnavailableError, ErrorCode, SpinupError
from shared.contracts.kinds import (
    EXPORT_CHUNK_BYTES,
    EXPORT_FORMATS,
    PostgresCredentials,
    PostgresLimits,
    ResourceKind,
)
from shared.lifecycle import Ceiling, Taken
from shared.naming import guard_tenant_name, retired_name, tenant_name, tenant_resource_id
from shared.observability.metrics import USAGE_MEASURED, USAGE_MEASURES, USAGE_STANDING
from shared.postgres.errors import CONNECTION_ERRORS
from shared.postgres.pool import open_pool
from shared.usage_memo import Figures, UsageMemo

if TYPE_CHECKING:
    from uuid import UUID

    from asyncpg.pool import PoolConnectionProxy

    from shared.eventlog.store import EventStore

log = structlog.get_logger("pg_provisioner.driver")
T = TypeVar("T")

SCRAM_ITERATIONS = 4096

#: Each asked database's tuple counters (moved by every insert, update and delete, the catalogs'
#: too, a statistics flush after the commit: at most about 10 s) and whether any session of it is
#: not idle: in a transaction, or vacuuming (ADR 0057).
_DATABASE_FIGURES = (
    "WITH busy AS (SELECT DISTINCT datid FROM pg_stat_activity"
    " WHERE state IS DISTINCT FROM 'idle' AND datid IS NOT NULL)"
    " SELECT d.datname, s.tup_inserted, s.tup_updated, s.tup_deleted,"
    " (b.datid IS NOT NULL) AS busy"
    " FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid"
    " LEFT JOIN busy b ON b.datid = d.oid WHERE d.datname = ANY($1::text[])"
)

#: At this many times its quota an over-quota database stops accepting connections at all.
#: Below it the block is soft (new sessions read-only), which a tenant can undo with one SET,
#: as it must to clean up; growth between sweeps can overshoot the quota somewhat by itself, but
#: reaching double means writes went on past the block on purpose. The hard block stops
#: cleanup too, so it is kept for that case.
HARD_BLOCK_USAGE_FACTOR = 2


#: Catalogs and views a tenant could read every role's or database's name from (or another
#: tenant's sessions, settings, comments, ownership). Roles and databases are cluster-wide, and
#: Postgres keeps no per-row rights on them: these are refused to tenants as a whole. The ACL of
#: a catalog or view lives in each database's own pg_class, shared catalogs included, so every
#: database needs the REVOKE; template1 passes it on to every database created from now on.
_HIDDEN_RELATIONS = (
    "pg_database",  # every database's name, owner, settings
    "pg_roles",  # every role's name
    "pg_user",  # every login role's name
    "pg_group",  # every NOLOGIN role's name (warm-pool members)
    "pg_auth_members",  # who is a member of which role
    "pg_db_role_setting",  # every tenant's settings, a write block among them
    "pg_shdescription",  # comments on other tenants' databases and roles
    "pg_shdepend",  # who owns which database, by oid
    "pg_stat_activity",  # every session's user and database names (no view limits the rows)
    "pg_stat_database",  # every database's name and activity
    "pg_stat_database_conflicts",  # every database's name
    "pg_stat_progress_analyze",  # the database name of every running command of these kinds
    "pg_stat_progress_basebackup",
    "pg_stat_progress_cluster",
    "pg_stat_progress_copy",
    "pg_stat_progress_create_index",
    "pg_stat_progress_vacuum",
    "pg_prepared_xacts",  # owner and database of prepared transactions
    "pg_replication_slots",  # the database of logical slots
)
#: Functions behind those views (a view calls its functions with the caller's rights), and those
#: that turn a database's oid (which ``pg_tablespace_databases`` lists to anyone) into its name.
_HIDDEN_FUNCTIONS = (
    "pg_stat_get_activity(integer)",
    "pg_stat_get_progress_info(text)",
    "pg_prepared_xact()",
    "pg_get_replication_slots()",
    "pg_describe_object(oid, oid, integer)",
    "pg_identify_object(oid, oid, integer)",
    "pg_identify_object_as_address(oid, oid, integer)",
    # Refused for another database, but its error message names it ("permission denied for
    # database t_..."). pg_database_size(name), the one a tenant uses on itself, stays.
    "pg_database_size(oid)",
)
_HIDE_CATALOGS = (
    "REVOKE SELECT ON "
    + ", ".join(f"pg_catalog.{name}" for name in _HIDDEN_RELATIONS)
    + " FROM PUBLIC; REVOKE EXECUTE ON FUNCTION "
    + ", ".join(f"pg_catalog.{name}" for name in _HIDDEN_FUNCTIONS)
    + " FROM PUBLIC"
)
#: True when this database still lets PUBLIC use one of them; then ``_HIDE_CATALOGS`` runs.
_CATALOGS_VISIBLE = (
    "SELECT EXISTS (SELECT FROM unnest($1::text[]) r"
    "   WHERE has_table_privilege('public', 'pg_catalog.' || r, 'SELECT'))"
    " OR EXISTS (SELECT FROM unnest($2::text[]) f"
    "   WHERE has_function_privilege('public', 'pg_catalog.' || f, 'EXECUTE'))"
)
#: Every tenant's role and database name (a tenant has both, or one if cut off midway).
_TENANT_NAMES = (
    "SELECT rolname AS name FROM pg_roles WHERE rolname ~ '^t_[0-9a-f]{32}$'"
    " UNION SELECT datname FROM pg_database WHERE datname ~ '^t_[0-9a-f]{32}$'"
)
#: Tenant and pool databases whose catalogs ``harden`` checks: those that accept connections
#: (retired ones are about to be dropped; a hard-blocked one admits nobody, its tenant included,
#: and is checked at the first start after it is unblocked).
_EXISTING_DATABASES = (
    "SELECT datname FROM pg_database WHERE datallowconn AND datname ~ '^[tp]_[0-9a-f]{32}$'"
)
#: How many existing databases ``harden`` checks at once.
_HARDEN_CONCURRENCY = 4
#: A database that went away (dropped, renamed, blocked) between listing and checking it.
_VANISHED = (
    asyncpg.InvalidCatalogNameError,
    asyncpg.ObjectNotInPrerequisiteStateError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
)
#: A pool member's rename finds it gone: another replica renamed it first, or it was dropped.
_MEMBER_GONE = (asyncpg.InvalidCatalogNameError, asyncpg.UndefinedObjectError)
#: A pool member's rename finds the tenant's database or role there already (a retried create).
_TENANT_EXISTS = (asyncpg.DuplicateDatabaseError, asyncpg.DuplicateObjectError)


#: How long a statement runs before ``cancel_overdue`` looks up its plan's limit: below every
#: plan's ``statement_timeout_ms`` (plans.yaml), so the lookups stay few.
OVERDUE_AFTER_S = 5.0
# Statements running now (not idle in a transaction) for at least $1 seconds, with how long.
_RUNNING_STATEMENTS = """
SELECT pid, usename, (extract(epoch FROM clock_timestamp() - query_start) * 1000)::bigint AS ms
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state = 'active'
  AND query_start < clock_timestamp() - make_interval(secs => $1)
"""
#: How far past its limit a cancelled statement may still run before its session is ended.
TERMINATE_AFTER_S = 15.0
_CANCEL_OR_TERMINATE = """
SELECT (SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM unnest($1::int[]) AS pid)
     + (SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM unnest($2::int[]) AS pid)
"""
#: What a tenant's login counts against: client connections, and the slots not reserved.
_CONNECTION_SLOTS = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS used,
       current_setting('max_connections')::int
       - current_setting('superuser_reserved_connections')::int
       - current_setting('reserved_connections')::int AS slots
"""


class _Adoption(enum.Enum):
    """How a member's rename to its tenant's name ended (``PostgresDriver._adopt``)."""

    TAKEN = "taken"
    GONE = "gone"
    REFUSED = "refused"


def scram_sha256_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The verifier Postgres stores for ``password`` (RFC 7677 / ``pg_authid`` format)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


#: How long ended sessions are waited for; a backend busy in a long C function can take a
#: moment to notice the signal. Most are gone within one poll.
_TERMINATE_WAIT_S = 5.0
_TERMINATE_POLL_S = 0.005


class PostgresDriver:
    """Creates and drops tenant databases through an admin connection pool.

    With a warm pool (``start_pool``) a ``take`` renames a ready member, which ``create`` (a
    ``CREATE DATABASE``) is for when the pool has none. A delete ends the tenant's access at
    once and leaves the ``DROP DATABASE`` to the drop queue.
    """

    kind = ResourceKind.POSTGRES

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        admin_dsn: str,
        public_host: str,
        public_port: int,
        ddl_concurrency: int,
        drop_concurrency: int,
        bin_dir: str = "",
        measures: UsageMemo | None = None,
    ) -> None:
        self._pool = pool
        self._measures = UsageMemo() if measures is None else measures
        self._admin_dsn = admin_dsn
        #: Where pg_dump and pg_restore are (empty: found on PATH); they must be at least the
        #: server's major version.
        self._bin_dir = bin_dir
        self._public_host = public_host
        self._public_port = public_port
        # CREATE DATABASE of requests and of refills alike: wal_log creates stop gaining
        # throughput beyond a few at once per cluster (docs/floors.md).
        self._ddl_slots = asyncio.Semaphore(ddl_concurrency)
        self._drops = DropQueue(pool, concurrency=drop_concurrency)
        self._warm: WarmPool | None = None
        self._warm_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        admin_dsn: str,
        *,
        public_host: str,
        public_port: int,
        pool_size: int,
        ddl_concurrency: int = 4,
        drop_concurrency: int = 2,
        bin_dir: str = "",
        measures: UsageMemo | None = None,
    ) -> PostgresDriver:
        """Open the admin pool and start the drop queue (with what an earlier run left).

        ``measures``: what the usage sweep remembers of its measures (``shared.usage_memo``).
        """
        pool = await open_pool(admin_dsn, size=pool_size)
        driver = cls(
            pool,
            admin_dsn=admin_dsn,
            public_host=public_host,
            public_port=public_port,
            ddl_concurrency=ddl_concurrency,
            drop_concurrency=drop_concurrency,
            bin_dir=bin_dir,
            measures=measures,
        )
        driver._drops.start()
        async with driver._backend_errors("swept"):
            await driver._drops.sweep_retired()
        return driver

    def start_pool(
        self,
        store: EventStore,
        *,
        size: int,
        refill_concurrency: int,
        reserve: int,
        reconcile_interval_s: float,
    ) -> WarmPool:
        """Keep ``size`` members ready from now on (in the background); returns the pool.

        ``reserve``: ``WarmPool``'s (``Settings.pool_reserve``).
        """
        self._warm = WarmPool(
            self._pool,
            store,
            self._drops,
            size=size,
            refill_concurrency=refill_concurrency,
            reserve=reserve,
            ddl_slots=self._ddl_slots,
            server=f"{self._public_host}:{self._public_port}",
            make_password=_new_password,
        )
        self._warm_task = asyncio.create_task(
            self._warm.run(reconcile_interval_s), name="pg-warm-pool"
        )
        return self._warm

    @property
    def warm_pool(self) -> WarmPool | None:
        """The warm pool, once ``start_pool`` made one."""
        return self._warm

    @property
    def drops(self) -> DropQueue:
        """Retired and spoiled objects waiting to be dropped."""
        return self._drops

    async def close(self, *, drain_timeout: float = 10.0) -> None:
        """Stop refilling, drop what is queued (within ``drain_timeout``), close the admin pool."""
        if self._warm_task is not None:
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_task
        await self._drops.close(drain_timeout)
        await self._pool.close()

    async def _run(
        self,
        action: str,
        operation: Callable[[PoolConnectionProxy[asyncpg.Record]], Awaitable[T]],
    ) -> T:
        """Run ``operation`` on an admin connection, once more if the connection was stale.

        A restarted server leaves dead connections in the pool; every operation here is
        idempotent, so one retry on a fresh connection is safe.
        """
        async with self._backend_errors(action):
            try:
                async with self._pool.acquire() as conn:
                    return await operation(conn)
            except CONNECTION_ERRORS:
                log.info("pg_provisioner.connection.retried", action=action)
                async with self._pool.acquire() as conn:
                    return await operation(conn)

    @contextlib.asynccontextmanager
    async def _backend_errors(self, action: str) -> AsyncIterator[None]:
        try:
            yield
        except CONNECTION_ERRORS as exc:
            msg = f"The Postgres server for tenant databases is unreachable; nothing was {action}."
            raise BackendUnavailableError(msg) from exc
        except asyncpg.PostgresError as exc:
            log.warning("pg_provisioner.backend.refused", sqlstate=exc.sqlstate, action=action)
            msg = f"Postgres refused the operation (SQLSTATE {exc.sqlstate}); nothing was {action}."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True) from exc

    async def harden(self) -> None:
        """Cluster hardening, at every start (idempotent).

        Tenants cannot enter the maintenance databases, and no tenant database lists other
        roles or databases (``_HIDDEN_RELATIONS``, ``_HIDDEN_FUNCTIONS``): template1 passes that
        on to every database and pool member created from it, and databases made before this
        version get it here. A database already hardened costs one query, no write.
        """
        async with self._backend_errors("changed"):
            await self._pool.execute(
                "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;"
                " REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC"
            )
            # ACLs on shared catalogs are per database: revoke inside each database, template1
            # first so every new one inherits it (docs/backends.md, Postgres).
            await self._hide_catalogs("template1")
            names = [row["datname"] for row in await self._pool.fetch(_EXISTING_DATABASES)]
            slots = asyncio.Semaphore(_HARDEN_CONCURRENCY)

            async def harden_existing(database: str) -> bool:
                async with slots:
                    try:
                        return await self._hide_catalogs(database)
                    except _VANISHED:
                        # Dropped or renamed by another replica meanwhile: a new database gets
                        # the hardening from template1, a renamed one keeps its own.
                        log.info("pg_provisioner.harden.skipped", database=database)
                        return False

            changed = await asyncio.gather(*(harden_existing(name) for name in names))
            log.info("pg_provisioner.cluster.hardened", databases=len(names), changed=sum(changed))

    async def _hide_catalogs(self, database: str) -> bool:
        """Revoke ``_HIDE_CATALOGS`` in ``database`` unless done already; True if it was not."""
        # A soft-blocked database starts every session read-only, the admin's too.
        conn = await asyncpg.connect(
            self._admin_dsn,
            database=database,
            server_settings={"default_transaction_read_only": "off"},
        )
        try:
            if not await conn.fetchval(
                _CATALOGS_VISIBLE, list(_HIDDEN_RELATIONS), list(_HIDDEN_FUNCTIONS)
            ):
                return False
            await conn.execute(_HIDE_CATALOGS)
            return True
        finally:
            await conn.close()

    async def create(self, resource_id: UUID, limits: PostgresLimits) -> PostgresCredentials:
        """Create (or reset) the tenant role and database with ``CREATE DATABASE``.

        The warm pool is ``take``'s: the lifecycle takes first and creates only when nothing
        was taken (``PooledCreate``), so a create never looks at the pool twice.
        """
        return await self._create_cold(resource_id, limits)

    async def take(self, resource_id: UUID, limits: PostgresLimits) -> Taken | None:
        """The tenant made from a warm member renamed to its name; None when none was left.

        Nothing is recorded before the rename: replicas sharing the cluster may offer the same
        member (each reconcile adopts every ready one it finds), and only one rename of it can
        succeed. A replica whose rename finds the member gone moves on to the next one.
        """
        if self._warm is None:
            return None
        name = tenant_name(resource_id)
        while (member := self._warm.next_member()) is not None:
            adoption = await self._adopt(member, name, limits)
            if adoption is _Adoption.TAKEN:
                return Taken(self._credentials(name, member.password), member.member_id)
            if adoption is _Adoption.REFUSED:
                return None
        return None

    async def _create_cold(self, resource_id: UUID, limits: PostgresLimits) -> PostgresCredentials:
        """``CREATE ROLE`` and ``CREATE DATABASE``, or reset what an earlier try made."""
        name = tenant_name(resource_id)
        password, verifier = await asyncio.to_thread(_new_password)
        role, pw = quote_ident(name), quote_literal(verifier)

        async def make(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                await conn.execute(f"ALTER ROLE {role} LOGIN PASSWORD {pw}")
            else:
                await conn.execute(
                    f"CREATE ROLE {role} LOGIN PASSWORD {pw}"
                    " NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                )
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                async with self._ddl_slots:
                    await conn.execute(f"CREATE DATABASE {role} OWNER {role} STRATEGY wal_log")
            await _apply_limits(conn, role, limits)
            await conn.execute(f"REVOKE ALL ON DATABASE {role} FROM PUBLIC")

        await self._run("created", make)
        return self._credentials(name, password)

    async def fork(
        self, resource_id: UUID, limits: PostgresLimits, source_id: UUID, *, deadline: float
    ) -> PostgresCredentials:
        """A new tenant (as ``create``) holding a copy of the source tenant's database.

        ``pg_dump`` of the source, as the admin (a tenant cannot dump itself, ADR 0016), piped
        into ``pg_restore`` connected as the new tenant: the copy's objects are the new role's,
        and nothing in the dump runs with more than the new tenant's rights. The source is only
        read (``ACCESS SHARE`` locks while the dump runs; its sessions and writes go on). One
        transaction on the new side: a failed copy leaves it empty, and the lifecycle deletes it.
        """
        source = guard_tenant_name(tenant_name(source_id))
        credentials = await self.create(resource_id, limits)
        await self._copy(source, credentials, deadline)
        log.info("pg_provisioner.database.forked", database=credentials.database, source=source)
        return credentials

    async def _copy(self, source: str, target: PostgresCredentials, deadline: float) -> None:
        """Pipe ``pg_dump`` of ``source`` into ``pg_restore`` on ``target`` by ``deadline``."""
        admin = _libpq_env(self._admin_dsn, database=source)
        # The tenant logs in where the admin does (pg_hba ``sameuser``), with its own password.
        tenant = _libpq_env(
            self._admin_dsn,
            database=target.database,
            user=target.username,
            password=target.password,
        )
        read_end, write_end = os.pipe()
        processes: list[asyncio.subprocess.Process] = []
        try:
            try:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        self._tool("pg_dump"),
                        *_DUMP_OPTIONS,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=write_end,
                        stderr=asyncio.subprocess.PIPE,
                        env=admin,
                    )
                )
                processes.append(
                    await asyncio.create_subprocess_exec(
                        self._tool("pg_restore"),
                        *_RESTORE_OPTIONS,
                        # pg_restore insists on the option; a tenant name is never a conninfo.
                        f"--dbname={target.database}",
                        stdin=read_end,
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.PIPE,
                        env=tenant,
                    )
                )
            finally:
                # The children hold their own ends: the restore sees EOF when the dump exits.
                os.close(read_end)
                os.close(write_end)
            # ``deadline`` is wall-clock (Unix seconds), the loop's clock is monotonic.
            async with asyncio.timeout(max(deadline - time.time(), 0.0)):
                outcomes = await asyncio.gather(*(p.communicate() for p in processes))
        except FileNotFoundError as exc:
            log.error("pg_provisioner.fork.tool_missing", tool=exc.filename)  # noqa: TRY400
            msg = "This server cannot copy databases right now (pg_dump missing); nothing was kept."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg) from exc
        except TimeoutError as exc:
            msg = "Copying the database took longer than allowed; nothing was kept."
            raise SpinupError(ErrorCode.DEADLINE_EXCEEDED, msg, retryable=True) from exc
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        failed = [
            (tool, err.decode(errors="replace")[-2000:])
            for tool, process, (_, err) in zip(
                ("pg_dump", "pg_restore"), processes, outcomes, strict=True
            )
            if process.returncode != 0
        ]
        if failed:
            for tool, err in failed:
                log.warning("pg_provisioner.fork.failed", tool=tool, source=source, stderr=err)
            msg = (
                "The database could not be copied (an object the new database cannot hold, or a"
                " table locked by its owner); nothing was kept. Try again."
            )
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)

    def _tool(self, name: str) -> str:
        return str(Path(self._bin_dir) / name) if self._bin_dir else name

    # -- export and suspend (docs/adr/0030) ----------------------------------------------------

    async def suspend(self, resource_id: UUID) -> None:
        """At expiry: the role can no longer log in and its sessions are ended; data stays.

        ``NOLOGIN`` keeps the password, so ``delete`` retires the role as usual afterwards. The
        admin still connects, so ``export`` works. A missing role is not an error.
        """
        name = guard_tenant_name(tenant_name(resource_id))

        async def stop(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                return
            await conn.execute(f"ALTER ROLE {quote_ident(name)} NOLOGIN")
            # After the commit above nobody logs in again; end whoever is still in.
            await _terminate_sessions(conn, name)

        await self._run("suspended", stop)

    async def export(self, resource_id: UUID, fmt: str) -> AsyncIterator[bytes]:
        """``pg_dump`` of the tenant's database as the admin, in ``custom`` or plain ``sql``.

        The fork's dump options (``_DUMP_OPTIONS``: no owners, grants or cluster objects, so
        ``pg_restore``/``psql`` restore it as any role). Read from the pipe a chunk at a time:
        memory is one chunk whatever the size. Closing the generator early kills the dump.
        """
        if fmt not in {f.name for f in EXPORT_FORMATS[ResourceKind.POSTGRES]}:
            msg = "Postgres exports as custom (pg_dump -Fc) or sql (plain SQL)."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        name = guard_tenant_name(tenant_name(resource_id))
        if not await self.exists(resource_id):
            raise _missing(resource_id)
        options = [
            option
            for option in _DUMP_OPTIONS
            if fmt == "custom" or not option.startswith(("--format", "--compress"))
        ]
        if fmt == "sql":
            options.append("--format=plain")
        try:
            process = await asyncio.create_subprocess_exec(
                self._tool("pg_dump"),
                *options,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_libpq_env(self._admin_dsn, database=name),
                limit=EXPORT_CHUNK_BYTES,
            )
        except FileNotFoundError as exc:
            log.error("pg_provisioner.export.tool_missing", tool=exc.filename)  # noqa: TRY400
            msg = "This server cannot export databases right now (pg_dump missing)."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg) from exc
        stderr = asyncio.create_task(_tail(process.stderr))
        try:
            async for chunk in _chunks(process.stdout):
                yield chunk
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
                log.info("pg_provisioner.export.aborted", database=name)
            err = await stderr
        if process.returncode != 0:
            log.warning("pg_provisioner.export.failed", database=name, stderr=err)
            msg = (
                "The database could not be exported (a table locked by its owner, or the"
                " database is over twice its quota); try again."
            )
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)

    async def _adopt(self, member: Member, name: str, limits: PostgresLimits) -> _Adoption:
        """Rename a member to ``name``, let it log in, give it ``limits``: one transaction.

        A member this process made has its password already (``WarmPool``): setting a SCRAM
        verifier costs the server 8 ms (bench/README.md), so only one found after a restart
        gets it here.

        ``GONE`` when the member no longer exists under its pool name: another replica renamed
        it first, or a drop removed it. ``REFUSED`` when Postgres refuses: the tenant name exists
        already (a retried create, which the cold path resets), and the member, untouched by the
        rolled-back transaction, is offered again; on any other refusal it is spoiled.
        """
        pooled, tenant = quote_ident(member.name), quote_ident(name)
        password = f" PASSWORD {quote_literal(member.verifier)}" if member.verifier else ""
        # One simple-protocol query is one implicit transaction: all of it or none, one commit.
        statements = (
            f"ALTER DATABASE {pooled} RENAME TO {tenant};"
            f" ALTER ROLE {pooled} RENAME TO {tenant};"
            f" ALTER ROLE {tenant} LOGIN{password};"
            f" {_limits_sql(tenant, limits)}"
        )
        try:
            async with self._backend_errors("created"):
                try:
                    async with self._pool.acquire() as conn:
                        await conn.execute(statements)
                except _MEMBER_GONE:
                    return _Adoption.GONE
                except _TENANT_EXISTS:
                    if self._warm is not None:
                        self._warm.give_back(member)
                    return _Adoption.REFUSED
        except SpinupError as exc:
            await self._warm_spoil(member, f"adoption failed: {exc.message}")
            if exc.code is ErrorCode.BACKEND_UNAVAILABLE:
                raise
            return _Adoption.REFUSED
        return _Adoption.TAKEN

    async def _warm_spoil(self, member: Member, reason: str) -> None:
        if self._warm is not None:
            await self._warm.spoil(member, reason)

    async def delete(self, resource_id: UUID) -> None:
        """End the tenant's access now; drop its database and role soon after.

        Before this returns the role can no longer log in, its sessions are ended, and role and
        database carry a retired name nobody can log in with; the drop queue drops them, off
        the request path (``DROP DATABASE`` forces a checkpoint). Missing ones are fine.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        ident = quote_ident(name)

        async def retire(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
            row = await conn.fetchrow(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS role,"
                " EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS database",
                name,
            )
            has_role, has_database = bool(row and row["role"]), bool(row and row["database"])
            if not has_role and not has_database:
                return
            shut = []
            if has_role:
                shut.append(f"ALTER ROLE {ident} NOLOGIN PASSWORD NULL")
            if has_database:
                # A tenant owns its database, so it may have made it a template, which no DROP
                # DATABASE removes: it would outlive the delete, data and all.
                shut.append(
                    f"ALTER DATABASE {ident} WITH ALLOW_CONNECTIONS false IS_TEMPLATE false"
                )
            await conn.execute("; ".join(shut))
            # After the commit above nobody gets in again; end whoever is still in.
            await _terminate_sessions(conn, name)
            retired = retired_name()
            renames = []
            if has_database:
                renames.append(f"ALTER DATABASE {ident} RENAME TO {quote_ident(retired)}")
            if has_role:
                renames.append(f"ALTER ROLE {ident} RENAME TO {quote_ident(retired)}")
            try:
                await conn.execute("; ".join(renames))
            except asyncpg.ObjectInUseError:
                # A session outlived the wait: drop here and now, forcing it out.
                await conn.execute(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)")
                await conn.execute(f"DROP ROLE IF EXISTS {ident}")
                return
            self._drops.put(retired)

        await self._run("deleted", retire)

    async def set_limits(self, resource_id: UUID, limits: PostgresLimits) -> None:
        """Bring the role and database to ``limits``, through the same statements as ``create``.

        Connection limit, statement timeout and temp file limit change; password, data and
        open sessions stay (the new settings apply to sessions opened from now on). A write
        block in force stays in force.

        Raises:
            SpinupError: NOT_FOUND when the role or the database is missing.
        """
        name = guard_tenant_name(tenant_name(resource_id))

        async def change(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)"
                " AND EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                name,
            ):
                raise _missing(resource_id)
            await _apply_limits(conn, quote_ident(name), limits)

        await self._run("changed", change)

    async def rotate(
        self,
        resource_id: UUID,
        limits: PostgresLimits,  # noqa: ARG002  (a new password changes no limit)
    ) -> PostgresCredentials:
        """Give the role a new password and end its open sessions; return the new credentials.

        The old password fails from the moment ``ALTER ROLE`` commits; sessions it opened
        before are terminated (and waited for). Host, port, database and user stay the same. A
        write block lives in the database's settings, so it stays in force.

        Raises:
            SpinupError: NOT_FOUND when the role is missing.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        password, verifier = await asyncio.to_thread(_new_password)

        async def change(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                raise _missing(resource_id)
            await conn.execute(f"ALTER ROLE {quote_ident(name)} PASSWORD {quote_literal(verifier)}")
            # Terminate after the commit above: a session logging in from here on needs the
            # new password, so nothing opened with the old one outlives this call.
            await _terminate_sessions(conn, name)

        await self._run("rotated", change)
        return self._credentials(name, password)

    def _credentials(self, name: str, password: str) -> PostgresCredentials:
        url = f"postgresql://{name}:{password}@{self._public_host}:{self._public_port}/{name}"
        return PostgresCredentials(
            connection_url=url,
            host=self._public_host,
            port=self._public_port,
            database=name,
            username=name,
            password=password,
        )

    async def usage(
        self,
        resource_ids: Sequence[UUID],
        *,
        sweep_id: UUID | None = None,  # noqa: ARG002 (one measure serves any page)
    ) -> dict[UUID, int]:
        """What each asked database holds above an empty one; missing ones left out.

        ``pg_database_size`` less ``template1``'s, which every tenant database is copied from
        (ADR 0025): the catalogs of an empty database take ~7.5 MB, which would otherwise be
        three quarters of the anonymous tier's 10 MB before the tenant wrote a row. Tenants
        cannot connect to template1, so they cannot move the baseline.

        Only the databases whose figures may have moved are measured (ADR 0057): one query reads
        every asked database's tuple counters and whether a session of it is in a transaction
        (``_DATABASE_FIGURES``); the others keep their last measure. A database with a session
        in a transaction is always measured: an uncommitted transaction's writes grow its files
        before its counters show them.
        """
        by_name = {guard_tenant_name(tenant_name(rid)): rid for rid in resource_ids}

        async def measure(conn: PoolConnectionProxy[asyncpg.Record]) -> dict[UUID, int]:
            usage: dict[UUID, int] = {}
            stale: dict[str, Figures] = {}
            found = await conn.fetch(_DATABASE_FIGURES, list(by_name))
            for row in found:
                name = row["datname"]
                figures = (row["tup_inserted"], row["tup_updated"], row["tup_deleted"], row["busy"])
                standing = None if row["busy"] else self._measures.standing(name, figures)
                if standing is None:
                    stale[name] = figures
                else:
                    usage[by_name[name]] = standing
            USAGE_MEASURES.labels(self.kind.value, USAGE_STANDING).inc(len(usage))
            USAGE_MEASURES.labels(self.kind.value, USAGE_MEASURED).inc(len(stale))
            if stale:
                # template1's size in an uncorrelated subquery (an InitPlan) is measured once per
                # call. Written inline, this volatile function walked template1 again per row.
                rows = await conn.fetch(
                    "SELECT datname,"
                    " greatest(pg_database_size(oid) - (SELECT pg_database_size('template1')), 0)"
                    " AS size FROM pg_database WHERE datname = ANY($1::text[])",
                    list(stale),
                )
                for row in rows:
                    name = row["datname"]
                    self._measures.measured(name, stale[name], row["size"])
                    usage[by_name[name]] = row["size"]
            for name in by_name.keys() - {row["datname"] for row in found}:
                self._measures.forget(name)
            return usage

        return await self._run("measured", measure)

    async def block_writes(self, resource_id: UUID, *, usage: int, quota: int) -> None:
        """Over quota: sessions of the database start read-only; far over, it refuses sessions.

        Soft block (usage below ``HARD_BLOCK_USAGE_FACTOR`` times ``quota``): the database's
        ``default_transaction_read_only`` is turned on and its sessions are ended, so every
        session from then on starts read-only. INSERT, UPDATE, CREATE … fail with "cannot
        execute … in a read-only transaction"; SELECT works. To clean up, the tenant runs
        ``SET default_transaction_read_only = off`` in its session as a statement of its own
        (it applies from the next transaction on; or ``BEGIN READ WRITE`` per transaction),
        then DELETE / TRUNCATE / DROP. Only TRUNCATE, DROP and VACUUM FULL give space back to
        the measured size; DELETE alone leaves the table's files as large as before. The soft
        block is advisory: a client can also turn it off in its connection options or, as the
        database's owner, RESET it (the next sweep pass finds it gone, sets it again and ends
        the sessions again). What enforces the quota is the hard block below.

        Hard block (usage at or past that factor, i.e. writes went on past the soft block):
        the database also stops accepting connections (``ALLOW_CONNECTIONS false``) and its
        sessions are ended. The role's own connection limit is left alone, so ``allow_writes``
        needs nothing else to restore. A later call with usage back below the factor (a larger
        quota) lifts the hard block and keeps the soft one.

        Idempotent: sessions are ended only when a block is newly applied, so a tenant cleaning
        up is not cut off by every sweep pass. A missing database is left alone.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        database = quote_ident(name)
        hard = usage >= HARD_BLOCK_USAGE_FACTOR * quota

        async def block(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
            state = await _write_block_state(conn, name)
            if state is None:
                return
            read_only, allows_connections = state
            tightened = False
            if not read_only:
                await conn.execute(
                    f"ALTER DATABASE {database} SET default_transaction_read_only = on"
                )
                tightened = True
            if hard and allows_connections:
                await conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
                tightened = True
            elif not hard and not allows_connections:
                await conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
            if tightened:
                ended = await _terminate_sessions(conn, name)
                log.info("pg_provisioner.writes.blocked", database=name, hard=hard, ended=ended)

        await self._run("blocked", block)

    async def allow_writes(self, resource_id: UUID) -> None:
        """Undo ``block_writes``: writable sessions and connections again.

        Sessions opened during the soft block are ended once, because they started read-only
        and would stay so; clients reconnect to writable ones. Idempotent; a database never
        blocked, or missing, is left alone.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        database = quote_ident(name)

        async def allow(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
            state = await _write_block_state(conn, name)
            if state is None:
                return
            read_only, allows_connections = state
            if not allows_connections:
                await conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
            if read_only:
                await conn.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
                ended = await _terminate_sessions(conn, name)
                log.info("pg_provisioner.writes.allowed", database=name, ended=ended)

        await self._run("unblocked", allow)

    async def capacity(self) -> dict[Ceiling, tuple[int, int]]:
        """Client connections against the slots a tenant's login may take.

        ``max_connections`` less those reserved for superusers and for
        ``pg_use_reserved_connections``; past it every tenant's login is refused.
        """

        async def look(conn: PoolConnectionProxy[asyncpg.Record]) -> tuple[int, int]:
            used, slots = await conn.fetchrow(_CONNECTION_SLOTS) or (0, 0)
            return int(used), int(slots)

        return {Ceiling.CONNECTIONS: await self._run("checked", look)}

    async def cancel_overdue(
        self, limits_of: Callable[[set[UUID]], Awaitable[dict[UUID, int]]]
    ) -> int:
        """Cancel every tenant statement running past its plan's ``statement_timeout_ms``.

        The role's ``statement_timeout`` is only its sessions' default: a tenant may ``SET`` it,
        or ``ALTER ROLE current_user SET`` it, to 0. So the plan's limit is also kept from
        outside: statements running ``OVERDUE_AFTER_S`` or longer are looked up, their limits
        asked of ``limits_of`` (resource id -> ms, from the platform's record, which a tenant
        cannot change), and those past theirs are cancelled as the timeout would have
        (``pg_cancel_backend``: the statement fails, the session stays). A statement still
        running ``TERMINATE_AFTER_S`` past its limit caught the cancel (a PL/pgSQL handler for
        ``query_canceled`` can): its session is ended (``pg_terminate_backend``). How many
        statements were cancelled or ended.
        """

        async def running(conn: PoolConnectionProxy[asyncpg.Record]) -> list[asyncpg.Record]:
            return await conn.fetch(_RUNNING_STATEMENTS, OVERDUE_AFTER_S)

        statements = [
            (row["pid"], rid, row["ms"])
            for row in await self._run("checked", running)
            if (rid := tenant_resource_id(row["usename"])) is not None
        ]
        if not statements:
            return 0
        limits = await limits_of({rid for _, rid, _ in statements})
        overdue = [(pid, ms - limits[rid]) for pid, rid, ms in statements if rid in limits]
        cancel = [pid for pid, past_ms in overdue if 0 < past_ms <= TERMINATE_AFTER_S * 1000]
        terminate = [pid for pid, past_ms in overdue if past_ms > TERMINATE_AFTER_S * 1000]
        if not cancel and not terminate:
            return 0

        async def end(conn: PoolConnectionProxy[asyncpg.Record]) -> int:
            return int(await conn.fetchval(_CANCEL_OR_TERMINATE, cancel, terminate))

        ended = await self._run("cancelled", end)
        log.warning(
            "pg_provisioner.statements.cancelled", cancelled=len(cancel), terminated=len(terminate)
        )
        return ended

    async def exists(self, resource_id: UUID) -> bool:
        """Whether the role or the database of this resource exists (for sweeps and tests)."""
        name = tenant_name(resource_id)

        async def look(conn: PoolConnectionProxy[asyncpg.Record]) -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)"
                    " OR EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                    name,
                )
            )

        return await self._run("checked", look)

    async def tenants(self) -> set[UUID]:
        """Every resource with a role or a database here (``ResourceLifecycle.reconcile``).

        Retired ones (``delete``: renamed out of the way, waiting for the drop queue) and warm
        pool members have other names and are not listed.
        """

        async def listed(conn: PoolConnectionProxy[asyncpg.Record]) -> set[UUID]:
            rows = await conn.fetch(_TENANT_NAMES)
            return {rid for rid in (tenant_resource_id(r["name"]) for r in rows) if rid is not None}

        return await self._run("listed", listed)


#: pg_dump of a tenant database: custom format (pg_restore reads it from a pipe), no owners or
#: grants (they name the source role), nothing cluster-level. Uncompressed: it only crosses a
#: pipe. A table its owner holds locked makes the dump fail after a few seconds, not queue.
_DUMP_OPTIONS = (
    "--format=custom",
    "--compress=0",
    "--no-owner",
    "--no-acl",
    "--no-publications",
    "--no-subscriptions",
    "--no-security-labels",
    "--no-tablespaces",
    "--lock-wait-timeout=5000",
)
#: pg_restore into the new database, as its tenant, all or nothing.
_RESTORE_OPTIONS = (
    "--no-owner",
    "--no-acl",
    "--no-publications",
    "--no-subscriptions",
    "--no-security-labels",
    "--no-tablespaces",
    "--single-transaction",
    "--exit-on-error",
)


async def _chunks(stream: asyncio.StreamReader | None) -> AsyncIterator[bytes]:
    """The stream's bytes in pieces of ``EXPORT_CHUNK_BYTES`` (the last one shorter)."""
    if stream is None:  # pragma: no cover  (stdout=PIPE always gives one)
        return
    buffer = bytearray()
    while piece := await stream.read(EXPORT_CHUNK_BYTES - len(buffer)):
        buffer += piece
        if len(buffer) >= EXPORT_CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


async def _tail(stream: asyncio.StreamReader | None, keep: int = 2000) -> str:
    """Read ``stream`` to its end (a full pipe would block the tool), keeping its last bytes."""
    kept = b""
    while stream is not None and (piece := await stream.read(65536)):
        kept = (kept + piece)[-keep:]
    return kept.decode(errors="replace")


def _libpq_env(
    dsn: str, *, database: str, user: str | None = None, password: str | None = None
) -> dict[str, str]:
    """The environment a libpq tool needs to reach ``database`` on the server of ``dsn``.

    Credentials go through the environment, never the command line (which ``ps`` shows).
    """
    parts = urlsplit(dsn)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGHOST": parts.hostname or "localhost",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": user or unquote(parts.username or "postgres"),
        "PGPASSWORD": password if password is not None else unquote(parts.password or ""),
        "PGDATABASE": database,
        "PGAPPNAME": "spinup-fork",
        "PGCONNECT_TIMEOUT": "5",
    }
    if sslmode := parse_qs(parts.query).get("sslmode"):
        env["PGSSLMODE"] = sslmode[0]
    return env


def _new_password() -> tuple[str, str]:
    """A fresh password and its SCRAM verifier (3.5 ms of CPU: call it off the event loop)."""
    password = secrets.token_urlsafe(24)
    return password, scram_sha256_verifier(password)


def _limits_sql(role: str, limits: PostgresLimits) -> str:
    """The statements that set every limit Postgres enforces itself on role and database.

    ``role`` is the quoted name of both. A write block lives in other settings and stays.
    """
    return (
        f"ALTER ROLE {role} CONNECTION LIMIT {limits.connections};"
        f" ALTER ROLE {role} SET statement_timeout = {limits.statement_timeout_ms};"
        f" ALTER ROLE {role} SET temp_file_limit = '{limits.temp_file_limit_mb}MB';"
        f" ALTER DATABASE {role} CONNECTION LIMIT {limits.connections}"
    )


async def _apply_limits(
    conn: PoolConnectionProxy[asyncpg.Record], role: str, limits: PostgresLimits
) -> None:
    """Set every limit Postgres enforces itself on the tenant's role and database."""
    await conn.execute(_limits_sql(role, limits))


async def _terminate_sessions(conn: PoolConnectionProxy[asyncpg.Record], name: str) -> int:
    """End every session of the tenant (its role, or in its database); return how many.

    Signals them all at once, then waits (up to ``_TERMINATE_WAIT_S``) until they are gone, so
    a caller that returns afterwards knows they are ended rather than signalled.
    ``pg_terminate_backend(pid, timeout)`` would wait too, but one session at a time, each in
    steps of 100 ms.
    """
    # MATERIALIZED: the WHERE is settled before any signal is sent, whatever the planner does.
    ended: list[int] = await conn.fetchval(
        "WITH tenant AS MATERIALIZED (SELECT pid FROM pg_stat_activity"
        "   WHERE (usename = $1 OR datname = $1) AND pid <> pg_backend_pid())"
        " SELECT coalesce(array_agg(pid) FILTER (WHERE pg_terminate_backend(pid)), '{}')"
        " FROM tenant",
        name,
    )
    deadline = time.monotonic() + _TERMINATE_WAIT_S
    while ended and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1::int[]))", ended
    ):
        if time.monotonic() > deadline:
            # Signalled all the same; the server ends it once it reaches an interrupt check.
            log.warning("pg_provisioner.sessions.slow_to_end", role=name)
            break
        await asyncio.sleep(_TERMINATE_POLL_S)
    return len(ended)


async def _write_block_state(
    conn: PoolConnectionProxy[asyncpg.Record], name: str
) -> tuple[bool, bool] | None:
    """(sessions start read-only, connections allowed) of the database; ``None`` if missing."""
    row = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s WHERE s.setdatabase = d.oid"
        "   AND s.setrole = 0 AND 'default_transaction_read_only=on' = ANY (s.setconfig))"
        " AS read_only, d.datallowconn AS allows_connections"
        " FROM pg_database d WHERE d.datname = $1",
        name,
    )
    if row is None:
        return None
    return bool(row["read_only"]), bool(row["allows_connections"])


def _missing(resource_id: UUID) -> SpinupError:
    return SpinupError(
        ErrorCode.NOT_FOUND,
        f"The database {resource_id} does not exist on the Postgres server; it may have been"
        " deleted.",
    )
