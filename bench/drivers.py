"""Every kind's driver, connected the way its worker's composition root connects it.

The raw floor of a kind is its driver's ``create`` and ``delete`` called directly: the same SQL,
ACL, JWT, IAM or Redis calls the provisioner makes, without HTTP, NATS or the event log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol
from uuid import UUID

from redis.asyncio import Redis

import gateway.settings
import mongo_provisioner.settings
import pg_provisioner.settings
import queue_provisioner.settings
import redis_provisioner.settings
import storage_provisioner.settings
from gateway.webhooks.driver import WebhookDriver
from mongo_provisioner.driver import MongoDriver
from pg_provisioner.driver import PostgresDriver
from queue_provisioner.driver import NatsAccountDriver
from redis_provisioner.driver import RedisDriver
from shared.contracts.kinds import ResourceKind
from storage_provisioner.driver import S3Driver, WeedShell

Closer = Callable[[], Awaitable[None]]


class Driver(Protocol):
    """What the bench calls on every kind's driver."""

    async def create(self, resource_id: UUID, limits: Any, /) -> object:  # noqa: ANN401 (its kind's)
        """Make the tenant."""

    async def delete(self, resource_id: UUID, /) -> None:
        """Remove the tenant."""

    async def rotate(self, resource_id: UUID, limits: Any, /) -> object:  # noqa: ANN401 (its kind's)
        """Give the tenant a new credential; the old one stops working."""


async def _postgres(env: Mapping[str, str]) -> tuple[Driver, Closer]:
    settings = pg_provisioner.settings.Settings.from_env(env)
    driver = await PostgresDriver.connect(
        settings.admin_dsn,
        public_host=settings.public_host,
        public_port=settings.public_port,
        pool_size=settings.worker.create_concurrency + settings.worker.delete_concurrency + 1,
    )
    return driver, driver.close


async def _redis(env: Mapping[str, str]) -> tuple[Driver, Closer]:
    settings = redis_provisioner.settings.Settings.from_env(env)
    driver = await RedisDriver.connect(
        settings.admin_url,
        public_host=settings.public_host,
        public_port=settings.public_port,
        pool_size=settings.worker.create_concurrency + settings.worker.delete_concurrency + 2,
    )
    return driver, driver.close


async def _mongo(env: Mapping[str, str]) -> tuple[Driver, Closer]:
    settings = mongo_provisioner.settings.Settings.from_env(env)
    driver = await MongoDriver.connect(
        settings.admin_url, public_host=settings.public_host, public_port=settings.public_port
    )
    return driver, driver.close


async def _nats(env: Mapping[str, str]) -> tuple[Driver, Closer]:
    settings = queue_provisioner.settings.Settings.from_env(env)
    driver = await NatsAccountDriver.connect(
        settings.customer_nats_url,
        system_creds=settings.system_creds,
        operator_seed=await asyncio.to_thread(settings.operator_seed_file.read_text),
        public_url=settings.public_url,
        request_timeout=settings.request_timeout_s,
        name="bench",
    )
    return driver, driver.close


async def _s3(env: Mapping[str, str]) -> tuple[Driver, Closer]:
    settings = storage_provisioner.settings.Settings.from_env(env)
    driver = await S3Driver.connect(
        endpoint=settings.endpoint,
        public_endpoint=settings.public_endpoint,
        region=settings.region,
        access_key=settings.admin_access_key,
        secret_key=settings.admin_secret_key,
        shell=WeedShell(
            weed=settings.weed,
            master=settings.master,
            filer=settings.filer,
            config_dir=settings.config_dir,
        ),
        filer_read_key=settings.filer_read_key,
        filer_iam=settings.filer_iam,
        gateway_grpc=settings.gateway_grpc,
        master_grpc=settings.master_grpc,
    )
    return driver, driver.close


async def _webhook(env: Mapping[str, str]) -> tuple[Driver, Closer]:
    settings = gateway.settings.Settings.from_env(env)
    redis = Redis.from_url(settings.redis_url)
    live = Redis.from_url(settings.redis_url, max_connections=1)
    driver = WebhookDriver(
        redis, content_url=settings.content_url, token_key=settings.token_key, live=live
    )

    async def close() -> None:
        await redis.aclose()
        await live.aclose()

    return driver, close


_CONNECT = {
    ResourceKind.POSTGRES: _postgres,
    ResourceKind.REDIS: _redis,
    ResourceKind.MONGO: _mongo,
    ResourceKind.NATS: _nats,
    ResourceKind.S3: _s3,
    ResourceKind.WEBHOOK: _webhook,
}


#: The kinds the bench has a driver for (their raw floor).
KINDS = frozenset(_CONNECT)


@contextlib.asynccontextmanager
async def connected(kind: ResourceKind, env: Mapping[str, str]) -> AsyncIterator[Driver]:
    """``kind``'s driver, connected with the settings its worker reads from ``env``."""
    driver, close = await _CONNECT[kind](env)
    try:
        yield driver
    finally:
        await close()
