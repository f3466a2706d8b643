"""Composition root of mongo-provisioner."""

from __future__ import annotations

import os

import asyncpg
import structlog
import uvloop

from mongo_provisioner.driver import MongoDriver
from mongo_provisioner.handlers import register
from mongo_provisioner.settings import Settings
from shared.bus import Bus
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.schema import migrate
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.logging import configure_logging
from shared.runtime import connect_with_retry, settings_or_exit, wait_for_shutdown

SERVICE = "mongo-provisioner"
log = structlog.get_logger("mongo_provisioner")


async def _connected_driver(settings: Settings) -> MongoDriver:
    driver = MongoDriver.connect(
        settings.admin_url, public_host=settings.public_host, public_port=settings.public_port
    )
    try:
        await driver.ping()
    except BaseException:
        driver.close()
        raise
    return driver


async def run(settings: Settings) -> None:
    """Connect, then serve commands until signalled."""
    keyring = Keyring.from_setting(settings.seal_keys)
    platform = await connect_with_retry(
        "platform postgres",
        lambda: asyncpg.create_pool(settings.platform_dsn, min_size=1, max_size=8),
    )
    await migrate(platform)
    driver = await connect_with_retry("customer mongodb", lambda: _connected_driver(settings))
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
    log.info("mongo_provisioner.started", create_concurrency=settings.create_concurrency)
    try:
        await wait_for_shutdown()
    finally:
        await bus.close()
        driver.close()
        await platform.close()
        log.info("mongo_provisioner.stopped")


def main() -> int:
    """Entry point: settings first, so a missing variable stops start-up with its name."""
    settings = settings_or_exit(SERVICE, lambda: Settings.from_env(os.environ))
    configure_logging(SERVICE, fmt=settings.log_format, level=settings.log_level)
    uvloop.run(run(settings))
    return 0
