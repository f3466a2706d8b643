"""Tenant user + database on the customer MongoDB.

Why care: this module drops databases and users. Every name comes from
``shared.naming.tenant_name`` and passes ``guard_tenant_name`` before any drop. Only standard
MongoDB commands are used (``createUser``, ``updateUser``, ``dropUser``, ``dropDatabase``,
``createRole``, ``updateRole``, ``dropRole``, ``dropAllRolesFromDatabase``, ``usersInfo``,
``listDatabases``, ``dbStats``, ``currentOp``, ``killOp``, ``serverStatus``, and for exports
``listCollections``, ``find``, ``listIndexes``), so the same code runs against a real
mongod as against SecantusDB.

Cutting open connections on delete: mongod de-authorises a dropped user's open connections by
itself; SecantusDB 0.7.0b3 does not (they keep writing, and recreate the dropped database). So
after ``dropUser`` the driver lists every connection with ``currentOp {$all: true}``, keeps the
ones whose ``effectiveUsers`` name the tenant, and ``killOp``s them (SecantusDB closes the
socket; on mongod it ends the op of an already de-authorised client). Then ``dropDatabase``.

Storage quota: MongoDB has no per-database limit, so the usage sweep measures ``dbStats`` and,
over quota, swaps the user's ``readWrite`` for ``readAndDelete``, a role the driver defines in
the tenant's database: find, remove and drop, never insert, update or create. Role changes
reach open connections at their next command (mongod; devstack's SecantusDB launcher adds
this, ADR 0006). Back under, ``readWrite`` returns and the role is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog
from bson import json_util
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from shared.contracts.errors import BackendUnavailableError, ErrorCode, SpinupError
from shared.contracts.kinds import (
    EXPORT_FORMATS,
    MongoCredentials,
    MongoLimits,
    ResourceKind,
)
from shared.exporting import TAR_END, chunked, spooled_member
from shared.lifecycle import Ceiling
from shared.naming import guard_tenant_name, tenant_name, tenant_resource_id
from shared.observability.metrics import USAGE_MEASURED, USAGE_MEASURES, USAGE_STANDING
from shared.usage_memo import UsageMemo

if TYPE_CHECKING:
    from uuid import UUID

log = structlog.get_logger("mongo_provisioner.driver")

# Server error codes (the same numbers on mongod and SecantusDB).
USER_NOT_FOUND = 11
USER_ALREADY_EXISTS = 51003
ROLE_NOT_FOUND = 31
ROLE_ALREADY_EXISTS = 51002
# Answer well within the endpoint's timeout when the server is down: the worker replies 503.
SERVER_SELECTION_TIMEOUT_MS = 3000
CONNECT_TIMEOUT_MS = 2000
SOCKET_TIMEOUT_MS = 20000
SCRAM = "SCRAM-SHA-256"
# dbStats requests in flight at once during a usage sweep (each one is a scan on SecantusDB).
USAGE_CONCURRENCY = 8

#: The role an over-quota tenant holds instead of ``readWrite``, defined in its own database.
OVER_QUOTA_ROLE = "readAndDelete"
#: What it keeps: reading, and every way to free space (delete documents, drop collections and
#: indexes). Not insert, update, createCollection or createIndex, which add data.
OVER_QUOTA_ACTIONS = (
    "find",
    "remove",
    "dropCollection",
    "dropIndex",
    "listCollections",
    "listIndexes",
    "collStats",
    "dbStats",
    "killCursors",
    "changeStream",
)

Document = dict[str, Any]


def tenant_connection_url(name: str, password: str, host: str, port: int) -> str:
    """``mongodb://t_x:pw@host:port/t_x?authSource=t_x``: the user lives in its own database."""
    return f"mongodb://{name}:{quote(password, safe='')}@{host}:{port}/{name}?authSource={name}"


def _over_quota_role(name: str) -> Document:
    """``createRole``/``updateRole`` body of ``OVER_QUOTA_ROLE`` in database ``name``."""
    return {
        "privileges": [
            {"resource": {"db": name, "collection": ""}, "actions": list(OVER_QUOTA_ACTIONS)}
        ],
        "roles": [],
    }


def _holds_user(operation: Mapping[str, Any], name: str) -> bool:
    users = operation.get("effectiveUsers") or []
    return any(
        isinstance(u, Mapping) and u.get("user") == name and u.get("db") == name for u in users
    )


