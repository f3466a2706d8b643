"""Tenant role + database on the customer Postgres.

Why care: this module drops databases. Every name comes from ``shared.naming.tenant_name`` and
passes ``guard_tenant_name`` before any DROP. Statements run one by one outside transactions
(CREATE/DROP DATABASE cannot run inside one). Passwords reach Postgres only as SCRAM verifiers
computed here, so the plaintext never appears in the server's logs or catalogs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import asyncpg
import structlog

from shared.contracts.errors import BackendUnavailableError, ErrorCode, SpinupError
from shared.contracts.kinds import PostgresCredentials, PostgresLimits, ResourceKind
from shared.naming import guard_tenant_name, tenant_name
from shared.pgerrors import CONNECTION_ERRORS

if TYPE_CHECKING:
    from uuid import UUID

    from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger("pg_provisioner.driver")
T = TypeVar("T")

SCRAM_ITERATIONS = 4096


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


def _ident(name: str) -> str:
    # Names are tenant names (checked by regex) or fixed words; quote anyway.
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PostgresDriver:
    """Creates and drops tenant databases through an admin connection pool."""

    kind = ResourceKind.POSTGRES

    def __init__(
        self, pool: asyncpg.Pool, *, admin_dsn: str, public_host: str, public_port: int
    ) -> None:
        self._pool = pool
        self._admin_dsn = admin_dsn
        self._public_host = public_host
        self._public_port = public_port

    @classmethod
    async def connect(
        cls, admin_dsn: str, *, public_host: str, public_port: int, pool_size: int
    ) -> PostgresDriver:
        """Open the admin pool."""
        pool = await asyncpg.create_pool(admin_dsn, min_size=1, max_size=pool_size)
        return cls(pool, admin_dsn=admin_dsn, public_host=public_host, public_port=public_port)

    async def close(self) -> None:
        """Close the admin pool."""
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
        """One-time cluster hardening (idempotent).

        Tenants cannot enter the maintenance databases, and databases cloned from template1
        hide the list of other databases.
        """
        async with self._backend_errors("changed"):
            await self._pool.execute(
                "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;"
                " REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC"
            )
            # ACLs on shared catalogs are per database: revoke inside template1 so every new
            # database inherits it (research/backends.md, "Hide pg_database").
            conn = await asyncpg.connect(self._admin_dsn, database="template1")
            try:
                await conn.execute("REVOKE SELECT ON pg_catalog.pg_database FROM PUBLIC")
            finally:
                await conn.close()

    async def create(self, resource_id: UUID, limits: PostgresLimits) -> PostgresCredentials:
        """Create (or reset) the tenant role and database; return fresh credentials."""
        name = tenant_name(resource_id)
        password = secrets.token_urlsafe(24)
        verifier = await asyncio.to_thread(scram_sha256_verifier, password)
        role, pw = _ident(name), _literal(verifier)

        async def make(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                await conn.execute(
                    f"ALTER ROLE {role} LOGIN PASSWORD {pw} CONNECTION LIMIT {limits.connections}"
                )
            else:
                await conn.execute(
                    f"CREATE ROLE {role} LOGIN PASSWORD {pw} CONNECTION LIMIT {limits.connections}"
                    " NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                )
            await conn.execute(
                f"ALTER ROLE {role} SET statement_timeout = {limits.statement_timeout_ms};"
                f" ALTER ROLE {role} SET temp_file_limit = '{limits.temp_file_limit_mb}MB'"
            )
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(
                    f"CREATE DATABASE {role} OWNER {role} STRATEGY wal_log"
                    f" CONNECTION LIMIT {limits.connections}"
                )
            await conn.execute(f"REVOKE ALL ON DATABASE {role} FROM PUBLIC")

        await self._run("created", make)
        url = f"postgresql://{name}:{password}@{self._public_host}:{self._public_port}/{name}"
        return PostgresCredentials(
            connection_url=url,
            host=self._public_host,
            port=self._public_port,
            database=name,
            username=name,
            password=password,
        )

    async def delete(self, resource_id: UUID) -> None:
        """Drop the database (terminating its sessions) and the role; missing ones are fine."""
        name = _ident(guard_tenant_name(tenant_name(resource_id)))

        async def drop(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await conn.execute(f"DROP ROLE IF EXISTS {name}")

        await self._run("deleted", drop)

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
