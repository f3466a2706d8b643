"""Composition root of mongo-provisioner."""

from __future__ import annotations

from mongo_provisioner.driver import MongoDriver
from mongo_provisioner.handlers import register
from mongo_provisioner.settings import Settings
from shared.runtime import connect_with_retry
from shared.worker import serve_kind, worker_main

SERVICE = "mongo-provisioner"


async def run(settings: Settings) -> None:
    """Connect, then serve commands until signalled."""
    driver = await connect_with_retry(
        "customer mongodb",
        lambda: MongoDriver.connect(
            settings.admin_url, public_host=settings.public_host, public_port=settings.public_port
        ),
    )
    try:
        await serve_kind(SERVICE, settings.worker, driver, register)
    finally:
        await driver.close()


def main() -> int:
    """Entry point."""
    return worker_main(SERVICE, Settings.from_env, run)
