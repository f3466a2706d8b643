"""Composition root of queue-provisioner."""

from __future__ import annotations

import asyncio

from queue_provisioner.driver import NatsAccountDriver
from queue_provisioner.handlers import register
from queue_provisioner.settings import Settings
from shared.runtime import connect_with_retry
from shared.worker import serve_kind, worker_main

SERVICE = "queue-provisioner"


async def run(settings: Settings) -> None:
    """Connect to the customer NATS as its system user, serve commands until signalled."""
    operator_seed = await asyncio.to_thread(settings.operator_seed_file.read_text)
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
    try:
        await serve_kind(SERVICE, settings.worker, driver, register)
    finally:
        await driver.close()


def main() -> int:
    """Entry point."""
    return worker_main(SERVICE, Settings.from_env, run)
