import asyncio
import time
import uuid

import asyncpg
import msgspec
import pytest

from devstack.customer_pg import AUTHENTICATION_TIMEOUT_S, MAX_CONNECTIONS
from pg_provisioner import driver as driver_module
from pg_provisioner.driver import PostgresDriver
from shared.contracts.errors import DropRefusedError, ErrorCode, SpinupError
from shared.lifecycle import Ceiling
from shared.naming import pool_member_id, tenant_name
from shared.testing.factories import LIMITS
from shared.testing.polling import eventually
from shared.usage_memo import UsageMemo
from tests.conftest import usage_measures_since

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


async def test_a_database_its_tenant_made_a_template_is_dropped_at_delete(
    driver: PostgresDriver, customer_admin: asyncpg.Connection
) -> None:
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    tenant = await asyncpg.connect(credentials.connection_url)
    try:
        # The tenant owns its database: Postgres lets it make it a template, and a template
        # is never dropped.
        await tenant.execute(f'ALTER DATABASE "{tenant_name(rid)}" IS_TEMPLATE true')
        await tenant.execute("CREATE TABLE kept (secret text); INSERT INTO kept VALUES ('x')")
    finally:
        await tenant.close()
    oid = await customer_admin.fetchval(
        "SELECT oid FROM pg_database WHERE datname = $1", tenant_name(rid)
    )
    await driver.delete(rid)

    async def dropped() -> bool:
        return not await customer_admin.fetchval("SELECT 1 FROM pg_database WHERE oid = $1", oid)

    assert await eventually(dropped, within=30), "the template database outlived its delete"


async def test_tenants_lists_live_tenants_and_not_retired_ones_or_pool_members(
    driver: PostgresDriver, customer_admin: asyncpg.Connection
) -> None:
    rid, other, role_only = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await driver.create(rid, LIMITS)
    await driver.create(other, LIMITS)
    # A create cut off between its role and its database leaves the role alone.
    await customer_admin.execute(f'CREATE ROLE "{tenant_name(role_only)}" NOLOGIN')
    try:
        listed = await driver.tenants()
        assert {rid, other, role_only} <= listed
        await driver.delete(rid)
        listed = await driver.tenants()
        assert rid not in listed  # retired: renamed, waiting for the drop queue
        assert other in listed
        # The stack's own pg-provisioner keeps warm-pool members on this cluster.
        members = await customer_admin.fetch("SELECT datname FROM pg_database")
        assert not {pool_member_id(row["datname"]) for row in members} & listed
    finally:
        await driver.delete(other)
        await driver.delete(role_only)
    assert not {other, role_only} & await driver.tenants()


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


async def public_can_still_use(env: dict[str, str], database: str) -> list[str]:
    """Which of the hidden catalogs, views and functions PUBLIC may still use in ``database``."""
    conn = await asyncpg.connect(env["SPINUP_CUSTOMER_PG_ADMIN_DSN"], database=database)
    try:
        relations: list[str] = await conn.fetchval(
            "SELECT coalesce(array_agg(r), '{}') FROM unnest($1::text[]) r"
            " WHERE has_table_privilege('public', 'pg_catalog.' || r, 'SELECT')",
            list(driver_module._HIDDEN_RELATIONS),
        )
        functions: list[str] = await conn.fetchval(
            "SELECT coalesce(array_agg(f), '{}') FROM unnest($1::text[]) f"
            " WHERE has_function_privilege('public', 'pg_catalog.' || f, 'EXECUTE')",
            list(driver_module._HIDDEN_FUNCTIONS),
        )
    finally:
        await conn.close()
    return relations + functions


