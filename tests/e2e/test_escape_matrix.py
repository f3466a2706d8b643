"""The escape matrix: a tenant trying every way out of its own resource, one row per attempt.

Each row is something tenant A does with its own credentials against tenant B or the server;
every one must be refused by the backend itself. The rows of the other kinds live beside their
kind's fixtures and are the same kind of matrix (one parametrised test, one row per attempt):

- Redis: ``tests/e2e/test_cache.py`` ``ESCAPES`` (keys, KEYS, SCAN, CONFIG, MODULE, DEBUG,
  PUBSUB CHANNELS, ACL, CLIENT LIST/KILL, EVAL, FUNCTION, ...) and the channel/pattern test.
- MongoDB: ``tests/e2e/test_nosql.py`` ``ESCAPES`` (other databases, listDatabases, admin
  commands, bulkWrite, renameCollection, killSessions, currentOp, ...).
- NATS: ``tests/e2e/test_queue.py`` (other accounts' subjects, $SYS, JetStream API, logins).
- S3: ``tests/e2e/test_storage.py`` (other buckets, ListBuckets, bucket policy, deleting its own
  bucket, IAM).
- Webhooks: ``tests/e2e/test_webhook.py`` (other receivers, forged receive keys).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import new_resource

pytestmark = pytest.mark.e2e

# What tenant A runs in its own database; {b} is B's database (and role) name.
PG_ESCAPES: list[tuple[str, str]] = [
    ("list databases", "SELECT datname FROM pg_database"),
    ("size of B", "SELECT pg_database_size('{b}')"),
    ("create database", "CREATE DATABASE stolen"),
    ("create role", "CREATE ROLE intruder"),
    ("alter own role superuser", "ALTER ROLE CURRENT_USER SUPERUSER"),
    ("alter own role createdb", "ALTER ROLE CURRENT_USER CREATEDB"),
    ("become B", "SET ROLE {b}"),
    ("session as B", "SET SESSION AUTHORIZATION {b}"),
    ("grant itself B", "GRANT {b} TO CURRENT_USER"),
    ("drop B", "DROP DATABASE {b}"),
    ("drop B's role", "DROP ROLE {b}"),
    ("copy to program", "COPY (SELECT 1) TO PROGRAM 'true'"),
    ("copy from program", "CREATE TEMP TABLE x (t text); COPY x FROM PROGRAM 'id'"),
    ("copy from a server file", "CREATE TEMP TABLE y (t text); COPY y FROM '/etc/passwd'"),
    ("pg_read_file", "SELECT pg_read_file('/etc/passwd')"),
    ("pg_read_binary_file", "SELECT pg_read_binary_file('postgresql.conf')"),
    ("pg_ls_dir", "SELECT pg_ls_dir('.')"),
    ("pg_stat_file", "SELECT pg_stat_file('postgresql.conf')"),
    ("lo_import a server file", "SELECT lo_import('/etc/passwd')"),
    ("create extension dblink", "CREATE EXTENSION dblink"),
    ("create extension file_fdw", "CREATE EXTENSION file_fdw"),
    ("create extension adminpack", "CREATE EXTENSION adminpack"),
    ("untrusted language", "CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'libc', 'getpid'"),
    ("alter system", "ALTER SYSTEM SET log_statement = 'all'"),
    ("reload config", "SELECT pg_reload_conf()"),
    ("raise temp_file_limit", "SET temp_file_limit = -1"),
    ("turn off logging of its statements", "SET log_statement = 'none'"),
    ("terminate B's backends", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"),
    ("read the settings file path", "SHOW config_file"),
    ("read the data directory", "SHOW data_directory"),
    ("replication slot", "SELECT pg_create_logical_replication_slot('s', 'test_decoding')"),
    ("checkpoint", "CHECKPOINT"),
]


@pytest.fixture(scope="module")
async def two_databases(http: httpx.AsyncClient) -> AsyncIterator[tuple[dict[str, Any], ...]]:
    """Tenant A (the attacker) and tenant B, whose session is open and has a secret query."""
    a, b = await new_resource(http, "db"), await new_resource(http, "db")
    victim = await asyncpg.connect(b["connection_url"])
    await victim.execute("CREATE TABLE secrets (body text); INSERT INTO secrets VALUES ('b')")
    yield a, b
    await victim.close()
    for tenant in (a, b):
        await http.delete(f"/resources/{tenant['token']}")


def database_of(db: dict[str, Any]) -> str:
    name: str = db["connection_url"].rsplit("/", 1)[1]
    return name


@pytest.mark.parametrize(("what", "sql"), PG_ESCAPES, ids=[row[0] for row in PG_ESCAPES])
async def test_postgres_tenant_cannot_escape(
    two_databases: tuple[dict[str, Any], ...], what: str, sql: str
) -> None:
    a, b = two_databases
    conn = await asyncpg.connect(a["connection_url"])
    try:
        with pytest.raises(
            (
                asyncpg.InsufficientPrivilegeError,
                asyncpg.FeatureNotSupportedError,
                asyncpg.UndefinedObjectError,
                asyncpg.InvalidParameterValueError,
                asyncpg.ObjectInUseError,
            )
        ):
            await conn.execute(sql.format(b=database_of(b)))
    finally:
        await conn.close()
    owner = await asyncpg.connect(b["connection_url"])
    try:
        assert await owner.fetchval("SELECT body FROM secrets") == "b", what
    finally:
        await owner.close()


async def test_postgres_tenant_sees_no_query_of_another_tenant(
    two_databases: tuple[dict[str, Any], ...],
) -> None:
    a, b = two_databases
    conn = await asyncpg.connect(a["connection_url"])
    try:
        rows = await conn.fetch(
            "SELECT datname, query FROM pg_stat_activity WHERE datname = $1", database_of(b)
        )
        assert all(row["query"] == "<insufficient privilege>" for row in rows)
        # pg_stat_statements-style views of other databases are not installed to read.
        assert not await conn.fetchval("SELECT count(*) FROM pg_stat_database WHERE false")
    finally:
        await conn.close()


@pytest.mark.parametrize("target", ["other tenant", "postgres", "template1"])
async def test_postgres_tenant_cannot_connect_elsewhere(
    two_databases: tuple[dict[str, Any], ...], target: str
) -> None:
    a, b = two_databases
    database = database_of(b) if target == "other tenant" else target
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(a["connection_url"].rsplit("/", 1)[0] + "/" + database)
