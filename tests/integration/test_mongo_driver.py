"""MongoDriver against the real SecantusDB of the test stack."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import OperationFailure, PyMongoError
from secantus.server import DEFAULT_MAX_CONNECTIONS

from devstack.mongo import SCRAM_ITERATIONS
from devstack.stack import Stack
from mongo_provisioner import driver as driver_module
from mongo_provisioner.driver import MongoDriver
from shared.contracts.errors import (
    BackendUnavailableError,
    DropRefusedError,
    ErrorCode,
    SpinupError,
)
from shared.contracts.kinds import MongoLimits
from shared.lifecycle import Ceiling
from shared.naming import tenant_name
from shared.usage_memo import UsageMemo

pytestmark = pytest.mark.integration
LIMITS = MongoLimits(storage_mb=10)
Client = AsyncMongoClient[dict[str, Any]]
UNAUTHORIZED = 13
AUTHENTICATION_FAILED = 18


@pytest.fixture
async def root(env: dict[str, str]) -> AsyncIterator[Client]:
    client: Client = AsyncMongoClient(env["SPINUP_MONGO_ADMIN_URL"])
    yield client
    await client.close()


def tenant_client(url: str) -> Client:
    # Short selection timeout: a refused login fails fast instead of retrying for 30 s.
    return AsyncMongoClient(url, serverSelectionTimeoutMS=2000)


async def test_create_twice_gives_one_user_with_one_role_and_only_the_newest_password_works(
    mongo_driver: MongoDriver, root: Client
) -> None:
    rid = uuid.uuid4()
    first = await mongo_driver.create(rid, LIMITS)
    second = await mongo_driver.create(rid, LIMITS)
    name = tenant_name(rid)
    assert first.database == second.database == first.username == name
    assert second.connection_url.endswith(f"/{name}?authSource={name}")
    users = (await root[name].command("usersInfo", {"user": name, "db": name}))["users"]
    assert len(users) == 1
    assert users[0]["roles"] == [{"role": "readWrite", "db": name}]
    assert users[0]["mechanisms"] == ["SCRAM-SHA-256"]
    newest = tenant_client(second.connection_url)
    await newest[name].notes.insert_one({"body": "hello"})
    await newest.close()
    stale = tenant_client(first.connection_url)
    with pytest.raises(OperationFailure) as refused:
        await stale[name].command("ping")
    assert refused.value.code == 18  # AuthenticationFailed
    await stale.close()
    await mongo_driver.delete(rid)


async def test_a_tenant_verifier_takes_the_servers_iteration_count_and_still_logs_in(
    mongo_driver: MongoDriver, root: Client
) -> None:
    # The server runs with mongod's --setParameter scramSHA256IterationCount (docs/adr/0038).
    reported = await root.admin.command({"getParameter": 1, "scramSHA256IterationCount": 1})
    assert reported["scramSHA256IterationCount"] == SCRAM_ITERATIONS
    rid = uuid.uuid4()
    credentials = await mongo_driver.create(rid, LIMITS)
    name = tenant_name(rid)
    shown = await root[name].command({"usersInfo": name, "showCredentials": True})
    verifier = shown["users"][0]["credentials"]["SCRAM-SHA-256"]
    assert verifier["iterationCount"] == SCRAM_ITERATIONS
    tenant = tenant_client(credentials.connection_url)
    await tenant[name].notes.insert_one({"body": "x"})
    assert await tenant[name].notes.count_documents({}) == 1
    await tenant.close()
    await mongo_driver.delete(rid)


async def test_tenants_lists_users_and_databases_of_tenants_and_nothing_else(
    mongo_driver: MongoDriver, root: Client
) -> None:
    rid, other, database_only = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await mongo_driver.create(rid, LIMITS)
    await mongo_driver.create(other, LIMITS)
    # A delete cut off after dropUser leaves the database alone.
    await root[tenant_name(database_only)].leftovers.insert_one({"x": 1})
    # Not a tenant's: a user in another database than its name, and a database of no tenant.
    stray = tenant_name(uuid.uuid4())
    await root.admin.command({"createUser": stray, "pwd": "not-a-tenant", "roles": []})
    await root["not_a_tenant"].things.insert_one({"x": 1})
    try:
        listed = await mongo_driver.tenants()
        assert {rid, other, database_only} <= listed
        assert uuid.UUID(hex=stray.removeprefix("t_")) not in listed
        await mongo_driver.delete(rid)
        listed = await mongo_driver.tenants()
        assert rid not in listed
        assert other in listed
    finally:
        await mongo_driver.delete(other)
        await mongo_driver.delete(database_only)
        await root.admin.command("dropUser", stray)
        await root.drop_database("not_a_tenant")
    assert not {other, database_only} & await mongo_driver.tenants()


async def test_delete_is_idempotent_and_removes_user_and_database(
    mongo_driver: MongoDriver, root: Client
) -> None:
    rid = uuid.uuid4()
    credentials = await mongo_driver.create(rid, LIMITS)
    tenant = tenant_client(credentials.connection_url)
    await tenant[credentials.database].notes.insert_one({"body": "x"})
    await tenant.close()
    assert await mongo_driver.exists(rid)
    await mongo_driver.delete(rid)
    await mongo_driver.delete(rid)
    assert not await mongo_driver.exists(rid)
    assert credentials.database not in await root.list_database_names()


async def test_delete_of_a_resource_never_created_succeeds(mongo_driver: MongoDriver) -> None:
    never_created = uuid.uuid4()
    await mongo_driver.delete(never_created)
    assert not await mongo_driver.exists(never_created)


async def test_delete_cuts_open_connections_so_they_cannot_recreate_the_database(
    mongo_driver: MongoDriver, root: Client
) -> None:
    # SecantusDB keeps a dropped user's open connections authorised (mongod does not): without
    # the driver's currentOp + killOp step this write would succeed and recreate the database.
    rid = uuid.uuid4()
    credentials = await mongo_driver.create(rid, LIMITS)
    tenant = tenant_client(credentials.connection_url)
    notes = tenant[credentials.database].notes
    await notes.insert_one({"body": "before"})
    await mongo_driver.delete(rid)
    with pytest.raises(PyMongoError):
        await notes.insert_one({"body": "after"})
    await tenant.close()
    assert credentials.database not in await root.list_database_names()


async def test_guard_refuses_to_drop_a_name_without_the_tenant_prefix(
    mongo_driver: MongoDriver, root: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "tenant_name", lambda _rid: "admin")
    with pytest.raises(DropRefusedError):
        await mongo_driver.delete(uuid.uuid4())
    users = await root.admin.command("usersInfo", "root")
    assert users["users"], "the root user must still exist"


async def roles_of(root: Client, name: str) -> list[dict[str, str]]:
    users = (await root[name].command("usersInfo", {"user": name, "db": name}))["users"]
    return list(users[0]["roles"])


async def custom_roles(root: Client, name: str) -> list[str]:
    return [role["role"] for role in (await root[name].command("rolesInfo", 1))["roles"]]


async def test_rotate_refuses_the_old_password_cuts_its_connections_and_keeps_the_data(
    mongo_driver: MongoDriver, root: Client
) -> None:
    rid = uuid.uuid4()
    old = await mongo_driver.create(rid, LIMITS)
    name = old.database
    opened_before = tenant_client(old.connection_url)
    await opened_before[name].notes.insert_one({"body": "kept"})
    new = await mongo_driver.rotate(rid, LIMITS)
    assert (new.host, new.port, new.database, new.username) == (
        old.host,
        old.port,
        old.database,
        old.username,
    )
    assert new.password != old.password
    # The open connection was closed; the client's reconnect logs in with the old password.
    with pytest.raises(PyMongoError):
        await opened_before[name].notes.insert_one({"body": "after rotate"})
    await opened_before.close()
    stale = tenant_client(old.connection_url)
    with pytest.raises(OperationFailure) as refused:
        await stale[name].command("ping")
    assert refused.value.code == AUTHENTICATION_FAILED
    await stale.close()
    fresh = tenant_client(new.connection_url)
    assert [d["body"] async for d in fresh[name].notes.find()] == ["kept"]
    await fresh[name].notes.insert_one({"body": "new key writes"})
    await fresh.close()
    assert await roles_of(root, name) == [{"role": "readWrite", "db": name}]
    await mongo_driver.delete(rid)


async def test_rotate_of_a_resource_never_created_is_not_found(mongo_driver: MongoDriver) -> None:
    with pytest.raises(SpinupError) as missing:
        await mongo_driver.rotate(uuid.uuid4(), LIMITS)
    assert missing.value.code is ErrorCode.NOT_FOUND


async def test_set_limits_changes_nothing_the_tenant_sees(
    mongo_driver: MongoDriver, root: Client
) -> None:
    # MongoDB has no per-database limit: storage_mb lives in the sweep, so the user, its role
    # and its open connections stay exactly as they were.
    rid = uuid.uuid4()
    credentials = await mongo_driver.create(rid, LIMITS)
    name = credentials.database
    tenant = tenant_client(credentials.connection_url)
    await tenant[name].notes.insert_one({"body": "before"})
    await mongo_driver.set_limits(rid, MongoLimits(storage_mb=LIMITS.storage_mb * 10))
    await mongo_driver.set_limits(rid, MongoLimits(storage_mb=LIMITS.storage_mb * 10))
    await tenant[name].notes.insert_one({"body": "after"})
    assert await tenant[name].notes.count_documents({}) == 2
    await tenant.close()
    assert await roles_of(root, name) == [{"role": "readWrite", "db": name}]
    await mongo_driver.set_limits(uuid.uuid4(), LIMITS)  # never created: nothing to do
    await mongo_driver.delete(rid)


async def test_usage_measures_what_each_tenant_stored_and_leaves_out_missing_ones(
    mongo_driver: MongoDriver,
) -> None:
    writer, idle, never_created = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    credentials = await mongo_driver.create(writer, LIMITS)
    await mongo_driver.create(idle, LIMITS)
    assert await mongo_driver.usage([writer, idle, never_created]) == {writer: 0, idle: 0}
    tenant = tenant_client(credentials.connection_url)
    blobs = tenant[credentials.database].blobs
    await blobs.insert_many([{"n": i, "blob": "x" * 10_000} for i in range(20)])
    stored = (await mongo_driver.usage([writer, idle]))[writer]
    assert 200_000 <= stored < 250_000  # the documents' BSON plus their _id index
    await blobs.insert_many([{"n": i, "blob": "x" * 10_000} for i in range(20, 40)])
    grown = (await mongo_driver.usage([writer]))[writer]
    assert 400_000 <= grown < 500_000
    # Deleting frees quota at once: the figure is not the space allocated on disk.
    await blobs.delete_many({"n": {"$gte": 10}})
    assert 100_000 <= (await mongo_driver.usage([writer]))[writer] < 125_000
    await tenant.close()
    assert await mongo_driver.usage([]) == {}
    await mongo_driver.delete(writer)
    await mongo_driver.delete(idle)
    assert await mongo_driver.usage([writer, idle]) == {}


class _CommandNames(monitoring.CommandListener):
    """The name of every command a client sends (it observes; the server answers them all)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_usage_asks_db_stats_only_of_tenants_that_have_a_database(
    mongo_driver: MongoDriver, env: dict[str, str]
) -> None:
    # ADR 0059: a tenant that never wrote has no database and uses 0, asked nothing more.
    writer, *unused = (uuid.uuid4() for _ in range(4))
    credentials = await mongo_driver.create(writer, LIMITS)
    for rid in unused:
        await mongo_driver.create(rid, LIMITS)
    tenant = tenant_client(credentials.connection_url)
    await tenant[credentials.database].notes.insert_one({"n": 1})
    await tenant.close()
    sent = _CommandNames()
    watched = MongoDriver(
        AsyncMongoClient(env["SPINUP_MONGO_ADMIN_URL"], event_listeners=[sent]),
        public_host=env["SPINUP_MONGO_HOST"],
        public_port=int(env["SPINUP_MONGO_PORT"]),
    )
    try:
        usage = await watched.usage([writer, *unused])
    finally:
        await watched.close()
    assert usage[writer] > 0
    assert {usage[rid] for rid in unused} == {0}
    assert sent.names.count("dbStats") == 1, sent.names
    for rid in (writer, *unused):
        await mongo_driver.delete(rid)


