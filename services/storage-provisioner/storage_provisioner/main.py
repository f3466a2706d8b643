"""Composition root of storage-provisioner."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from shared.contracts.errors import SpinupError
from shared.worker import serve_kind, worker_main
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
    driver = await S3Driver.connect(
        endpoint=settings.endpoint,
        public_endpoint=settings.public_endpoint,
        region=settings.region,
        access_key=settings.admin_access_key,
        secret_key=settings.admin_secret_key,
        shell=WeedShell(weed=settings.weed, master=settings.master, filer=settings.filer),
    )
    sweep = asyncio.create_task(enforce_quotas_forever(driver, settings.quota_enforce_interval_s))
    try:
        await serve_kind(SERVICE, settings.worker, driver, register)
    finally:
        sweep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweep
        await driver.close()


def main() -> int:
    """Entry point."""
    return worker_main(SERVICE, Settings.from_env, run)
