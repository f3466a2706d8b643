"""Composition root of queue-provisioner."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import structlog
import uvloop

from queue_provisioner.driver import NatsAccountDriver
from queue_provisioner.handlers import register
from queue_provisioner.settings import Settings
from shared.bus import Bus
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.schema import migrate
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.logging import configure_logging
from shared.runtime import connect_with_retry, settings_or_exit, wait_for_shutdown

SERVICE = "queue-provisioner"
log = structlog.get_logger("queue_provisioner")


async def run(settings: Settings) -> None:
    """Connect to the platform and the customer NATS, serve commands until signalled."""
    keyring = Keyring.from_setting(settings.seal_keys)
    operator_seed = await asyncio.to_thread(settings.operator_seed_file.read_text)
    platform = await connect_with_retry(
        "platform postgres",
        lambda: asyncpg.create_pool(settings.platform_dsn, min_size=1, max_size=8),
    )
    await migrate(platform)
    driver = await connect_with_retry(
        "customer nats",
        lambda: NatsAccountDriver.connect(
            settings.customer_nats_url,
            system_creds=settings.system_creds,
            operator_seed=operator_seed,
            public_url=settings.public_url,
            request_timeout=settings.request_timeout_s,
            name=SERVICE,
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
    log.info("queue_provisioner.started", create_concurrency=settings.create_concurrency)
    try:
        await wait_for_shutdown()
    finally:
        await bus.close()
        await driver.close()
        await platform.close()
        log.info("queue_provisioner.stopped")


def main() -> int:
    """Entry point: settings first, so a missing variable stops start-up with its name."""
    settings = settings_or_exit(SERVICE, lambda: Settings.from_env(os.environ))
    configure_logging(SERVICE, fmt=settings.log_format, level=settings.log_level)
    uvloop.run(run(settings))
    return 0