async def test_template1_and_every_new_database_hide_other_roles_and_databases(
    driver: PostgresDriver, env: dict[str, str]
) -> None:
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    for database in ("template1", credentials.database):
        assert await public_can_still_use(env, database) == [], database
    conn = await asyncpg.connect(credentials.connection_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT rolname FROM pg_roles")
        assert await conn.fetchval("SELECT current_user") == credentials.username
    finally:
        await conn.close()
    await driver.delete(rid)


async def test_harden_hides_the_catalogs_of_databases_made_before_it(
    driver: PostgresDriver, env: dict[str, str]
) -> None:
    # A database made before this hardening existed, then soft-blocked (its sessions start
    # read-only, the admin's too): harden reaches it all the same.
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    old = await asyncpg.connect(env["SPINUP_CUSTOMER_PG_ADMIN_DSN"], database=credentials.database)
    await old.execute(
        "GRANT SELECT ON pg_catalog.pg_roles, pg_catalog.pg_stat_activity TO PUBLIC;"
        " GRANT EXECUTE ON FUNCTION pg_catalog.pg_describe_object(oid, oid, integer) TO PUBLIC"
    )
    await old.close()
    assert len(await public_can_still_use(env, credentials.database)) == 3
    await driver.block_writes(rid, usage=11, quota=10)

    await driver.harden()

    assert await public_can_still_use(env, credentials.database) == []
    await driver.delete(rid)


# -- issue 4: set_limits, rotate, usage, block_writes, allow_writes ---------------------------

RAISED = msgspec.structs.replace(
    LIMITS, connections=5, statement_timeout_ms=30000, temp_file_limit_mb=64
)


async def assert_cut(conn: asyncpg.Connection, admin: asyncpg.Connection) -> None:
    """The server ended this session, and the client can no longer use it."""
    assert not await admin.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", conn.get_server_pid()
    )
    # How asyncpg reports a session the server ended depends on when it reads the news.
    with pytest.raises(
        (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    ):
        await conn.fetchval("SELECT 1")
    await conn.close()


async def role_limits(admin: asyncpg.Connection, name: str) -> tuple[int, int, list[str]]:
    row = await admin.fetchrow(
        "SELECT r.rolconnlimit, d.datconnlimit, r.rolconfig"
        " FROM pg_roles r JOIN pg_database d ON d.datname = r.rolname WHERE r.rolname = $1",
        name,
    )
    assert row is not None
    return row["rolconnlimit"], row["datconnlimit"], sorted(row["rolconfig"])


async def test_set_limits_raises_the_limits_in_postgres_and_keeps_sessions(
    driver: PostgresDriver, customer_admin: asyncpg.Connection
) -> None:
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    assert await role_limits(customer_admin, credentials.username) == (
        2,
        2,
        ["statement_timeout=5000", "temp_file_limit=8MB"],
    )
    open_before = await asyncpg.connect(credentials.connection_url)
    await driver.set_limits(rid, RAISED)
    await driver.set_limits(rid, RAISED)
    assert await role_limits(customer_admin, credentials.username) == (
        5,
        5,
        ["statement_timeout=30000", "temp_file_limit=64MB"],
    )
    assert await open_before.fetchval("SELECT 1") == 1
    sessions = [await asyncpg.connect(credentials.connection_url) for _ in range(4)]
    assert await sessions[0].fetchval("SHOW statement_timeout") == "30s"
    for session in [open_before, *sessions]:
        await session.close()
    await driver.delete(rid)


async def test_operations_on_a_missing_database(driver: PostgresDriver) -> None:
    missing = uuid.uuid4()
    for operation in (driver.set_limits, driver.rotate):
        with pytest.raises(SpinupError) as caught:
            await operation(missing, LIMITS)
        assert caught.value.code is ErrorCode.NOT_FOUND
    assert await driver.usage([missing]) == {}
    await driver.block_writes(missing, usage=100, quota=1)
    await driver.allow_writes(missing)
    assert not await driver.exists(missing)


async def test_rotate_cuts_open_sessions_and_only_the_new_password_works(
    driver: PostgresDriver, customer_admin: asyncpg.Connection
) -> None:
    rid = uuid.uuid4()
    old = await driver.create(rid, LIMITS)
    open_before = await asyncpg.connect(old.connection_url)
    await open_before.execute("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')")

    new = await driver.rotate(rid, LIMITS)
    assert (new.host, new.port, new.database, new.username) == (
        old.host,
        old.port,
        old.database,
        old.username,
    )
    assert new.password != old.password
    await assert_cut(open_before, customer_admin)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(old.connection_url)
    conn = await asyncpg.connect(new.connection_url)
    assert await conn.fetchval("SELECT body FROM notes") == "kept"
    await conn.close()
    await driver.delete(rid)


async def test_usage_measures_every_asked_database_in_one_query(driver: PostgresDriver) -> None:
    filled, empty, missing = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    credentials = await driver.create(filled, LIMITS)
    await driver.create(empty, LIMITS)
    before = await driver.usage([filled, empty, missing])
    assert set(before) == {filled, empty}

    conn = await asyncpg.connect(credentials.connection_url)
    # 2000 rows of 4 kB that do not compress: about 8 MB of heap and TOAST.
    await conn.execute(
        "CREATE TABLE blob (body text);"
        " INSERT INTO blob SELECT string_agg(md5(random()::text), '')"
        " FROM generate_series(1, 2000) AS r, generate_series(1, 128) AS c GROUP BY r"
    )
    await conn.close()
    after = await driver.usage([filled, empty, missing])
    grown = after[filled] - before[filled]
    assert 8_000_000 <= grown <= 12_000_000, grown
    assert after[empty] == before[empty]
    for rid in (filled, empty):
        await driver.delete(rid)


async def until_counted(admin: asyncpg.Connection, database: str, inserted_above: int) -> int:
    """Wait for the sessions' statistics to reach ``pg_stat_database``; its inserts then."""
    deadline = time.monotonic() + 20
    while True:
        inserted = await admin.fetchval(
            "SELECT tup_inserted FROM pg_stat_database WHERE datname = $1", database
        )
        if inserted > inserted_above:
            return int(inserted)
        assert time.monotonic() < deadline, "the statistics never showed the inserts"
        await asyncio.sleep(0.2)


async def test_usage_measures_a_database_again_only_when_its_counters_moved_or_it_is_busy(
    customer_admin: asyncpg.Connection, env: dict[str, str]
) -> None:
    # No quiet time: a database stands as soon as its figures match its last measure's.
    driver = await PostgresDriver.connect(
        env["SPINUP_CUSTOMER_PG_ADMIN_DSN"],
        public_host=env["SPINUP_CUSTOMER_PG_HOST"],
        public_port=int(env["SPINUP_CUSTOMER_PG_PORT"]),
        pool_size=2,
        measures=UsageMemo(settle_s=0),
    )
    rid = uuid.uuid4()
    try:
        credentials = await driver.create(rid, LIMITS)
        counted = usage_measures_since("postgres")
        empty = (await driver.usage([rid]))[rid]
        assert await driver.usage([rid]) == {rid: empty}
        assert counted() == (1, 1)
        inserted = await customer_admin.fetchval(
            "SELECT tup_inserted FROM pg_stat_database WHERE datname = $1", credentials.database
        )
        # A table and nothing in it: the catalogs' rows move the counters too.
        conn = await asyncpg.connect(credentials.connection_url)
        await conn.execute("CREATE TABLE blob (body text)")
        await conn.close()
        inserted = await until_counted(customer_admin, credentials.database, inserted)
        with_table = (await driver.usage([rid]))[rid]
        assert with_table > empty
        assert counted() == (2, 1)
        # Rows not yet committed grow the files before any counter shows them: a session in a
        # transaction gets its database measured at every sweep.
        conn = await asyncpg.connect(credentials.connection_url)
        writing = conn.transaction()
        await writing.start()
        await conn.execute(
            "INSERT INTO blob SELECT string_agg(md5(random()::text), '')"
            " FROM generate_series(1, 1000) AS r, generate_series(1, 128) AS c GROUP BY r"
        )
        uncommitted = (await driver.usage([rid]))[rid]
        assert uncommitted > with_table + 4_000_000
        assert await driver.usage([rid]) == {rid: uncommitted}
        assert counted() == (4, 1)
        await writing.commit()
        await conn.close()
        await until_counted(customer_admin, credentials.database, inserted)
        committed = (await driver.usage([rid]))[rid]
        assert committed >= uncommitted
        assert await driver.usage([rid]) == {rid: committed}
        assert counted() == (5, 2)
    finally:
        await driver.delete(rid)
        await driver.close()


async def test_soft_block_makes_sessions_read_only_and_leaves_reads_and_cleanup(
    driver: PostgresDriver, customer_admin: asyncpg.Connection
) -> None:
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    url = credentials.connection_url
    open_before = await asyncpg.connect(url)
    await open_before.execute(
        "CREATE TABLE items (n int); INSERT INTO items SELECT generate_series(1, 10)"
    )

    await driver.block_writes(rid, usage=11, quota=10)
    await assert_cut(open_before, customer_admin)
    conn = await asyncpg.connect(url)
    assert await conn.fetchval("SELECT count(*) FROM items") == 10
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await conn.execute("INSERT INTO items VALUES (11)")
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await conn.execute("DELETE FROM items")
    # The documented way out: turn read-only off in the session, then remove data.
    await conn.execute("SET default_transaction_read_only = off")
    await driver.block_writes(rid, usage=11, quota=10)  # the next sweep pass, still over
    assert await conn.execute("DELETE FROM items WHERE n > 5") == "DELETE 5"
    await conn.execute("TRUNCATE items")
    assert await conn.fetchval("SELECT count(*) FROM items") == 0

    # The owner may RESET the soft block; the next sweep pass sets it again.
    await conn.execute(f"ALTER DATABASE {credentials.database} RESET default_transaction_read_only")
    await driver.block_writes(rid, usage=11, quota=10)
    await assert_cut(conn, customer_admin)
    conn = await asyncpg.connect(url)
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await conn.execute("INSERT INTO items VALUES (11)")

    await driver.allow_writes(rid)
    # Sessions begun read-only are ended, so clients reconnect to writable ones.
    await assert_cut(conn, customer_admin)
    await driver.allow_writes(rid)
    conn = await asyncpg.connect(url)
    await conn.execute("INSERT INTO items VALUES (1)")
    await conn.close()
    await driver.delete(rid)


async def test_far_over_quota_the_database_refuses_connections_until_allowed(
    driver: PostgresDriver, customer_admin: asyncpg.Connection
) -> None:
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    url = credentials.connection_url
    await driver.block_writes(rid, usage=11, quota=10)
    cleaning = await asyncpg.connect(url)
    await cleaning.execute("SET default_transaction_read_only = off")
    await cleaning.execute("CREATE TABLE more (n int)")

    await driver.block_writes(rid, usage=20, quota=10)
    await assert_cut(cleaning, customer_admin)
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError, match="not currently accepting"):
        await asyncpg.connect(url)
    # The role's own limit is untouched, and neither set_limits nor rotate lifts the block.
    assert (await role_limits(customer_admin, credentials.username))[0] == LIMITS.connections
    await driver.set_limits(rid, RAISED)
    rotated = await driver.rotate(rid, RAISED)
    url = rotated.connection_url
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):
        await asyncpg.connect(url)

    # A larger quota (a claim) brings usage under the factor: back to the soft block.
    await driver.block_writes(rid, usage=20, quota=15)
    conn = await asyncpg.connect(url)
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await conn.execute("INSERT INTO more VALUES (1)")
    await conn.close()

    await driver.block_writes(rid, usage=40, quota=15)
    await driver.allow_writes(rid)
    conn = await asyncpg.connect(url)
    await conn.execute("INSERT INTO more VALUES (1)")
    await conn.close()
    await driver.delete(rid)


