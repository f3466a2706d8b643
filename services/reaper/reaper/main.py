"""Composition root of the reaper."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta

import structlog
import uvloop

from reaper.settings import Settings
from reaper.sweep import Sweeper, run_usage_sweeps
from shared.bus import Bus
from shared.observability.health import heartbeat
from shared.observability.logging import configure_logging
from shared.observability.metrics import serve_metrics
from shared.observability.tracing import configure_tracing
from shared.runtime import connect_with_retry, settings_or_exit, wait_for_shutdown

SERVICE = "reaper"
log = structlog.get_logger("reaper")


async def run(settings: Settings) -> None:
    """Sweep on an interval until signalled: each kind's worker says what is due (ADR 0035)."""
    bus = await connect_with_retry(
        "platform nats", lambda: Bus.connect(settings.nats_url, name=SERVICE)
    )
    sweeper = Sweeper(
        bus,
        grace=timedelta(seconds=settings.orphan_grace_s),
        concurrency=settings.concurrency,
        stack_stuck_after=timedelta(seconds=settings.stack_stuck_after_s),
    )
    tasks = [
        asyncio.create_task(sweeper.run(settings.interval_s)),
        asyncio.create_task(run_usage_sweeps(bus, settings.usage_interval_s)),
    ]
    log.info(
        "reaper.started", interval_s=settings.interval_s, usage_interval_s=settings.usage_interval_s
    )
    try:
        with serve_metrics(settings.metrics_host, settings.metrics_port):
            async with heartbeat(settings.heartbeat_file, lambda: bus.nc.is_connected):
                await wait_for_shutdown()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await bus.close()
        log.info("reaper.stopped")


def main() -> int:
    """Entry point: settings first, so a missing variable stops start-up with its name."""
    settings = settings_or_exit(SERVICE, lambda: Settings.from_env(os.environ))
    configure_logging(SERVICE, fmt=settings.log_format, level=settings.log_level)
    configure_tracing(SERVICE, os.environ)
    uvloop.run(run(settings))
    return 0
