"""The relay's batches on the real stream (ADR 0031): where a relay that takes over resumes."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from shared.contracts.subjects import EVENTS_STREAM
from shared.eventlog.relay import Relay, log_holds
from shared.eventlog.stream import MAX_AGE_S, STREAM_CONFIG, ensure_events_stream
from shared.testing.polling import eventually

pytestmark = pytest.mark.integration


async def test_a_relay_taking_over_resumes_after_the_last_batch_of_this_log(
    env: dict[str, str], platform_db: asyncpg.Pool, nc: NatsClient
) -> None:
    standby = Relay(env["SPINUP_PLATFORM_DSN"], nc, name="takeover-probe")

    async def last_published() -> tuple[int, int] | None:
        async with platform_db.acquire() as conn:
            cursor = await standby._last_published(conn)
        return cursor if cursor != (0, 0) else None

    # The stack's own relay has published what its start appended.
    cursor = await eventually(last_published)
    assert cursor is not None, "the stack's relay published no batch"
    async with platform_db.acquire() as conn:
        assert await log_holds(conn, cursor)
        # A log restored from a dump has other transaction ids (docs/operations.md renumbers
        # them): the stream's cursor names no event of it, and the recorded cursor is used.
        assert not await log_holds(conn, (cursor[0] + 1, cursor[1]))
        assert not await log_holds(conn, (cursor[0], cursor[1] + 10**12))


async def test_the_events_stream_keeps_a_week_also_when_made_before_the_limit(
    nc: NatsClient,
) -> None:
    js = nc.jetstream()
    await ensure_events_stream(js)
    assert (await js.stream_info(EVENTS_STREAM)).config.max_age == MAX_AGE_S
    # A stream made before the limit kept every event: the relay's next start sets it.
    unlimited = dataclasses.replace(STREAM_CONFIG, max_age=0.0)
    await js.update_stream(unlimited)
    assert (await js.stream_info(EVENTS_STREAM)).config.max_age == 0
    await ensure_events_stream(js)
    assert (await js.stream_info(EVENTS_STREAM)).config.max_age == MAX_AGE_S
