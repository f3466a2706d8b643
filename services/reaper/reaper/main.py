"""Composition root of the reaper."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta
from typing import Any

import msgspec
import structlog
import uvloop

from reaper.handlers import ResourceIndex
from reaper.settings import Settings
from reaper.sweep import Sweeper, run_usage_sweeps
from shared.bus import Bus
from shared.contracts.subjects import EVENTS_SUBJECT_FILTER
from shared.eventlog.relayed import unpack
from shared.eventlog.stream import ensure_events_stream
from shared.health import heartbeat
from shared.logging import configure_logging
from shared.metrics import serve_metrics
from shared.runtime import connect_with_retry, settings_or_exit, wait_for_shutdown
from shared.tracing import configure_tracing

SERVICE = "reaper"
log = structlog.get_logger("reaper")


async def run(settings: Settings) -> None:
    """Follow the event stream from its start and sweep on an interval until signalled."""
    bus = await connect_with_retry(
        "platform nats", lambda: Bus.connect(settings.nats_url, name=SERVICE)
    )
    js = bus.nc.jetstream()
    await connect_with_retry("events stream", lambda: ensure_events_stream(js))
    index = ResourceIndex()

    async def on_event(message: Any) -> None:  # noqa: ANN401  (nats.aio.msg.Msg)
        try:
            relayed = unpack(message.subject, message.data)
        except msgspec.MsgspecError:
            log.warning("reaper.event.undecodable", subject=message.subject)
            return
        for recorded in relayed:
            index.apply(recorded)

    # Every subject, in one ordered consumer: the relay's batches hold events of every kind
    # (the index skips what is not a resource's), and a stream written before them holds one
    # message per event; one consumer keeps both in log order (ADR 0031).
    subscription = await js.subscribe(EVENTS_SUBJECT_FILTER, cb=on_event, ordered_consumer=True)
    sweeper = Sweeper(
        bus,
        index,
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
        await subscription.unsubscribe()
        await bus.close()
        log.info("reaper.stopped")


def main() -> int:
    """Entry point: settings first, so a missing variable stops start-up with its name."""
    settings = settings_or_exit(SERVICE, lambda: Settings.from_env(os.environ))
    configure_logging(SERVICE, fmt=settings.log_format, level=settings.log_level)
    configure_tracing(SERVICE, os.environ)
    uvloop.run(run(settings))
    return 0