class MongoDriver:
    """Creates and drops tenant users and databases through a root client."""

    kind = ResourceKind.MONGO

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        *,
        public_host: str,
        public_port: int,
        measures: UsageMemo | None = None,
    ) -> None:
        """``measures``: what the usage sweep remembers of its measures (``shared.usage_memo``)."""
        self._client = client
        self._public_host = public_host
        self._public_port = public_port
        self._measures = UsageMemo() if measures is None else measures
        # The write counters ``top`` gave the last sweep's first page (``_write_figures``).
        self._top: tuple[UUID, dict[str, tuple[int, int]] | None] | None = None

    @classmethod
    async def connect(cls, admin_url: str, *, public_host: str, public_port: int) -> MongoDriver:
        """Build the root client and check the server answers.

        Raises:
            BackendUnavailableError: the server did not answer in time.
        """
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            admin_url,
            serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            connectTimeoutMS=CONNECT_TIMEOUT_MS,
            socketTimeoutMS=SOCKET_TIMEOUT_MS,
            appname="mongo-provisioner",
        )
        driver = cls(client, public_host=public_host, public_port=public_port)
        try:
            await driver.ping()
        except BaseException:
            await client.close()
            raise
        return driver

    async def close(self) -> None:
        """Close the root client."""
        await self._client.close()

    async def ping(self) -> None:
        """Check the server answers (start-up waits on this)."""
        async with self._backend_errors("checked"):
            await self._client.admin.command("ping")

    async def capacity(self) -> dict[Ceiling, tuple[int, int]]:
        """Client connections against the most the server accepts: one ``serverStatus``.

        Past it the server refuses every new connection, whoever it is for. The ceiling is
        ``current + available`` (mongod: its ``maxIncomingConnections``; SecantusDB: its
        ``max_connections``, reported by devstack's launcher).
        """
        async with self._backend_errors("checked"):
            status = await self._client.admin.command("serverStatus")
        current = int(status["connections"]["current"])
        return {Ceiling.CONNECTIONS: (current, current + int(status["connections"]["available"]))}

    @contextlib.asynccontextmanager
    async def _backend_errors(self, action: str) -> AsyncIterator[None]:
        try:
            yield
        except ConnectionFailure as exc:  # ServerSelectionTimeoutError, AutoReconnect, ...
            msg = f"The MongoDB server for tenant databases is unreachable; nothing was {action}."
            raise BackendUnavailableError(msg) from exc
        except OperationFailure as exc:
            log.warning("mongo_provisioner.backend.refused", code=exc.code, action=action)
            msg = f"MongoDB refused the operation (code {exc.code}); nothing was {action}."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True) from exc
        except PyMongoError as exc:
            log.warning("mongo_provisioner.backend.failed", error=type(exc).__name__, action=action)
            msg = f"MongoDB failed the operation; nothing was {action}."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True) from exc

    async def create(self, resource_id: UUID, limits: MongoLimits) -> MongoCredentials:
        """Create (or reset the password of) the tenant user; return fresh credentials.

        The database itself appears with the tenant's first write. ``limits.storage_mb`` is
        enforced by the ``dbStats`` usage sweep, not here: MongoDB has no per-database quota.
        """
        del limits
        name = tenant_name(resource_id)
        password = secrets.token_urlsafe(24)
        database = self._client[name]
        grant: Document = {
            "pwd": password,
            "roles": [{"role": "readWrite", "db": name}],
            "mechanisms": [SCRAM],
        }
        async with self._backend_errors("created"):
            try:
                await database.command({"createUser": name, **grant})
            except OperationFailure as exc:
                if exc.code != USER_ALREADY_EXISTS:
                    raise
                # A retry of the same command: same user, new password, same single role.
                await database.command({"updateUser": name, **grant})
        return self._credentials(name, password)

    def _credentials(self, name: str, password: str) -> MongoCredentials:
        return MongoCredentials(
            connection_url=tenant_connection_url(
                name, password, self._public_host, self._public_port
            ),
            host=self._public_host,
            port=self._public_port,
            database=name,
            username=name,
            password=password,
        )

    async def set_limits(self, resource_id: UUID, limits: MongoLimits) -> None:
        """Nothing to change in the server: ``storage_mb`` is enforced by the usage sweep.

        MongoDB has no per-database quota or connection limit to raise; the sweep reads the
        new ``storage_mb`` from the resource's limits. Idempotent by having no effect.
        """
        del resource_id, limits

    async def rotate(self, resource_id: UUID, limits: MongoLimits) -> MongoCredentials:
        """Give the user a new password and cut its open connections; roles stay as they are.

        The old password fails from the next login. Open connections stay logged in on
        mongod, as they would after any password change, so ``killOp`` ends the user's
        operations (SecantusDB closes their sockets; the client's next login uses the old
        password and fails). A write block stays: only the password changes.

        Raises:
            SpinupError: NOT_FOUND if the user does not exist.
        """
        del limits
        name = guard_tenant_name(tenant_name(resource_id))
        password = secrets.token_urlsafe(24)
        async with self._backend_errors("rotated"):
            try:
                await self._client[name].command(
                    {"updateUser": name, "pwd": password, "mechanisms": [SCRAM]}
                )
            except OperationFailure as exc:
                if exc.code != USER_NOT_FOUND:
                    raise
                msg = "This MongoDB database has no user any more; nothing was rotated."
                raise SpinupError(ErrorCode.NOT_FOUND, msg) from exc
            await self._kill_connections_of(name)
        return self._credentials(name, password)

    async def usage(
        self, resource_ids: Sequence[UUID], *, sweep_id: UUID | None = None
    ) -> dict[UUID, int]:
        """``dataSize + indexSize`` of each tenant database whose user exists, in bytes.

        ``dataSize`` is the documents' uncompressed size and falls as soon as they are
        deleted; ``storageSize`` (and ``listDatabases``' ``sizeOnDisk`` on mongod) keeps the
        space WiredTiger allocated, so a tenant could never delete its way back under.
        One ``usersInfo`` finds which tenants exist, one ``listDatabases`` (names only) which
        of them have a database. A tenant that has not written yet has no database and uses 0,
        asked nothing more (ADR 0059). A database whose write counters in ``top`` have not
        moved keeps its last measure (``UsageMemo``, ADR 0061): SecantusDB's ``dbStats`` reads
        every document of the database under its storage lock, so every tenant waited while it
        ran. The others get one ``dbStats`` each, a few at a time.
        """
        names = {guard_tenant_name(tenant_name(rid)): rid for rid in resource_ids}
        if not names:
            return {}
        slots = asyncio.Semaphore(USAGE_CONCURRENCY)

        async def measure(name: str) -> int:
            async with slots:
                stats = await self._client[name].command("dbStats")
            return int(stats.get("dataSize", 0)) + int(stats.get("indexSize", 0))

        async with self._backend_errors("measured"):
            found = await self._client.admin.command(
                "usersInfo", [{"user": name, "db": name} for name in names]
            )
            existing = {
                str(user["db"])
                for user in found.get("users", [])
                if user.get("db") in names and user.get("user") == user.get("db")
            }
            listed = await self._client.admin.command(
                "listDatabases", nameOnly=True, filter={"name": {"$in": sorted(existing)}}
            )
            written = [
                name
                for name in (str(database["name"]) for database in listed.get("databases", []))
                if name in existing
            ]
            counters = await self._write_figures(sweep_id) if written else {}
            usage = {names[name]: 0 for name in existing}
            stale: list[str] = []
            for name in written:
                figures = None if counters is None else counters.get(name, (0, 0))
                standing = None if figures is None else self._measures.standing(name, figures)
                if standing is None:
                    stale.append(name)
                else:
                    usage[names[name]] = standing
            USAGE_MEASURES.labels(self.kind.value, USAGE_STANDING).inc(len(written) - len(stale))
            USAGE_MEASURES.labels(self.kind.value, USAGE_MEASURED).inc(len(stale))
            sizes = await asyncio.gather(*(measure(name) for name in stale))
        for name, size in zip(stale, sizes, strict=True):
            usage[names[name]] = size
            if counters is not None:
                self._measures.measured(name, counters.get(name, (0, 0)), size)
        for name in names.keys() - set(written):
            self._measures.forget(name)
        return usage

    async def _write_figures(self, sweep_id: UUID | None) -> dict[str, tuple[int, int]] | None:
        """Each database's writes and collections as ``top`` counts them; None: not known.

        ``top`` answers for every collection of the server at once, so every page of the sweep
        ``sweep_id`` uses what its first page read. Its counters move with every write command
        (and start again when the server does, or a collection is dropped), so a database's
        (write count, collections) that did not move since its last measure says it did not
        change. A ``top`` the server refuses (its answer past 16 MB, near 25,000 collections)
        is None: every database is measured.
        """
        if sweep_id is not None and self._top is not None and self._top[0] == sweep_id:
            return self._top[1]
        try:
            reply = await self._client.admin.command("top")
        except OperationFailure as exc:
            log.warning("mongo_provisioner.usage.no_top", code=exc.code)
            counters = None
        else:
            per_database: dict[str, tuple[int, int]] = {}
            for namespace, sections in reply.get("totals", {}).items():
                if not isinstance(sections, Mapping):
                    continue  # the reply's "note"
                database = namespace.partition(".")[0]
                writes, collections = per_database.get(database, (0, 0))
                per_database[database] = (
                    writes + int(sections.get("writeLock", {}).get("count", 0)),
                    collections + 1,
                )
            counters = dict(per_database)
        if sweep_id is not None:
            self._top = (sweep_id, counters)
        return counters

    async def block_writes(self, resource_id: UUID, *, usage: int, quota: int) -> None:
        """Swap the user's ``readWrite`` for ``readAndDelete``: reads and deletes only.

        Open connections lose insert and update at their next command; find, delete and
        drop keep working. Idempotent (the role is brought up to date each time); one level
        of block whatever ``usage`` and ``quota`` are. A missing user is left alone.
        """
        del usage, quota
        name = guard_tenant_name(tenant_name(resource_id))
        database = self._client[name]
        async with self._backend_errors("blocked"):
            await self._define_over_quota_role(name)
            try:
                await database.command(
                    {"updateUser": name, "roles": [{"role": OVER_QUOTA_ROLE, "db": name}]}
                )
            except OperationFailure as exc:
                if exc.code != USER_NOT_FOUND:
                    raise
                # No tenant to block: leave no role behind for a database nobody owns.
                await self._drop_over_quota_role(name)
                log.info("mongo_provisioner.block.no_user")

    async def _define_over_quota_role(self, name: str) -> None:
        database = self._client[name]
        try:
            await database.command({"updateRole": OVER_QUOTA_ROLE, **_over_quota_role(name)})
        except OperationFailure as exc:
            if exc.code != ROLE_NOT_FOUND:
                raise
            try:
                await database.command({"createRole": OVER_QUOTA_ROLE, **_over_quota_role(name)})
            except OperationFailure as race:
                if race.code != ROLE_ALREADY_EXISTS:  # a concurrent block made it first
                    raise

    async def _drop_over_quota_role(self, name: str) -> None:
        try:
            await self._client[name].command("dropRole", OVER_QUOTA_ROLE)
        except OperationFailure as exc:
            if exc.code != ROLE_NOT_FOUND:
                raise

    async def allow_writes(self, resource_id: UUID) -> None:
        """Give the user ``readWrite`` back (open connections too) and drop ``readAndDelete``.

        Idempotent; on a never-blocked or missing user it changes nothing.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        async with self._backend_errors("unblocked"):
            try:
                await self._client[name].command(
                    {"updateUser": name, "roles": [{"role": "readWrite", "db": name}]}
                )
            except OperationFailure as exc:
                if exc.code != USER_NOT_FOUND:
                    raise
            await self._drop_over_quota_role(name)

    async def delete(self, resource_id: UUID) -> None:
        """Drop the user, cut its open connections, drop the database and its roles.

        Missing ones are fine. ``dropDatabase`` keeps the roles defined on the database (on
        mongod too), hence ``dropAllRolesFromDatabase`` for the write block's role.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        database = self._client[name]
        self._measures.forget(name)
        async with self._backend_errors("deleted"):
            try:
                await database.command("dropUser", name)
            except OperationFailure as exc:
                if exc.code != USER_NOT_FOUND:
                    raise
            await self._kill_connections_of(name)
            await database.command("dropDatabase")
            await database.command("dropAllRolesFromDatabase")

    async def _kill_connections_of(self, name: str) -> int:
        """``killOp`` every operation (on SecantusDB: every connection) of user ``name@name``."""
        # currentOp's query filter is a mongod feature SecantusDB ignores: filter here instead.
        reply = await self._client.admin.command("currentOp", {"$all": True})
        opids = [
            op["opid"] for op in reply.get("inprog", []) if _holds_user(op, name) and "opid" in op
        ]
        for opid in opids:
            await self._client.admin.command("killOp", op=opid)
        if opids:
            log.info("mongo_provisioner.connections.killed", count=len(opids))
        return len(opids)

    # -- export and suspend (docs/adr/0030, docs/export-formats.md) ----------------------------

    async def suspend(self, resource_id: UUID) -> None:
        """At expiry: the user gets a password nobody knows and no roles; open connections cut.

        MongoDB has no user lock (SecantusDB or mongod), so logging in is refused by a random
        password that is never kept; the user stays, for ``delete`` to drop. With no roles an
        open connection is refused its next command, and ``killOp`` closes it (SecantusDB; on
        mongod it ends its running operation). The database stays for ``export``. Idempotent; a
        missing user is fine.
        """
        name = guard_tenant_name(tenant_name(resource_id))
        unknown = secrets.token_urlsafe(32)
        async with self._backend_errors("suspended"):
            try:
                await self._client[name].command(
                    {"updateUser": name, "pwd": unknown, "roles": [], "mechanisms": [SCRAM]}
                )
            except OperationFailure as exc:
                if exc.code != USER_NOT_FOUND:
                    raise
            await self._kill_connections_of(name)

    def export(self, resource_id: UUID, fmt: str) -> AsyncIterator[bytes]:
        """A tar of ``<collection>.json`` (mongoexport's lines) and ``<collection>.indexes.json``.

        Each document is one canonical Extended JSON line (what ``mongoimport`` reads, types
        kept: ObjectId, dates, binary, decimals). A collection is spooled to a temporary file
        first (a tar header needs the member's size), then copied through a chunk at a time:
        memory is one cursor batch and one chunk whatever the database's size.
        """
        return chunked(self._export_tar(resource_id, fmt))

    async def _export_tar(self, resource_id: UUID, fmt: str) -> AsyncGenerator[bytes]:
        if fmt not in {f.name for f in EXPORT_FORMATS[ResourceKind.MONGO]}:
            msg = "A MongoDB database exports as tar (one mongoexport JSON file per collection)."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        name = guard_tenant_name(tenant_name(resource_id))
        if not await self.exists(resource_id):
            msg = f"The MongoDB database of {resource_id} does not exist (it was deleted)."
            raise SpinupError(ErrorCode.NOT_FOUND, msg)
        database = self._client[name]
        async with self._backend_errors("exported"):
            collections = await database.list_collection_names(filter={"type": "collection"})
        for collection in sorted(c for c in collections if not c.startswith("system.")):
            async for piece in self._collection_members(database[collection]):
                yield piece
        yield TAR_END

    async def _collection_members(
        self, collection: AsyncCollection[Document]
    ) -> AsyncIterator[bytes]:
        """The two tar members of one collection: its documents, then its indexes."""
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            async with self._backend_errors("exported"):
                async for document in collection.find({}, batch_size=_EXPORT_BATCH):
                    spool.write(_extended_json_line(document))
            for piece in spooled_member(f"{collection.name}.json", spool):
                yield piece
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            async with self._backend_errors("exported"):
                async for index in await collection.list_indexes():
                    if index.get("name") != "_id_":
                        spool.write(_extended_json_line(index))
            for piece in spooled_member(f"{collection.name}.indexes.json", spool):
                yield piece

    async def tenants(self) -> set[UUID]:
        """Every resource with a user or a database here (``ResourceLifecycle.reconcile``).

        Users are read from ``admin.system.users``, which lists every database's users (on
        mongod and SecantusDB alike); a tenant's user lives in its own database. A database
        outlives its user only in a delete that has not finished, which the reconcile finishes.
        """
        async with self._backend_errors("listed"):
            users = self._client.admin["system.users"].find(
                {"user": {"$regex": "^t_"}}, projection={"_id": 0, "user": 1, "db": 1}
            )
            names = {user["user"] async for user in users if user.get("user") == user.get("db")}
            names.update(await self._client.list_database_names())
        return {rid for rid in map(tenant_resource_id, names) if rid is not None}

    async def exists(self, resource_id: UUID) -> bool:
        """Whether the user or the database of this resource exists (for sweeps and tests)."""
        name = tenant_name(resource_id)
        async with self._backend_errors("checked"):
            users = await self._client[name].command("usersInfo", {"user": name, "db": name})
            if users.get("users"):
                return True
            return name in await self._client.list_database_names()


#: Documents per cursor batch of an export.
_EXPORT_BATCH = 500
#: A collection's export lines kept in memory before they spool to a temporary file.
_SPOOL_BYTES = 4 * 1024 * 1024


def _extended_json_line(document: Mapping[str, Any]) -> bytes:
    """One document as mongoexport writes it: canonical Extended JSON v2, one line."""
    return json_util.dumps(document, json_options=json_util.CANONICAL_JSON_OPTIONS).encode() + b"\n"
