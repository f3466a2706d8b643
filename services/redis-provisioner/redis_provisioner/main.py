"""Composition root of redis-provisioner."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from redis_provisioner.driver import RedisDriver
from redis_provisioner.handlers import register
from redis_provisioner.settings import Settings
from shared.runtime import connect_with_retry, in_background
from shared.worker import serve_kind, worker_main

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SERVICE = "redis-provisioner"
log = structlog.get_logger(SERVICE)


async def run(settings: Settings) -> None:
    """Connect, serve commands until signalled, then close the admin pool."""
    concurrency = settings.worker.create_concurrency + settings.worker.delete_concurrency
    driver = await connect_with_retry(
        "customer redis",
        lambda: RedisDriver.connect(
            settings.admin_url,
            public_host=settings.public_host,
            public_port=settings.public_port,
            pool_size=concurrency + 2,
        ),
    )
    try:
        async with unlinking(driver, settings.unlink_interval_s):
            await serve_kind(SERVICE, settings.worker, driver, register)
    finally:
        await driver.close()


@contextlib.asynccontextmanager
async def unlinking(driver: RedisDriver, interval_s: float) -> AsyncIterator[None]:
    """Remove deleted tenants' keys every ``interval_s`` while the block runs."""

    async def unlink() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await driver.unlink_deleted()
            except Exception as exc:  # noqa: BLE001  (the server is down: the next pass)
                log.warning("redis_provisioner.unlink.failed", error=repr(exc))

    async with in_background(unlink()):
        yield


def main() -> int:
    """Entry point."""
    return worker_main(SERVICE, Settings.from_env, run)
