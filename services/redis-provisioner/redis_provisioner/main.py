"""Composition root of redis-provisioner."""

from __future__ import annotations

from redis_provisioner.driver import RedisDriver
from redis_provisioner.handlers import register
from redis_provisioner.settings import Settings
from shared.runtime import connect_with_retry
from shared.worker import serve_kind, worker_main

SERVICE = "redis-provisioner"


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
        await serve_kind(SERVICE, settings.worker, driver, register)
    finally:
        await driver.close()


def main() -> int:
    """Entry point."""
    return worker_main(SERVICE, Settings.from_env, run)
