"""MongoDriver against the real SecantusDB of the test stack."""

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import OperationFailure, PyMongoError

from devstack.stack import Stack
from mongo_provisioner import driver as driver_module
from mongo_provisioner.driver import MongoDriver
from shared.contracts.errors import BackendUnavailableError, DropRefusedError
from shared.contracts.kinds import MongoLimits
from shared.naming import tenant_name

pytestmark = pytest.mark.integration
LIMITS = MongoLimits(storage_mb=10)
Client = AsyncIOMotorClient[dict[str, Any]]


@pytest.fixture
async def mongo_driver(env: dict[str, str]) -> AsyncIterator[MongoDriver]:
    connected = await MongoDriver.connect(
        env["SPINUP_MONGO_ADMIN_URL"],
        public_host=env["SPINUP_MONGO_HOST"],
        public_port=int(env["SPINUP_MONGO_PORT"]),
    )
    yield connected
    await connected.close()


@pytest.fixture
async def root(env: dict[str, str]) -> AsyncIterator[Client]:
    client: Client = AsyncIOMotorClient(env["SPINUP_MONGO_ADMIN_URL"])
    yield client
    client.close()


def tenant_client(url: str) -> Client:
    # Short selection timeout: a refused login fails fast instead of retrying for 30 s.
    return AsyncIOMotorClient(url, serverSelectionTimeoutMS=2000)


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
    newest.close()
    stale = tenant_client(first.connection_url)
    with pytest.raises(OperationFailure) as refused:
        await stale[name].command("ping")
    assert refused.value.code == 18  # AuthenticationFailed
    stale.close()
    await mongo_driver.delete(rid)


async def test_delete_is_idempotent_and_removes_user_and_database(
    mongo_driver: MongoDriver, root: Client
) -> None:
    rid = uuid.uuid4()
    credentials = await mongo_driver.create(rid, LIMITS)
    tenant = tenant_client(credentials.connection_url)
    await tenant[credentials.database].notes.insert_one({"body": "x"})
    tenant.close()
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
    tenant.close()
    assert credentials.database not in await root.list_database_names()


async def test_guard_refuses_to_drop_a_name_without_the_tenant_prefix(
    mongo_driver: MongoDriver, root: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "tenant_name", lambda _rid: "admin")
    with pytest.raises(DropRefusedError):
        await mongo_driver.delete(uuid.uuid4())
    users = await root.admin.command("usersInfo", "root")
    assert users["users"], "the root user must still exist"


async def test_storage_is_measured_with_dbstats_for_the_usage_sweep(
    mongo_driver: MongoDriver,
) -> None:
    rid = uuid.uuid4()
    credentials = await mongo_driver.create(rid, LIMITS)
    tenant = tenant_client(credentials.connection_url)
    await tenant[credentials.database].blobs.insert_many(
        [{"blob": "x" * 10_000} for _ in range(20)]
    )
    tenant.close()
    assert await mongo_driver.storage_bytes(rid) >= 200_000
    await mongo_driver.delete(rid)


async def test_server_down_is_backend_unavailable_within_seconds(
    stack: Stack, mongo_driver: MongoDriver
) -> None:
    stack.stop_server("mongo")
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            await mongo_driver.create(uuid.uuid4(), LIMITS)
        with pytest.raises(BackendUnavailableError):
            await mongo_driver.delete(uuid.uuid4())
        assert time.monotonic() - started < 10
    finally:
        stack.start_server("mongo")
    await mongo_driver.ping()