async def test_block_writes_refuses_adding_data_on_an_open_connection_reads_and_deletes_work(
    mongo_driver: MongoDriver, root: Client
) -> None:
    rid = uuid.uuid4()
    credentials = await mongo_driver.create(rid, LIMITS)
    name = credentials.database
    opened_before = tenant_client(credentials.connection_url)
    notes = opened_before[name].notes
    await notes.insert_many([{"n": i} for i in range(3)])
    await opened_before[name].scratch.insert_one({"n": 0})
    await mongo_driver.block_writes(rid, usage=2, quota=1)
    await mongo_driver.block_writes(rid, usage=3, quota=1)  # every sweep pass while over
    assert await roles_of(root, name) == [{"role": "readAndDelete", "db": name}]
    for write in (
        notes.insert_one({"n": 9}),
        notes.update_one({"n": 0}, {"$set": {"big": "x" * 1000}}),
        notes.create_index("n"),
        opened_before[name].create_collection("fresh"),
    ):
        with pytest.raises(OperationFailure) as refused:
            await write
        assert refused.value.code == UNAUTHORIZED
    assert await notes.count_documents({}) == 3
    assert (await notes.delete_one({"n": 0})).deleted_count == 1
    await opened_before[name].scratch.drop()
    assert await opened_before[name].list_collection_names() == ["notes"]
    # A new login is blocked too, and a rotation keeps the block.
    rotated = await mongo_driver.rotate(rid, LIMITS)
    await opened_before.close()
    tenant = tenant_client(rotated.connection_url)
    with pytest.raises(OperationFailure) as refused_after_rotate:
        await tenant[name].notes.insert_one({"n": 10})
    assert refused_after_rotate.value.code == UNAUTHORIZED
    await mongo_driver.allow_writes(rid)
    await tenant[name].notes.insert_one({"n": 10})  # the same open connection writes again
    await tenant[name].notes.update_one({"n": 1}, {"$set": {"edited": True}})
    await tenant.close()
    await mongo_driver.allow_writes(rid)
    assert await roles_of(root, name) == [{"role": "readWrite", "db": name}]
    assert await custom_roles(root, name) == []
    await mongo_driver.delete(rid)


