"""``spinup_relay_lag_events``: the committed events past the relay's cursor, on the real log."""

from __future__ import annotations

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from shared.eventlog.relay import Relay
from shared.observability import metrics

pytestmark = pytest.mark.integration


def lag() -> float:
    return float(metrics.RELAY_LAG._value.get())


async def test_relay_lag_counts_the_events_past_the_cursor(
    env: dict[str, str], platform_db: asyncpg.Pool, nc: NatsClient
) -> None:
    relay = Relay(env["SPINUP_PLATFORM_DSN"], nc, name="lag-probe")
    logged = await platform_db.fetchval("SELECT count(*) FROM events")
    # Exactly three events lie past this one (positions have gaps: not max - 3).
    fourth_last = await platform_db.fetchval(
        "SELECT position FROM events ORDER BY position DESC OFFSET 3 LIMIT 1"
    )
    assert logged > 3  # the stack's own start appended some
    async with platform_db.acquire() as conn:
        relay._cursor = (0, 0)
        await relay._measure_lag(conn)
        assert lag() >= logged  # the stack may append meanwhile, never remove
        relay._cursor = (0, fourth_last)
        await relay._measure_lag(conn)
        assert 3 <= lag() < logged
