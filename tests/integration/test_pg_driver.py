import uuid

import asyncpg
import pytest

from pg_provisioner.driver import PostgresDriver
from shared.naming import tenant_name
from shared.testing.factories import LIMITS

pytestmark = pytest.mark.integration


async def test_create_twice_gives_one_database_and_only_the_newest_password_works(
    driver: PostgresDriver,
) -> None:
    rid = uuid.uuid4()
    first = await driver.create(rid, LIMITS)
    second = await driver.create(rid, LIMITS)
    assert first.database == second.database == tenant_name(rid)
    conn = await asyncpg.connect(second.connection_url)
    assert await conn.fetchval("SHOW statement_timeout") == "5s"
    await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(first.connection_url)
    await driver.delete(rid)


async def test_delete_is_idempotent_and_removes_role_and_database(driver: PostgresDriver) -> None:
    rid = uuid.uuid4()
    await driver.create(rid, LIMITS)
    assert await driver.exists(rid)
    await driver.delete(rid)
    await driver.delete(rid)
    assert not await driver.exists(rid)


async def test_password_reaches_postgres_only_as_a_scram_verifier(
    driver: PostgresDriver, customer_admin: asyncpg.Connection
) -> None:
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    stored = await customer_admin.fetchval(
        "SELECT rolpassword FROM pg_authid WHERE rolname = $1", credentials.username
    )
    assert stored.startswith("SCRAM-SHA-256$4096:")
    assert credentials.password not in stored
    await driver.delete(rid)


async def test_cluster_is_hardened_against_maintenance_databases(
    customer_admin: asyncpg.Connection,
) -> None:
    for name in ("postgres", "template1"):
        for privilege in ("CONNECT", "TEMPORARY"):
            assert not await customer_admin.fetchval(
                "SELECT has_database_privilege('public', $1, $2)", name, privilege
            )
