"""A user's view: create MongoDB databases over HTTP, use them with PyMongo, try to break isolation.

The plan limit (``storage_mb``) has no per-database cap in MongoDB, so it is not tested here as
enforced: the ``dbStats`` usage sweep enforces it (the driver's measurement is tested in
tests/integration/test_mongo_driver.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from bson import Int64
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from devstack.secantusd import MAX_CURSORS_PER_USER
from devstack.stack import Stack
from shared.testing.polling import eventually
from tests.e2e.conftest import SHORT_TTL_S, new_resource

pytestmark = pytest.mark.e2e
Client = AsyncMongoClient[dict[str, Any]]
UNAUTHORIZED = 13
AUTHENTICATION_FAILED = 18


def client_of(url: str) -> Client:
    # Short selection timeout: a refused login fails within seconds instead of 30.
    return AsyncMongoClient(url, serverSelectionTimeoutMS=2000)


@pytest.fixture
async def root(env: dict[str, str]) -> AsyncIterator[Client]:
    client: Client = AsyncMongoClient(env["SPINUP_MONGO_ADMIN_URL"])
    yield client
    await client.close()


async def user_and_database_gone(root: Client, body: dict[str, Any]) -> bool:
    name = body["credentials"]["database"]
    users = await root[name].command("usersInfo", {"user": name, "db": name})
    return not users["users"] and name not in await root.list_database_names()


async def test_new_nosql_gives_a_database_of_its_own_that_works(http: httpx.AsyncClient) -> None:
    body = await new_resource(http, "nosql")
    credentials = body["credentials"]
    name = "t_" + uuid.UUID(body["id"]).hex
    assert credentials["type"] == "mongo"
    assert credentials["database"] == credentials["username"] == name
    assert body["connection_url"].endswith(f"/{name}?authSource={name}")
    assert set(body["limits"]) == {"storage_mb", "expires_in"}
    client = client_of(body["connection_url"])
    try:
        # The database named in the URL is the default one, as drivers and tools expect.
        database = client.get_default_database()
        await database.notes.insert_one({"body": "hello"})
        assert await database.notes.find_one({}, {"_id": 0}) == {"body": "hello"}
        assert await database.list_collection_names() == ["notes"]
    finally:
        await client.close()


async def test_two_tenants_each_keep_their_own_data(http: httpx.AsyncClient) -> None:
    a, b = await new_resource(http, "nosql"), await new_resource(http, "nosql")
    for db, value in ((a, "from a"), (b, "from b")):
        client = client_of(db["connection_url"])
        await client.get_default_database().notes.insert_one({"body": value})
        await client.close()
    for db, value in ((a, "from a"), (b, "from b")):
        client = client_of(db["connection_url"])
        found = await client.get_default_database().notes.find({}, {"_id": 0}).to_list(None)
        assert found == [{"body": value}]
        await client.close()


async def _aggregated(
    collection: AsyncCollection[dict[str, Any]], pipeline: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    return await (await collection.aggregate(pipeline)).to_list(None)


async def _next_change(database: AsyncDatabase[dict[str, Any]]) -> object:
    async with await database.watch() as stream:
        return await stream.try_next()


# Every escape route from tenant A into tenant B's database, or the server's own databases.
# Each must be refused by the server; a route that succeeds is a leak.
Escape = Callable[[Client, str], Awaitable[object]]
ESCAPES: dict[str, Escape] = {
    "find in B": lambda a, b: a[b].notes.find_one({}),
    "insert in B": lambda a, b: a[b].notes.insert_one({"by": "a"}),
    "update in B": lambda a, b: a[b].notes.update_many({}, {"$set": {"by": "a"}}),
    "delete in B": lambda a, b: a[b].notes.delete_many({}),
    "count in B": lambda a, b: a[b].notes.count_documents({}),
    "aggregate in B": lambda a, b: _aggregated(a[b].notes, []),
    "watch B": lambda a, b: _next_change(a[b]),
    "listCollections of B": lambda a, b: a[b].list_collection_names(),
    "listIndexes of B": lambda a, b: a[b].notes.index_information(),
    "dbStats of B": lambda a, b: a[b].command("dbStats"),
    "drop a collection of B": lambda a, b: a[b].notes.drop(),
    "dropDatabase B": lambda a, b: a.drop_database(b),
    "usersInfo of B": lambda a, b: a[b].command("usersInfo", b),
    "dropUser B": lambda a, b: a[b].command("dropUser", b),
    "createUser in own db": lambda a, b: a[own(a)].command(
        "createUser", "intruder", pwd="x", roles=[{"role": "readWrite", "db": b}]
    ),
    "createUser in admin": lambda a, _b: a.admin.command(
        "createUser", "intruder", pwd="x", roles=["root"]
    ),
    "grant itself B": lambda a, b: a[own(a)].command(
        "grantRolesToUser", own(a), roles=[{"role": "readWrite", "db": b}]
    ),
    "$out into B": lambda a, b: _aggregated(a[own(a)].mine, [{"$out": {"db": b, "coll": "x"}}]),
    "$merge into B": lambda a, b: _aggregated(
        a[own(a)].mine, [{"$merge": {"into": {"db": b, "coll": "x"}}}]
    ),
    "renameCollection into B": lambda a, b: a.admin.command(
        "renameCollection", f"{own(a)}.mine", to=f"{b}.notes", dropTarget=True
    ),
    "renameCollection out of B": lambda a, b: a.admin.command(
        "renameCollection", f"{b}.notes", to=f"{own(a)}.stolen"
    ),
    "bulkWrite delete in B": lambda a, b: a.admin.command(
        "bulkWrite",
        ops=[{"delete": 0, "filter": {}, "multi": True}],
        nsInfo=[{"ns": f"{b}.notes"}],
    ),
    "bulkWrite insert in B": lambda a, b: a.admin.command(
        "bulkWrite", ops=[{"insert": 0, "document": {"by": "a"}}], nsInfo=[{"ns": f"{b}.notes"}]
    ),
    "killAllSessions": lambda a, _b: a.admin.command("killAllSessions", []),
    "killAllSessionsByPattern of B": lambda a, b: a.admin.command(
        "killAllSessionsByPattern", [{"users": [{"user": b, "db": b}]}]
    ),
    "currentOp": lambda a, _b: a.admin.command("currentOp", {"$all": True}),
    "serverStatus": lambda a, _b: a.admin.command("serverStatus"),
    "replSetGetStatus": lambda a, _b: a.admin.command("replSetGetStatus"),
    "getLog": lambda a, _b: a.admin.command("getLog", "global"),
    "find in admin": lambda a, _b: a.admin["system.users"].find_one({}),
    "insert in admin": lambda a, _b: a.admin.x.insert_one({}),
    "listCollections of admin": lambda a, _b: a.admin.list_collection_names(),
    "find in config": lambda a, _b: a.config.x.find_one({}),
    "insert in config": lambda a, _b: a.config.x.insert_one({}),
    "find in local": lambda a, _b: a.local["oplog.rs"].find_one({}),
    "insert in local": lambda a, _b: a.local.x.insert_one({}),
    "listCollections of local": lambda a, _b: a.local.list_collection_names(),
}


def own(client: Client) -> str:
    name = client.get_default_database().name
    assert isinstance(name, str)
    return name


@pytest.fixture
async def two_tenants(http: httpx.AsyncClient) -> AsyncIterator[tuple[dict[str, Any], ...]]:
    a, b = await new_resource(http, "nosql"), await new_resource(http, "nosql")
    client_b = client_of(b["connection_url"])
    await client_b.get_default_database().notes.insert_one({"by": "b"})
    await client_b.close()
    client_a = client_of(a["connection_url"])
    await client_a.get_default_database().mine.insert_one({"by": "a"})
    await client_a.close()
    yield a, b
    for tenant in (a, b):
        await http.delete(f"/resources/{tenant['token']}")


@pytest.mark.parametrize("route", list(ESCAPES))
async def test_tenant_cannot_escape_into_another_tenant_or_the_server(
    two_tenants: tuple[dict[str, Any], ...], root: Client, route: str
) -> None:
    a, b = two_tenants
    b_name = b["credentials"]["database"]
    client_a = client_of(a["connection_url"])
    try:
        with pytest.raises(OperationFailure) as refused:
            await ESCAPES[route](client_a, b_name)
        assert refused.value.code == UNAUTHORIZED, refused.value.details
        # A's own data stays reachable: the refusal is about B, not a broken client.
        assert await client_a.get_default_database().mine.find_one({}, {"_id": 0}) == {"by": "a"}
    finally:
        await client_a.close()
    assert await root[b_name].notes.find({}, {"_id": 0}).to_list(None) == [{"by": "b"}]
    assert await root[b_name].list_collection_names() == ["notes"]
    for database in (a["credentials"]["database"], b_name, "admin"):
        assert not (await root[database].command("usersInfo", "intruder"))["users"]


async def test_a_tenant_can_neither_read_nor_kill_another_tenants_cursor(
    two_tenants: tuple[dict[str, Any], ...],
) -> None:
    a, b = two_tenants
    b_name = b["credentials"]["database"]
    client_a, client_b = client_of(a["connection_url"]), client_of(b["connection_url"])
    try:
        database_b = client_b.get_default_database()
        await database_b.notes.insert_many([{"n": n} for n in range(5)])
        opened = await database_b.command("find", "notes", batchSize=1)
        cursor = Int64(opened["cursor"]["id"])
        assert cursor
        with pytest.raises(OperationFailure) as refused:
            await client_a[b_name].command("getMore", cursor, collection="notes")
        assert refused.value.code == UNAUTHORIZED, refused.value.details
        with pytest.raises(OperationFailure) as refused:
            await client_a[b_name].command("killCursors", "notes", cursors=[cursor])
        assert refused.value.code == UNAUTHORIZED, refused.value.details
        # From its own database A may send killCursors, which finds no such cursor there.
        answer = await client_a[own(client_a)].command("killCursors", "mine", cursors=[cursor])
        assert answer["cursorsKilled"] == []
        assert answer["cursorsNotFound"] == [cursor]
        rest = await database_b.command("getMore", cursor, collection="notes", batchSize=10)
        assert len(rest["cursor"]["nextBatch"]) == 5  # B's cursor was neither read nor closed
    finally:
        await client_a.close()
        await client_b.close()


async def test_one_tenants_open_cursors_leave_the_server_room_for_others(
    two_tenants: tuple[dict[str, Any], ...],
) -> None:
    a, b = two_tenants
    client_a, client_b = client_of(a["connection_url"]), client_of(b["connection_url"])
    try:
        database_a = client_a.get_default_database()
        await database_a.mine.insert_one({"by": "a, again"})
        cursors: list[Int64] = []
        for _ in range(MAX_CURSORS_PER_USER):
            opened = await database_a.command("find", "mine", batchSize=1)
            cursors.append(Int64(opened["cursor"]["id"]))
        with pytest.raises(OperationFailure) as refused:
            await database_a.command("find", "mine", batchSize=1)
        assert "open cursors" in str(refused.value)
        # B pages through its own documents as ever.
        database_b = client_b.get_default_database()
        await database_b.notes.insert_many([{"n": n} for n in range(10)])
        assert len(await database_b.notes.find({}, batch_size=2).to_list(None)) == 11
        # A closes one of its cursors and may open one again.
        await database_a.command("killCursors", "mine", cursors=cursors[:1])
        again = await database_a.command("find", "mine", batchSize=1)
        assert again["cursor"]["id"]
    finally:
        await client_a.close()
        await client_b.close()


@pytest.mark.parametrize(
    "options",
    [{"nameOnly": True}, {"nameOnly": False}, {}, {"authorizedDatabases": True}],
    ids=["nameOnly", "with sizes", "no options", "authorizedDatabases"],
)
async def test_tenant_lists_exactly_its_own_database(
    two_tenants: tuple[dict[str, Any], ...], options: dict[str, bool]
) -> None:
    # As mongod: a user without the listDatabases privilege is answered with the databases it
    # has privileges on (authorizedDatabases defaults to true for it), so drivers and Compass,
    # which call it first, work; other tenants' names never appear.
    a, _b = two_tenants
    client_a = client_of(a["connection_url"])
    try:
        reply = await client_a.admin.command({"listDatabases": 1, **options})
        assert [db["name"] for db in reply["databases"]] == [a["credentials"]["database"]]
        if not options.get("nameOnly"):
            (own,) = reply["databases"]
            assert own["sizeOnDisk"] > 0
            assert reply["totalSize"] == own["sizeOnDisk"]
    finally:
        await client_a.close()


async def test_tenant_is_refused_the_list_of_all_databases(
    two_tenants: tuple[dict[str, Any], ...],
) -> None:
    a, _b = two_tenants
    client_a = client_of(a["connection_url"])
    try:
        with pytest.raises(OperationFailure) as refused:
            await client_a.admin.command("listDatabases", authorizedDatabases=False)
        assert refused.value.code == UNAUTHORIZED
    finally:
        await client_a.close()


async def test_list_database_names_works_for_a_tenant_and_the_admin(
    two_tenants: tuple[dict[str, Any], ...], root: Client
) -> None:
    a, b = two_tenants
    names = [a["credentials"]["database"], b["credentials"]["database"]]
    client_a = client_of(a["connection_url"])
    try:
        assert await client_a.list_database_names() == names[:1]
    finally:
        await client_a.close()

    def with_pymongo() -> list[str]:
        client: MongoClient[dict[str, Any]] = MongoClient(
            a["connection_url"], serverSelectionTimeoutMS=2000
        )
        with client:
            return client.list_database_names()

    assert await asyncio.to_thread(with_pymongo) == names[:1]
    # The admin (root: the cluster-wide privilege) still sees every database.
    assert set(names) <= set(await root.list_database_names())
    reply = await root.admin.command("listDatabases", nameOnly=True, authorizedDatabases=False)
    assert set(names) <= {db["name"] for db in reply["databases"]}


async def test_wrong_password_or_another_tenants_auth_source_is_refused(
    two_tenants: tuple[dict[str, Any], ...],
) -> None:
    a, b = two_tenants
    name_a, name_b = a["credentials"]["database"], b["credentials"]["database"]
    wrong_password = a["connection_url"].replace(a["credentials"]["password"], "not-the-password")
    a_as_b = f"mongodb://{name_a}:{a['credentials']['password']}@{a['credentials']['host']}:"
    a_as_b += f"{a['credentials']['port']}/{name_b}?authSource={name_b}"
    for url in (wrong_password, a_as_b):
        client = client_of(url)
        try:
            with pytest.raises(OperationFailure) as refused:
                await client.get_default_database().command("ping")
            assert refused.value.code == AUTHENTICATION_FAILED
        finally:
            await client.close()


async def test_delete_stops_the_credentials_at_once_and_drops_open_connections(
    http: httpx.AsyncClient, root: Client
) -> None:
    body = await new_resource(http, "nosql")
    client = client_of(body["connection_url"])
    notes = client.get_default_database().notes
    await notes.insert_one({"body": "before"})
    response = await http.delete(f"/resources/{body['token']}")
    assert response.status_code == 200, response.text
    # The open connection was cut; its reconnect cannot log in: nothing is written.
    with pytest.raises(PyMongoError):
        await notes.insert_one({"body": "after"})
    await client.close()
    fresh = client_of(body["connection_url"])
    try:
        with pytest.raises(OperationFailure) as refused:
            await fresh.get_default_database().command("ping")
        assert refused.value.code == AUTHENTICATION_FAILED
    finally:
        await fresh.close()
    assert await user_and_database_gone(root, body)
    assert (await http.get(f"/resources/{body['token']}")).status_code == 404


async def test_expired_database_is_reaped_user_and_data_gone(
    http: httpx.AsyncClient, short_ttl_http: httpx.AsyncClient, root: Client
) -> None:
    body = await new_resource(short_ttl_http, "nosql")
    assert body["limits"]["expires_in"] <= SHORT_TTL_S
    client = client_of(body["connection_url"])
    await client.get_default_database().notes.insert_one({"body": "short-lived"})
    await client.close()

    async def gone() -> bool:
        return (await http.get(f"/resources/{body['token']}")).status_code == 410

    assert await eventually(gone), "the reaper did not expire the database"
    assert await user_and_database_gone(root, body)


async def test_mongodb_down_gives_503_and_a_database_after_it_returns(
    stack: Stack, http: httpx.AsyncClient, root: Client
) -> None:
    stack.stop_server("mongo")
    try:
        response = await http.post("/nosql/new")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "backend_unavailable"
    finally:
        stack.start_server("mongo")
    body = await new_resource(http, "nosql")
    client = client_of(body["connection_url"])
    await client.get_default_database().notes.insert_one({"body": "back"})
    await client.close()
    await http.delete(f"/resources/{body['token']}")
