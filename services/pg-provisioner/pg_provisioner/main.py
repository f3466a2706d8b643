"""Composition root of pg-provisioner."""

from __future__ import annotations

from pg_provisioner.driver import PostgresDriver
from pg_provisioner.handlers import register
from pg_provisioner.settings import Settings
from shared.runtime import connect_with_retry
from shared.worker import serve_kind, worker_main

SERVICE = "pg-provisioner"


async def run(settings: Settings) -> None:
    """Connect and harden the customer cluster, then serve commands until signalled."""
    concurrency = settings.worker.create_concurrency + settings.worker.delete_concurrency
    driver = await connect_with_retry(
        "customer postgres",
        lambda: PostgresDriver.connect(
            settings.admin_dsn,
            public_host=settings.public_host,
            public_port=settings.public_port,
            pool_size=concurrency + 1,
        ),
    )
    try:
        await driver.harden()
        await serve_kind(SERVICE, settings.worker, driver, register)
    finally:
        await driver.close()


def main() -> int:
    """Entry point."""
    return worker_main(SERVICE, Settings.from_env, run)