async def test_allow_writes_on_a_never_blocked_tenant_changes_nothing(
    mongo_driver: MongoDriver, root: Client
) -> None:
    rid = uuid.uuid4()
    credentials = await mongo_driver.create(rid, LIMITS)
    await mongo_driver.allow_writes(rid)
    tenant = tenant_client(credentials.connection_url)
    await tenant[credentials.database].notes.insert_one({"body": "still writes"})
    await tenant.close()
    assert await roles_of(root, credentials.database) == [
        {"role": "readWrite", "db": credentials.database}
    ]
    await mongo_driver.delete(rid)


async def test_block_and_allow_of_a_resource_never_created_leave_nothing_behind(
    mongo_driver: MongoDriver, root: Client
) -> None:
    never_created = uuid.uuid4()
    await mongo_driver.block_writes(never_created, usage=2, quota=1)
    await mongo_driver.allow_writes(never_created)
    assert await custom_roles(root, tenant_name(never_created)) == []
    assert not await mongo_driver.exists(never_created)


async def test_delete_of_a_blocked_tenant_drops_the_role_as_well(
    mongo_driver: MongoDriver, root: Client
) -> None:
    # dropDatabase keeps the roles defined on it; a re-created tenant must not inherit one.
    rid = uuid.uuid4()
    await mongo_driver.create(rid, LIMITS)
    await mongo_driver.block_writes(rid, usage=2, quota=1)
    assert await custom_roles(root, tenant_name(rid)) == ["readAndDelete"]
    await mongo_driver.delete(rid)
    assert await custom_roles(root, tenant_name(rid)) == []


