"""Clients of the running stack's servers, for tests that drive the pieces directly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials

from mongo_provisioner.driver import MongoDriver
from queue_provisioner.driver import NatsAccountDriver
from redis_provisioner.driver import RedisDriver
from shared.bus import Bus
from shared.contracts.kinds import NatsCredentials
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection, ResourceReadModel
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle


@pytest.fixture
async def scratch(env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose tables are those of a schema of its own, dropped afterwards.

    For tests whose rows the running stack's own services must not see or act on.
    """
    schema = f"scratch_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(env["SPINUP_PLATFORM_DSN"])
    await admin.execute(f"CREATE SCHEMA {schema}")
    pool = await asyncpg.create_pool(
        env["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2, server_settings={"search_path": schema}
    )
    try:
        yield pool
    finally:
        await pool.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def bus(env: dict[str, str]) -> AsyncIterator[Bus]:
    connected = await Bus.connect(env["SPINUP_NATS_URL"], name="test")
    yield connected
    await connected.close()


@pytest.fixture
def store(platform_db: asyncpg.Pool, env: dict[str, str]) -> EventStore:
    return EventStore(platform_db, [ResourceProjection()])


@pytest.fixture
def lifecycle_of(
    store: EventStore, platform_db: asyncpg.Pool, env: dict[str, str]
) -> Callable[..., ResourceLifecycle]:
    """Makes a worker's lifecycle over a driver, appending to ``store``.

    One create and one delete at a time unless the options say otherwise.
    """

    def make(driver: Any, **options: Any) -> ResourceLifecycle:
        return ResourceLifecycle(
            store,
            Keyring.from_setting(env["SPINUP_SEAL_KEYS"]),
            driver,
            resources=ResourceReadModel(platform_db),
            **{"create_concurrency": 1, "delete_concurrency": 1, **options},
        )

    return make


@pytest.fixture
async def redis_driver(env: dict[str, str]) -> AsyncIterator[RedisDriver]:
    connected = await RedisDriver.connect(
        env["SPINUP_CUSTOMER_REDIS_URL"],
        public_host=env["SPINUP_CUSTOMER_REDIS_HOST"],
        public_port=int(env["SPINUP_CUSTOMER_REDIS_PORT"]),
        pool_size=4,
    )
    yield connected
    await connected.close()


@pytest.fixture
async def mongo_driver(env: dict[str, str]) -> AsyncIterator[MongoDriver]:
    connected = await MongoDriver.connect(
        env["SPINUP_MONGO_ADMIN_URL"],
        public_host=env["SPINUP_MONGO_HOST"],
        public_port=int(env["SPINUP_MONGO_PORT"]),
    )
    yield connected
    await connected.close()


def _operator_seed(env: dict[str, str]) -> str:
    return Path(env["SPINUP_CUSTOMER_NATS_OPERATOR_SEED_FILE"]).read_text()


async def connect_nats_driver(
    env: dict[str, str], url: str | None = None, *, request_timeout: float = 2.0
) -> NatsAccountDriver:
    """The queue-provisioner's driver on the stack's customer NATS (or ``url``)."""
    seed = _operator_seed(env)
    return await NatsAccountDriver.connect(
        url or env["SPINUP_CUSTOMER_NATS_URL"],
        system_creds=Path(env["SPINUP_CUSTOMER_NATS_SYSTEM_CREDS"]),
        operator_seed=seed,
        public_url=env["SPINUP_CUSTOMER_NATS_PUBLIC_URL"],
        request_timeout=request_timeout,
        name="test-queue-driver",
    )


@pytest.fixture
async def queue_driver(env: dict[str, str]) -> AsyncIterator[NatsAccountDriver]:
    driver = await connect_nats_driver(env)
    yield driver
    await driver.close()


async def connect_nats_tenant(
    credentials: NatsCredentials, closed: asyncio.Event | None = None
) -> NatsClient:
    """A tenant's client with its own credentials; ``closed`` is set when the server drops it."""

    async def on_closed() -> None:
        if closed is not None:
            closed.set()

    async def quiet(exc: Exception) -> None:
        pass  # the refusals are what these tests provoke

    client = NatsClient()
    try:
        await client.connect(
            credentials.connection_url,
            user_credentials=RawCredentials(credentials.creds),
            allow_reconnect=False,
            closed_cb=on_closed,
            error_cb=quiet,
        )
    except BaseException:
        # nats-py leaves the socket of a refused first connect open.
        await client.close()
        raise
    return client
