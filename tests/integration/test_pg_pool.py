"""The warm pool on the real customer Postgres: take, refill, fall back, delete, reconcile.

The stack's own pg-provisioner keeps a pool on the same cluster; members are shared through the
event log and the cluster, so each test asserts on what it took, not on which member it got.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from urllib.parse import urlsplit

import asyncpg
import msgspec
import pytest

from pg_provisioner.driver import PostgresDriver
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.events import (
    PoolMemberDropped,
    PoolMemberReady,
    PoolMemberRequested,
    ResourceProvisioned,
)
from shared.contracts.kinds import Caps, PostgresCredentials, ResourceKind
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.naming import pool_name, pool_stream, resource_stream, tenant_name
from shared.testing.factories import LIMITS, at_its_cap, provision_command
from shared.testing.polling import eventually

pytestmark = pytest.mark.integration

POOL_SIZE = 3


async def connect_driver(env: dict[str, str]) -> PostgresDriver:
    return await PostgresDriver.connect(
        env["SPINUP_CUSTOMER_PG_ADMIN_DSN"],
        public_host=env["SPINUP_CUSTOMER_PG_HOST"],
        public_port=int(env["SPINUP_CUSTOMER_PG_PORT"]),
        pool_size=6,
    )


@pytest.fixture
async def warm(env: dict[str, str], store: EventStore) -> AsyncIterator[PostgresDriver]:
    driver = await connect_driver(env)
    pool = driver.start_pool(
        store, size=POOL_SIZE, refill_concurrency=2, reserve=2, reconcile_interval_s=3600
    )
    assert await pool.wait_filled(within_s=30), "the pool never filled"
    yield driver
    await driver.close()


async def take(driver: PostgresDriver, resource_id: uuid.UUID) -> PostgresCredentials:
    """The tenant made from a warm member, failing the test if the pool gave none."""
    taken = await driver.take(resource_id, LIMITS)
    assert taken is not None, "the warm pool gave no member"
    assert isinstance(taken.credentials, PostgresCredentials)
    return taken.credentials


def psql_select_one(credentials: PostgresCredentials) -> subprocess.CompletedProcess[str]:
    url = urlsplit(credentials.connection_url)
    psql = shutil.which("psql")
    assert psql is not None, "psql is not installed"
    return subprocess.run(  # noqa: S603  (fixed program; arguments are the credentials under test)
        [
            psql,
            "-h",
            credentials.host,
            "-p",
            str(credentials.port),
            "-U",
            credentials.username,
            "-d",
            credentials.database,
            "-w",
            "-tAc",
            "select current_user",
        ],
        env={**os.environ, "PGPASSWORD": url.password or ""},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


async def test_a_taken_member_logs_in_only_with_its_new_password(
    warm: PostgresDriver, customer_admin: asyncpg.Connection
) -> None:
    rid, other = uuid.uuid4(), uuid.uuid4()
    credentials = await take(warm, rid)
    neighbour = await take(warm, other)
    assert credentials.database == credentials.username == tenant_name(rid)

    conn = await asyncpg.connect(credentials.connection_url)
    assert await conn.fetchval("SELECT current_database()") == tenant_name(rid)
    assert await conn.fetchval("SHOW statement_timeout") == "5s"
    await conn.close()
    done = psql_select_one(credentials)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == tenant_name(rid)

    # Stored only as a verifier; the limits of the tier are on role and database.
    row = await customer_admin.fetchrow(
        "SELECT a.rolpassword, a.rolcanlogin, a.rolconnlimit, d.datconnlimit FROM pg_authid a"
        " JOIN pg_database d ON d.datname = a.rolname WHERE a.rolname = $1",
        tenant_name(rid),
    )
    assert row is not None
    assert row["rolpassword"].startswith("SCRAM-SHA-256$4096:")
    assert credentials.password not in row["rolpassword"]
    assert row["rolcanlogin"]
    assert row["rolconnlimit"] == row["datconnlimit"] == LIMITS.connections

    url = credentials.connection_url
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(url.replace(credentials.password, "wrong-password"))
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(url.replace(f":{credentials.password}@", ":@"))
    # The neighbour's own credentials do not open this database (pg_hba: sameuser).
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(
            neighbour.connection_url.rsplit("/", 1)[0] + "/" + credentials.database
        )
    await warm.delete(rid)
    await warm.delete(other)


async def test_a_ready_member_is_reachable_by_nobody(
    warm: PostgresDriver, customer_admin: asyncpg.Connection, env: dict[str, str]
) -> None:
    pool = warm.warm_pool
    assert pool is not None
    assert pool.members()
    host, port = env["SPINUP_CUSTOMER_PG_HOST"], env["SPINUP_CUSTOMER_PG_PORT"]
    for member in pool.members():
        name = member.name
        row = await customer_admin.fetchrow(
            "SELECT a.rolcanlogin, a.rolpassword, d.datacl::text AS acl,"
            " pg_get_userbyid(d.datdba) AS owner FROM pg_authid a"
            " JOIN pg_database d ON d.datname = a.rolname WHERE a.rolname = $1",
            name,
        )
        assert row is not None
        assert not row["rolcanlogin"]
        assert row["owner"] == name
        # No ACL entry for PUBLIC (an entry with an empty grantee, "=Tc/owner"): nobody connects.
        assert not [item for item in row["acl"].strip("{}").split(",") if item.startswith("=")]
        url = f"postgresql://{name}:{member.password}@{host}:{port}/{name}"
        if member.verifier is None:
            # Made by this process: the password is set ahead of the take, as a verifier only,
            # and opens nothing, not even with itself, until the take adds LOGIN.
            assert row["rolpassword"].startswith("SCRAM-SHA-256$4096:")
            assert member.password not in row["rolpassword"]
            with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="permitted"):
                await asyncpg.connect(url)
        else:
            # Found on the cluster (an earlier process made it): its take sets the password.
            with pytest.raises(asyncpg.PostgresError):
                await asyncpg.connect(url)


async def test_a_taken_member_lists_no_other_role_or_database(warm: PostgresDriver) -> None:
    # Members are made from template1 after harden, so they hide the catalogs like any database.
    rid = uuid.uuid4()
    credentials = await take(warm, rid)
    conn = await asyncpg.connect(credentials.connection_url)
    try:
        for catalog in ("pg_database", "pg_roles", "pg_group", "pg_stat_activity"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM pg_catalog.{catalog}")
        assert await conn.fetchval("SELECT current_user") == tenant_name(rid)
    finally:
        await conn.close()
    await warm.delete(rid)


async def test_the_pool_refills_after_takes(warm: PostgresDriver, store: EventStore) -> None:
    taken = [uuid.uuid4() for _ in range(POOL_SIZE)]
    for rid in taken:
        await take(warm, rid)
    pool = warm.warm_pool
    assert pool is not None
    assert await pool.wait_filled(within_s=30)
    for member in pool.members():
        events = await store.load(pool_stream(member.member_id))
        assert isinstance(events[-1].event, PoolMemberReady)
    for rid in taken:
        await warm.delete(rid)


async def test_a_create_its_caps_refuse_takes_no_member_and_one_within_them_names_its_member(
    warm: PostgresDriver, store: EventStore, lifecycle_of: Callable[..., ResourceLifecycle]
) -> None:
    # The caps are counted before the take (docs/adr/0047): a holder at its cap must not drain
    # the pool by taking members that its create's append would refuse.
    pool = warm.warm_pool
    assert pool is not None
    lifecycle = lifecycle_of(warm)
    ready = {member.member_id for member in pool.members()}
    at_the_cap = at_its_cap()
    with pytest.raises(SpinupError) as caught:
        await lifecycle.provision(at_the_cap)
    assert caught.value.code is ErrorCode.PLAN_LIMIT_REACHED
    assert {member.member_id for member in pool.members()} == ready, "a refused create took one"
    assert not await warm.exists(at_the_cap.resource_id)

    within = msgspec.structs.replace(
        at_the_cap,
        command_id=uuid.uuid4(),
        resource_id=uuid.uuid4(),
        caps=Caps(active_per_kind=1, provisions_per_day=10),
    )
    reply = await lifecycle.provision(within)
    # Its one append names the member it was made from; that member's stream ends at Ready.
    events = [recorded.event for recorded in await store.load(resource_stream(within.resource_id))]
    assert [type(event).__name__ for event in events] == [
        "ResourceProvisionRequested",
        "ResourceProvisioned",
    ]
    provisioned = events[-1]
    assert isinstance(provisioned, ResourceProvisioned)
    assert provisioned.pool_member in ready
    member_stream = await store.load(pool_stream(provisioned.pool_member))
    assert isinstance(member_stream[-1].event, PoolMemberReady)
    assert provisioned.pool_member not in {member.member_id for member in pool.members()}
    conn = await asyncpg.connect(reply.credentials.connection_url)
    assert await conn.fetchval("SELECT current_user") == tenant_name(within.resource_id)
    await conn.close()
    await warm.delete(within.resource_id)


async def test_a_take_for_a_tenant_that_exists_keeps_the_member_and_the_create_resets_it(
    warm: PostgresDriver, store: EventStore
) -> None:
    # A retried create whose tenant an earlier try made: the rename is refused as a whole, so
    # the member is as it was and goes back to the pool instead of being dropped.
    pool = warm.warm_pool
    assert pool is not None
    rid = uuid.uuid4()
    first = await take(warm, rid)
    next_up = pool.members()[0].member_id
    assert await warm.take(rid, LIMITS) is None
    assert pool.members()[0].member_id == next_up, "the refused member left the pool"
    events = await store.load(pool_stream(next_up))
    assert isinstance(events[-1].event, PoolMemberReady)

    again = await warm.create(rid, LIMITS)
    assert again.password != first.password
    conn = await asyncpg.connect(again.connection_url)
    assert await conn.fetchval("SELECT current_user") == tenant_name(rid)
    await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(first.connection_url)
    await warm.delete(rid)


async def test_a_create_with_nothing_to_take_falls_back_to_create_database(
    env: dict[str, str], store: EventStore, lifecycle_of: Callable[..., ResourceLifecycle]
) -> None:
    # The lifecycle takes first and creates only when nothing was taken (``PooledCreate``). No
    # pool here: one of its own would adopt the stack's ready members at its first reconcile.
    driver = await connect_driver(env)
    try:
        assert await driver.take(uuid.uuid4(), LIMITS) is None
        command = provision_command(new_ids=True, fingerprint=f"test-{uuid.uuid4().hex}")
        reply = await lifecycle_of(driver).provision(command)
        provisioned = (await store.load(resource_stream(command.resource_id)))[-1].event
        assert isinstance(provisioned, ResourceProvisioned)
        assert provisioned.pool_member is None
        conn = await asyncpg.connect(reply.credentials.connection_url)
        assert await conn.fetchval("SELECT current_user") == tenant_name(command.resource_id)
        await conn.close()
        await driver.delete(command.resource_id)
    finally:
        await driver.close()


async def test_a_deleted_pooled_tenant_is_cut_off_at_once_and_dropped_later(
    warm: PostgresDriver, customer_admin: asyncpg.Connection
) -> None:
    rid = uuid.uuid4()
    credentials = await take(warm, rid)
    oid = await customer_admin.fetchval(
        "SELECT oid FROM pg_database WHERE datname = $1", tenant_name(rid)
    )
    session = await asyncpg.connect(credentials.connection_url)
    await warm.delete(rid)
    # The open session is gone and no new one starts, before the database is dropped. A
    # session killed while asyncpg reads the kill can also surface as its InternalClientError.
    with pytest.raises(
        (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.InternalClientError)
    ):
        await session.fetchval("SELECT 1")
    await session.close()
    with pytest.raises(asyncpg.PostgresError):
        await asyncpg.connect(credentials.connection_url)
    assert not await warm.exists(rid)
    assert await warm.drops.join(within_s=30)
    assert not await customer_admin.fetchval("SELECT 1 FROM pg_database WHERE oid = $1", oid)


async def test_a_member_found_after_a_restart_is_handed_out_with_a_password_that_works(
    env: dict[str, str], store: EventStore
) -> None:
    """Its first password went with the old process: the take sets the new one."""
    first = await connect_driver(env)
    pool = first.start_pool(
        store, size=2, refill_concurrency=2, reserve=2, reconcile_interval_s=3600
    )
    assert await pool.wait_filled(within_s=30), "the pool never filled"
    made = {member.member_id for member in pool.members()}
    await first.close()

    second = await connect_driver(env)
    try:
        found = second.start_pool(
            store, size=1, refill_concurrency=1, reserve=1, reconcile_interval_s=3600
        )
        assert await found.wait_filled(within_s=30), "the restarted pool found no member"

        # The pool counts as filled at its first adopted member; the reconcile adopts the rest.
        async def adopted() -> set[uuid.UUID]:
            return made - {member.member_id for member in found.members()}

        async def all_adopted() -> bool:
            return not await adopted()

        assert await eventually(all_adopted, within=30), await adopted()
        assert all(member.verifier is not None for member in found.members())
        rid = uuid.uuid4()
        credentials = await take(second, rid)
        done = psql_select_one(credentials)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == tenant_name(rid)
        await second.delete(rid)
    finally:
        await second.close()


async def test_a_member_two_replicas_offer_is_handed_out_once(
    warm: PostgresDriver, env: dict[str, str], store: EventStore
) -> None:
    """Each replica's reconcile adopts every ready member it finds on the cluster, so two may
    offer one member. Only one rename of it succeeds; the other replica moves on to its next
    member (docs/adr/0047)."""
    first = warm.warm_pool
    assert first is not None
    offered_by_both = {member.member_id for member in first.members()}
    other = await connect_driver(env)
    made_by_second: list[uuid.UUID] = []
    try:
        second = other.start_pool(
            store, size=0, refill_concurrency=1, reserve=0, reconcile_interval_s=3600
        )

        async def second_offers_them_too() -> bool:
            return offered_by_both <= {member.member_id for member in second.members()}

        assert await eventually(second_offers_them_too, within=30)
        renamed_by_first = set()
        for _ in offered_by_both:
            rid = uuid.uuid4()
            taken = await warm.take(rid, LIMITS)
            assert taken is not None
            renamed_by_first.add(taken.member_id)
            await warm.delete(rid)
        gone = offered_by_both & renamed_by_first
        assert gone, "the first replica took none of the members both offered"

        # The second replica meets each of those as gone, skips it, and takes a live one.
        while gone & {member.member_id for member in second.members()}:
            rid = uuid.uuid4()
            taken = await other.take(rid, LIMITS)
            if taken is None:
                break
            made_by_second.append(rid)
            assert taken.member_id not in renamed_by_first
            conn = await asyncpg.connect(taken.credentials.connection_url)
            assert await conn.fetchval("SELECT current_user") == tenant_name(rid)
            await conn.close()
        assert not gone & {member.member_id for member in second.members()}
        # Skipped, not spoiled: a refused rename would have recorded the member as dropped.
        for member_id in gone:
            events = await store.load(pool_stream(member_id))
            assert isinstance(events[-1].event, PoolMemberReady), events[-1].event
    finally:
        for rid in made_by_second:
            await other.delete(rid)
        await other.close()


async def test_reconcile_drops_unknown_and_orphaned_objects_and_keeps_members(
    warm: PostgresDriver, store: EventStore, customer_admin: asyncpg.Connection
) -> None:
    pool = warm.warm_pool
    assert pool is not None
    unknown, orphan = uuid.uuid4(), uuid.uuid4()
    # An orphan: intent recorded, objects made, the process gone before Ready.
    await store.append(
        pool_stream(orphan),
        0,
        [PoolMemberRequested(member_id=orphan, kind=ResourceKind.POSTGRES, server="test")],
        command_id=uuid.uuid4(),
        correlation_id="test",
    )
    for member_id in (unknown, orphan):
        name = pool_name(member_id)
        await customer_admin.execute(f'CREATE ROLE "{name}" NOLOGIN')
        await customer_admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    members_before = {m.member_id for m in pool.members()}

    counts = await pool.reconcile(grace=timedelta(0))

    assert counts["dropped"] >= 2
    assert await warm.drops.join(within_s=30)
    for member_id in (unknown, orphan):
        assert not await customer_admin.fetchval(
            "SELECT 1 FROM pg_roles WHERE rolname = $1 UNION ALL"
            " SELECT 1 FROM pg_database WHERE datname = $1",
            pool_name(member_id),
        )
    orphan_events = await store.load(pool_stream(orphan))
    assert isinstance(orphan_events[-1].event, PoolMemberDropped)
    # Ready members stay, in the cluster and in the pool.
    assert members_before <= {m.member_id for m in pool.members()}
    for member_id in members_before:
        assert await customer_admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", pool_name(member_id)
        )


async def test_the_reapers_orphan_sweep_leaves_pool_members_alone(
    warm: PostgresDriver, store: EventStore, customer_admin: asyncpg.Connection
) -> None:
    pool = warm.warm_pool
    assert pool is not None
    members = {m.member_id for m in pool.members()}
    # The test stack's reaper sweeps every 0.5 s with a 2 s grace: several passes go by.
    await asyncio.sleep(4)
    for member_id in members:
        assert await customer_admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", pool_name(member_id)
        )
        events = await store.load(pool_stream(member_id))
        assert isinstance(events[-1].event, PoolMemberReady)