async def test_capacity_reports_open_connections_against_the_servers_max_connections(
    mongo_driver: MongoDriver, env: dict[str, str]
) -> None:
    # devstack passes SecantusDB no ceiling of its own: it refuses connections past its default.
    used, limit = (await mongo_driver.capacity())[Ceiling.CONNECTIONS]
    assert limit == DEFAULT_MAX_CONNECTIONS
    assert 0 < used < limit
    clients: list[Client] = [AsyncMongoClient(env["SPINUP_MONGO_ADMIN_URL"]) for _ in range(5)]
    try:
        for client in clients:
            await client.admin.command("ping")
        assert (await mongo_driver.capacity())[Ceiling.CONNECTIONS][0] >= used + len(clients)
    finally:
        for client in clients:
            await client.close()


async def test_server_down_is_backend_unavailable_within_seconds(
    stack: Stack, mongo_driver: MongoDriver
) -> None:
    rid = uuid.uuid4()
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: mongo_driver.create(rid, LIMITS),
        lambda: mongo_driver.delete(rid),
        lambda: mongo_driver.rotate(rid, LIMITS),
        lambda: mongo_driver.usage([rid]),
        lambda: mongo_driver.block_writes(rid, usage=2, quota=1),
        lambda: mongo_driver.allow_writes(rid),
        mongo_driver.capacity,
    ]
    stack.stop_server("mongo")
    try:
        started = time.monotonic()
        # Together: each waits out the server selection timeout.
        outcomes = await asyncio.gather(*(op() for op in operations), return_exceptions=True)
        assert time.monotonic() - started < 10
        assert [type(outcome) for outcome in outcomes] == [BackendUnavailableError] * len(
            operations
        )
    finally:
        stack.start_server("mongo")
    await mongo_driver.ping()


