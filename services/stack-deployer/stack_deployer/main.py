"""Composition root of stack-deployer."""

from __future__ import annotations

import asyncio

from shared.bus import Bus, ensure_stack_stores
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.postgres.pool import open_pool
from shared.runtime import connect_with_retry
from shared.worker import serve_kind, worker_main
from stack_deployer.deploy import Deployer
from stack_deployer.driver import StackDriver
from stack_deployer.engine import Engine
from stack_deployer.firewall import Firewall, watch
from stack_deployer.handlers import register
from stack_deployer.jetstream import Uploads
from stack_deployer.settings import Settings

SERVICE = "stack-deployer"


async def run(settings: Settings) -> None:
    """Connect the engine, the uploads and logs, then serve commands until signalled.

    The deploys run beside the lifecycle with their own connections: their events are appended
    after the commands that began them were answered.
    """
    engine = await connect_with_retry(
        "container engine",
        lambda: Engine.connect(settings.docker_host, settings.scope, settings.loopback_alias),
    )
    aliases = {}
    if settings.loopback_alias:
        gateway = await engine.host_gateway()
        aliases = {settings.loopback_alias: gateway} if gateway else {}
    firewall = Firewall(aliases)
    # Nothing of this deployer runs before every rule is in place: the shared chains, then each
    # stack's, from what its containers' labels say it may reach.
    await firewall.install_base()
    for stack_id, egress in (await engine.egress_by_stack()).items():
        await firewall.allow(stack_id, egress)
    bus = await connect_with_retry(
        "platform nats", lambda: Bus.connect(settings.worker.nats_url, name=f"{SERVICE}-deploys")
    )
    platform = await connect_with_retry(
        "platform postgres",
        lambda: open_pool(settings.worker.platform_dsn, size=4),
    )
    keyring = Keyring.from_setting(settings.worker.seal_keys)
    js = bus.nc.jetstream()
    await connect_with_retry("stack stores", lambda: ensure_stack_stores(js))
    uploads = Uploads(js)
    deployer = Deployer(
        store=EventStore(platform, [ResourceProjection()], nudge=bus.nudge_relay),
        keyring=keyring,
        engine=engine,
        firewall=firewall,
        uploads=uploads,
        nc=bus.nc,
        build_timeout_s=settings.build_timeout_s,
        settle_s=settings.settle_s,
        max_parallel_builds=settings.max_parallel_builds,
        stop_timeout_s=settings.stop_timeout_s,
        loopback_alias=settings.loopback_alias,
    )
    driver = StackDriver(engine, uploads, deployer, public_base=settings.content_url)
    watching = asyncio.create_task(watch(firewall, settings.firewall_check_s))
    try:
        await deployer.resume_logs()

        async def register_all(serving: Bus, lifecycle: ResourceLifecycle) -> None:
            await register(serving, lifecycle, deployer)

        await serve_kind(SERVICE, settings.worker, driver, register_all)
    finally:
        watching.cancel()
        await deployer.close()
        await platform.close()
        await bus.close()
        await engine.close()


def main() -> int:
    """Entry point."""
    return worker_main(SERVICE, Settings.from_env, run)
