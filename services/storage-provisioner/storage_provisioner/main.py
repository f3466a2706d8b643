"""Composition root of storage-provisioner."""

from __future__ import annotations

import asyncio
import contextlib
import os

import asyncpg
import structlog
import uvloop

from shared.bus import Bus
from shared.contracts.errors import SpinupError
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.schema import migrate
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.logging import configure_logging
from shared.runtime import connect_with_retry, settings_or_exit, wait_for_shutdown
from storage_provisioner.driver import S3Driver, WeedShell
from storage_provisioner.handlers import register
from storage_provisioner.settings import Settings

SERVICE = "storage-provisioner"
log = structlog.get_logger("storage_provisioner")


async def enforce_quotas_forever(driver: S3Driver, interval: float) -> None:
    """Every ``interval`` seconds, make buckets over their quota read-only (and back).

    SeaweedFS keeps the quota but only this sweep applies it; a failed sweep is logged and the
    next one tries again.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            changed = await driver.enforce_quotas()
        except SpinupError as exc:
            log.warning("storage_provisioner.quota.sweep_failed", error=exc.message)
            continue
        for bucket in changed:
            log.info("storage_provisioner.quota.applied", bucket=bucket)


async def run(settings: Settings) -> None:
    """Connect, serve commands and sweep quotas until signalled."""
    keyring = Keyring.from_setting(settings.seal_keys)
    platform = await connect_with_retry(
        "platform postgres",
        lambda: asyncpg.create_pool(settings.platform_dsn, min_size=1, max_size=8),
    )
    await migrate(platform)
    driver = await S3Driver.connect(
        endpoint=settings.endpoint,
        public_endpoint=settings.public_endpoint,
        region=settings.region,
        access_key=settings.admin_access_key,
        secret_key=settings.admin_secret_key,
        shell=WeedShell(weed=settings.weed, master=settings.master, filer=settings.filer),
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
    sweep = asyncio.create_task(enforce_quotas_forever(driver, settings.quota_enforce_interval_s))
    log.info("storage_provisioner.started", create_concurrency=settings.create_concurrency)
    try:
        await wait_for_shutdown()
    finally:
        sweep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweep
        await bus.close()
        await driver.close()
        await platform.close()
        log.info("storage_provisioner.stopped")


def main() -> int:
    """Entry point: settings first, so a missing variable stops start-up with its name."""
    settings = settings_or_exit(SERVICE, lambda: Settings.from_env(os.environ))
    configure_logging(SERVICE, fmt=settings.log_format, level=settings.log_level)
    uvloop.run(run(settings))
    return 0