async def test_allow_writes_on_a_database_never_blocked_changes_nothing(
    driver: PostgresDriver,
) -> None:
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    conn = await asyncpg.connect(credentials.connection_url)
    await driver.allow_writes(rid)
    await conn.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
    await conn.close()
    await driver.delete(rid)


async def test_guard_refuses_every_new_operation_on_a_name_without_the_tenant_prefix(
    driver: PostgresDriver, customer_admin: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the guard skipped, block_writes would make the admin's own database read-only.
    monkeypatch.setattr(driver_module, "tenant_name", lambda _rid: "postgres")
    rid = uuid.uuid4()
    with pytest.raises(DropRefusedError):
        await driver.rotate(rid, LIMITS)
    with pytest.raises(DropRefusedError):
        await driver.set_limits(rid, LIMITS)
    with pytest.raises(DropRefusedError):
        await driver.block_writes(rid, usage=100, quota=1)
    with pytest.raises(DropRefusedError):
        await driver.allow_writes(rid)
    with pytest.raises(DropRefusedError):
        await driver.usage([rid])
    assert not await customer_admin.fetchval(
        "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
        " WHERE d.datname = 'postgres'"
    )
    assert await customer_admin.fetchval(
        "SELECT datallowconn FROM pg_database WHERE datname = 'postgres'"
    )


async def test_a_connection_that_never_logs_in_is_closed_after_the_authentication_timeout(
    env: dict[str, str],
) -> None:
    """It holds a slot of the shared server's max_connections until then (ADR 0052's flood)."""
    host, port = env["SPINUP_CUSTOMER_PG_HOST"], int(env["SPINUP_CUSTOMER_PG_PORT"])
    reader, writer = await asyncio.open_connection(host, port)
    opened = time.monotonic()
    try:
        closed = await asyncio.wait_for(reader.read(), timeout=AUTHENTICATION_TIMEOUT_S + 10)
    finally:
        writer.close()
    held = time.monotonic() - opened
    assert closed == b""  # the server hung up without a word: no startup packet ever came
    assert AUTHENTICATION_TIMEOUT_S - 1 <= held <= AUTHENTICATION_TIMEOUT_S + 5


async def test_capacity_reports_client_connections_against_the_slots_tenants_may_take(
    driver: PostgresDriver, env: dict[str, str]
) -> None:
    used, slots = (await driver.capacity())[Ceiling.CONNECTIONS]
    # The defaults reserve 3 slots for superusers and none for pg_use_reserved_connections.
    assert slots == MAX_CONNECTIONS - 3
    assert 0 < used < slots
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    sessions = [await asyncpg.connect(credentials.connection_url) for _ in range(2)]
    try:
        assert (await driver.capacity())[Ceiling.CONNECTIONS][0] >= used + 2
    finally:
        for session in sessions:
            await session.close()
        await driver.delete(rid)


async def test_a_statement_past_its_plans_limit_is_cancelled_though_its_tenant_turned_it_off(
    driver: PostgresDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The role's statement_timeout is a default the tenant may change; the plan's limit is
    # kept from outside (ADR 0065). Here the plan allows 1 s, the other tenant's 60 s.
    monkeypatch.setattr(driver_module, "OVERDUE_AFTER_S", 0.5)
    limited, other = uuid.uuid4(), uuid.uuid4()
    plan_ms = {limited: 1000, other: 60_000}

    async def limits_of(resource_ids: set[uuid.UUID]) -> dict[uuid.UUID, int]:
        return {rid: ms for rid, ms in plan_ms.items() if rid in resource_ids}

    sessions = [
        await asyncpg.connect((await driver.create(rid, LIMITS)).connection_url)
        for rid in (limited, other)
    ]
    try:
        for session in sessions:
            await session.execute("ALTER ROLE current_user SET statement_timeout = 0")
            await session.execute("SET statement_timeout = 0")
        sleeping = [asyncio.create_task(s.fetchval("SELECT 1 FROM pg_sleep(4)")) for s in sessions]
        await asyncio.sleep(2)
        assert await driver.cancel_overdue(limits_of) == 1
        with pytest.raises(asyncpg.QueryCanceledError):
            await sleeping[0]
        assert await sleeping[1] == 1  # within its plan's limit: left to finish
        assert await sessions[0].fetchval("SELECT 1") == 1  # the session itself stays
    finally:
        for session in sessions:
            await session.close()
        for rid in (limited, other):
            await driver.delete(rid)


async def test_a_statement_that_catches_its_cancel_loses_its_session(
    driver: PostgresDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PL/pgSQL handler for query_canceled survives pg_cancel_backend; past the grace the
    # session itself is ended (ADR 0065).
    monkeypatch.setattr(driver_module, "OVERDUE_AFTER_S", 0.5)
    monkeypatch.setattr(driver_module, "TERMINATE_AFTER_S", 2.0)
    rid = uuid.uuid4()

    async def limits_of(resource_ids: set[uuid.UUID]) -> dict[uuid.UUID, int]:
        return {rid: 1000} if rid in resource_ids else {}

    session = await asyncpg.connect((await driver.create(rid, LIMITS)).connection_url)
    try:
        await session.execute("SET statement_timeout = 0")
        stubborn = asyncio.create_task(
            session.execute(
                "DO $$ BEGIN FOR i IN 1..200 LOOP"
                " BEGIN PERFORM pg_sleep(0.1); EXCEPTION WHEN query_canceled THEN NULL; END;"
                " END LOOP; END $$"
            )
        )
        for _ in range(12):  # every 0.5 s: cancels from 1 s, the end from 3 s past the start
            await asyncio.sleep(0.5)
            await driver.cancel_overdue(limits_of)
            if stubborn.done():
                break
        with pytest.raises((asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError)):
            await stubborn
    finally:
        await session.close()
        await driver.delete(rid)