async def test_a_database_whose_write_counters_did_not_move_keeps_its_last_measure(
    env: dict[str, str],
) -> None:
    # ADR 0061: SecantusDB's dbStats reads every document under its storage lock.
    sent = _CommandNames()
    watched = MongoDriver(
        AsyncMongoClient(env["SPINUP_MONGO_ADMIN_URL"], event_listeners=[sent]),
        public_host=env["SPINUP_MONGO_HOST"],
        public_port=int(env["SPINUP_MONGO_PORT"]),
        measures=UsageMemo(settle_s=0),
    )
    rid = uuid.uuid4()
    try:
        credentials = await watched.create(rid, LIMITS)
        tenant = tenant_client(credentials.connection_url)
        notes = tenant[credentials.database].notes
        await notes.insert_one({"body": "x" * 1000})
        first = (await watched.usage([rid]))[rid]
        assert first > 0
        assert sent.names.count("dbStats") == 1
        assert (await watched.usage([rid]))[rid] == first
        assert sent.names.count("dbStats") == 1, "nothing was written: the measure stands"

        await notes.insert_one({"body": "y" * 1000})
        assert (await watched.usage([rid]))[rid] > first
        assert sent.names.count("dbStats") == 2
        await notes.delete_many({})
        assert (await watched.usage([rid]))[rid] < first
        assert sent.names.count("dbStats") == 3

        sweep_id = uuid.uuid4()
        tops = sent.names.count("top")
        for _ in range(3):
            await watched.usage([rid], sweep_id=sweep_id)
        assert sent.names.count("top") == tops + 1, "top is read once a sweep"
        await tenant.close()
    finally:
        await watched.delete(rid)
        await watched.close()
