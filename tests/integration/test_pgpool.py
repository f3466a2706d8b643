"""``shared.postgres.pool``: what a pooled connection keeps, and what it has done before it serves.

asyncpg's default release resets the session in a round trip of its own; Spinup's pools skip it
because none of its code keeps session state on a pooled connection (the module says why). So a
session setting outlives a release, and a transaction left open does not.

``warm_pool`` runs a statement on every connection before the pool serves; the platform's
(``WARM_CONNECTION``) leaves asyncpg nothing to look up on a connection's first create or read.
``rehearse_writes`` runs writes on every connection and rolls them back;
``rehearse_resource_appends`` leaves every variant of the append prepared that way.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.contracts.kinds import Caps
from shared.eventlog.projections import (
    ResourceProjection,
    ResourceReadModel,
    caps_precondition,
    rehearse_resource_appends,
)
from shared.eventlog.schema import WARM_CONNECTION
from shared.eventlog.store import EventStore
from shared.naming import resource_stream
from shared.postgres.pool import open_pool, rehearse_writes, warm_pool
from shared.testing.factories import provision_command, provision_requested

pytestmark = pytest.mark.integration


async def test_a_release_rolls_back_what_was_left_open_and_keeps_the_session(
    env: dict[str, str],
) -> None:
    pool = await open_pool(env["SPINUP_PLATFORM_DSN"], size=1)
    try:
        async with pool.acquire() as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SET application_name = 'pool-release-test'")
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int)")
            assert conn.is_in_transaction()

        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == backend
            assert not conn.is_in_transaction()
            # Rolled back: the table made inside the open transaction is gone.
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
            # Not reset: no RESET ALL ran on release.
            assert await conn.fetchval("SHOW application_name") == "pool-release-test"
    finally:
        await pool.close()


async def test_warming_runs_the_statement_on_every_connection_of_the_pool(
    env: dict[str, str],
) -> None:
    pool = await open_pool(env["SPINUP_PLATFORM_DSN"], size=3)
    try:
        await warm_pool(
            pool, "SELECT set_config('application_name', 'warmed-' || pg_backend_pid(), false)"
        )
        held = [await pool.acquire() for _ in range(3)]
        try:
            for conn in held:
                backend = await conn.fetchval("SELECT pg_backend_pid()")
                assert await conn.fetchval("SHOW application_name") == f"warmed-{backend}"
        finally:
            for conn in held:
                await pool.release(conn)
    finally:
        await pool.close()


async def _type_lookups_of_a_first_append_and_read(pool: asyncpg.Pool, env: dict[str, str]) -> int:
    """How many queries asyncpg sent to look up types while one append and two reads ran.

    ``pool`` has one connection, so the logger added to it sees every query they send.
    """
    store = EventStore(pool, [ResourceProjection()])
    resources = ResourceReadModel(pool)
    sent: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
    rid = uuid.uuid4()
    await store.append(
        resource_stream(rid),
        0,
        [provision_requested(rid)],
        command_id=uuid.uuid4(),
        correlation_id="warm-test",
    )
    assert await resources.by_id(rid) is not None
    assert [state.resource_id for state in await resources.by_ids({rid})] == [rid]
    assert sent, "the query logger saw nothing: the test would prove nothing"
    return sum("pg_catalog.pg_type" in query for query in sent)


async def test_a_warmed_platform_connection_looks_up_no_type_in_its_first_append_and_reads(
    env: dict[str, str],
) -> None:
    cold = await open_pool(env["SPINUP_PLATFORM_DSN"], size=1)
    warm = await open_pool(env["SPINUP_PLATFORM_DSN"], size=1)
    try:
        await warm_pool(warm, WARM_CONNECTION)
        # Unwarmed, the same calls do look types up: the count below can fail.
        assert await _type_lookups_of_a_first_append_and_read(cold, env) > 0
        assert await _type_lookups_of_a_first_append_and_read(warm, env) == 0
    finally:
        await cold.close()
        await warm.close()


async def _prepared(pool: asyncpg.Pool, pattern: str) -> list[set[str]]:
    """The statements like ``pattern`` each connection of ``pool`` holds prepared on the server."""
    query = "SELECT statement FROM pg_prepared_statements WHERE ltrim(statement, E' \\n') LIKE $1"
    held = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        return [{row["statement"] for row in await conn.fetch(query, pattern)} for conn in held]
    finally:
        for conn in held:
            await pool.release(conn)


async def _prepared_appends(pool: asyncpg.Pool) -> list[set[str]]:
    return await _prepared(pool, "WITH appended AS%")


async def test_a_rehearsed_write_runs_on_every_connection_and_is_rolled_back(
    env: dict[str, str],
) -> None:
    pool = await open_pool(env["SPINUP_PLATFORM_DSN"], size=2)
    table = f"rehearsal_{uuid.uuid4().hex}"
    try:
        await pool.execute(f"CREATE TABLE {table} (id uuid PRIMARY KEY, backend int NOT NULL)")
        write = f"INSERT INTO {table} VALUES ($1, pg_backend_pid())"
        given: list[uuid.UUID] = []

        def writes() -> list[tuple[str, list[uuid.UUID]]]:
            given.append(uuid.uuid4())
            return [(write, [given[-1]])]

        await rehearse_writes(pool, writes)
        assert len(set(given)) == 2  # one call per connection, each its own key
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0
        prepared = await _prepared(pool, f"INSERT INTO {table}%")
        assert prepared[0] == prepared[1] == {write}

        # A rehearsal that fails is what the real write would meet: it is raised, not hidden.
        with pytest.raises(asyncpg.NotNullViolationError):
            await rehearse_writes(pool, lambda: [(write, [None])])
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}")
        await pool.close()


async def test_every_connection_rehearses_the_appends_a_create_then_runs(
    env: dict[str, str],
) -> None:
    pool = await open_pool(env["SPINUP_PLATFORM_DSN"], size=2)
    try:
        store = EventStore(pool, [ResourceProjection()])
        assert await _prepared_appends(pool) == [set(), set()]
        await rehearse_resource_appends(store)
        prepared = await _prepared_appends(pool)
        # No precondition, and the caps of an anonymous holder and of an account.
        assert len(prepared[0]) == 3
        assert prepared[1] == prepared[0]
        # A create's append, and the outcome's after it, run statements prepared already: their
        # text is what was rehearsed, or a fourth statement would be prepared.
        command = provision_command(
            new_ids=True,
            fingerprint=f"test-{uuid.uuid4().hex}",
            caps=Caps(active_per_kind=5, provisions_per_day=50),
        )
        rid = command.resource_id
        recorded = await store.append(
            resource_stream(rid),
            0,
            [provision_requested(rid)],
            command_id=command.command_id,
            correlation_id="prepare-test",
            precondition=caps_precondition(command, command.caps),
        )
        await store.append(
            resource_stream(rid),
            1,
            [provision_requested(rid)],
            command_id=uuid.uuid4(),
            correlation_id="prepare-test",
            prior=recorded,
        )
        assert await ResourceReadModel(pool).by_id(rid) is not None
        assert await _prepared_appends(pool) == prepared
    finally:
        await pool.close()
