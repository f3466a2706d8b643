"""Tenant user + database on the customer MongoDB.

Why care: this module drops databases and users. Every name comes from
``shared.naming.tenant_name`` and passes ``guard_tenant_name`` before any drop. Only standard
MongoDB commands are used (``createUser``, ``updateUser``, ``dropUser``, ``dropDatabase``,
``usersInfo``, ``listDatabases``, ``currentOp``, ``killOp``), so the same code runs against a real
mongod as against SecantusDB.

Cutting open connections on delete: mongod de-authorises a dropped user's open connections by
itself; SecantusDB 0.7.0b3 does not (they keep writing, and recreate the dropped database). So
after ``dropUser`` the driver lists every connection with ``currentOp {$all: true}``, keeps the
ones whose ``effectiveUsers`` name the tenant, and ``killOp``s them (SecantusDB closes the
socket; on mongod it ends the op of an already de-authorised client). Then ``dropDatabase``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from shared.contracts.errors import BackendUnavailableError, ErrorCode, SpinupError
from shared.contracts.kinds import MongoCredentials, MongoLimits, ResourceKind
from shared.naming import guard_tenant_name, tenant_name

if TYPE_CHECKING:
    from uuid import UUID

log = structlog.get_logger("mongo_provisioner.driver")

# Server error codes (the same numbers on mongod and SecantusDB).
USER_NOT_FOUND = 11
USER_ALREADY_EXISTS = 51003
# Answer well within the endpoint's timeout when the server is down: the worker replies 503.
SERVER_SELECTION_TIMEOUT_MS = 3000
CONNECT_TIMEOUT_MS = 2000
SOCKET_TIMEOUT_MS = 20000
SCRAM = "SCRAM-SHA-256"

Document = dict[str, Any]


def tenant_connection_url(name: str, password: str, host: str, port: int) -> str:
    """``mongodb://t_x:pw@host:port/t_x?authSource=t_x``: the user lives in its own database."""
    return f"mongodb://{name}:{quote(password, safe='')}@{host}:{port}/{name}?authSource={name}"


def _holds_user(operation: Mapping[str, Any], name: str) -> bool:
    users = operation.get("effectiveUsers") or []
    return any(
        isinstance(u, Mapping) and u.get("user") == name and u.get("db") == name for u in users
    )


class MongoDriver:
    """Creates and drops tenant users and databases through a root client."""

    kind = ResourceKind.MONGO

    def __init__(
        self, client: AsyncIOMotorClient[Document], *, public_host: str, public_port: int
    ) -> None:
        self._client = client
        self._public_host = public_host
        self._public_port = public_port

    @classmethod
    async def connect(cls, admin_url: str, *, public_host: str, public_port: int) -> MongoDriver:
        """Build the root client and check the server answers.

        Raises:
            BackendUnavailableError: the server did not answer in time.
        """
        client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(
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
            client.close()
            raise
        return driver

    async def close(self) -> None:
        """Close the root client."""
        self._client.close()

    async def ping(self) -> None:
        """Check the server answers (start-up waits on this)."""
        async with self._backend_errors("checked"):
            await self._client.admin.command("ping")

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

    async def delete(self, resource_id: UUID) -> None:
        """Drop the user, cut its open connections, drop the database; missing ones are fine."""
        name = guard_tenant_name(tenant_name(resource_id))
        database = self._client[name]
        async with self._backend_errors("deleted"):
            try:
                await database.command("dropUser", name)
            except OperationFailure as exc:
                if exc.code != USER_NOT_FOUND:
                    raise
            await self._kill_connections_of(name)
            await database.command("dropDatabase")

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

    async def exists(self, resource_id: UUID) -> bool:
        """Whether the user or the database of this resource exists (for sweeps and tests)."""
        name = tenant_name(resource_id)
        async with self._backend_errors("checked"):
            users = await self._client[name].command("usersInfo", {"user": name, "db": name})
            if users.get("users"):
                return True
            return name in await self._client.list_database_names()

    async def storage_bytes(self, resource_id: UUID) -> int:
        """Bytes the tenant's database holds (``dbStats``), for the usage sweep."""
        name = tenant_name(resource_id)
        async with self._backend_errors("measured"):
            stats = await self._client[name].command("dbStats")
        return int(stats.get("dataSize", 0)) + int(stats.get("indexSize", 0))
