"""Composition root of storage-provisioner."""

from __future__ import annotations

from shared.runtime import in_background
from shared.worker import serve_kind, worker_main
from storage_provisioner.driver import S3Driver, WeedShell
from storage_provisioner.handlers import register
from storage_provisioner.settings import Settings

SERVICE = "storage-provisioner"


async def run(settings: Settings) -> None:
    """Connect and serve commands until signalled.

    Quotas need no loop here: the reaper's usage sweep blocks buckets over their quota (a
    ``SweepUsage`` command like any other), and SeaweedFS's S3 gateway runs its own quota pass.
    """
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
    try:
        async with in_background(driver.watch_reloads(settings.reload_check_s)):
            await serve_kind(SERVICE, settings.worker, driver, register)
    finally:
        await driver.close()


def main() -> int:
    """Entry point."""
    return worker_main(SERVICE, Settings.from_env, run)
