"""Composition root of redis-provisioner."""

from __future__ import annotations

import os

import asyncpg
import structlog
import uvloop

from redis_provisioner.driver import RedisDriver
from redis_provisioner.handlers import register
from redis_provisioner.settings import Settings
from shared.bus import Bus
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.schema import migrate
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.logging import configure_logging
from shared.runtime import connect_with_retry, settings_or_exit, wait_for_shutdown

SERVICE = "redis-provisioner"
log = structlog.get_logger("redis_provisioner")


async def run(settings: Settings) -> None:
    """Connect, serve commands until signalled, then save pending ACL changes."""
    keyring = Keyring.from_setting(settings.seal_keys)
    platform = await connect_with_retry(
        "platform postgres",
        lambda: asyncpg.create_pool(settings.platform_dsn, min_size=1, max_size=8),
    )
    await migrate(platform)
    driver = await connect_with_retry(
        "customer redis",
        lambda: RedisDriver.connect(
            settings.admin_url,
            public_host=settings.public_host,
            public_port=settings.public_port,
            pool_size=settings.create_concurrency + settings.delete_concurrency + 2,
            save_delay=settings.acl_save_delay_s,
            save_max_duty=settings.acl_save_max_duty,
        ),
    )
    lifecycle = ResourceLifecycle(
        EventStore(platform, keyring, [ResourceProjection()]),
        keyring,
        driver,
        create_concurrency=settings.create_concurrency,
        delete_concurrency=settings.delete_concurrency,
    )
    bus = await connect_with_retry(
        "platform nats", lambda: Bus.connect(settings.nats_url, name=SERVICE)
    )
    await register(bus, lifecycle)
    log.info("redis_provisioner.started", create_concurrency=settings.create_concurrency)
    try:
        await wait_for_shutdown()
    finally:
        await bus.close()
        await driver.close()
        await platform.close()
        log.info("redis_provisioner.stopped")


def main() -> int:
    """Entry point: settings first, so a missing variable stops start-up with its name."""
    settings = settings_or_exit(SERVICE, lambda: Settings.from_env(os.environ))
    configure_logging(SERVICE, fmt=settings.log_format, level=settings.log_level)
    uvloop.run(run(settings))
    return 0
