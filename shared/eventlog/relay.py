"""Relay committed events from the platform Postgres to JetStream, in log order.

One relay is active per platform database (a session advisory lock); the others wait on the
lock. It wakes when an appender says the log has grown (``LOG_APPENDED`` on core NATS, with a
poll as a safety net), publishes a batch with ``Nats-Msg-Id`` = event id so the server drops
re-publishes, and keeps its cursor (appending transaction, position of the last event) in
memory. It records the cursor at most once a second and whenever it goes idle; after a restart it
resumes from the recorded one, and what it publishes again (at most a second's worth) is within
the stream's duplicate window, so the server drops it. Log order is the order of that cursor,
which keeps every stream's versions in order; an event is relayed once every older transaction
has ended (``read_committed_after``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import structlog
from nats.errors import Error as NatsError

from shared import metrics
from shared.contracts.subjects import LOG_APPENDED, event_subject
from shared.eventlog.schema import RELAY_LOCK
from shared.eventlog.store import read_committed_after
from shared.eventlog.stream import ensure_events_stream
from shared.pgerrors import CONNECTION_ERRORS

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

log = structlog.get_logger("shared.eventlog.relay")
_encoder = msgspec.json.Encoder()
# Outages of either side pause the relay; it reconnects and resumes from its recorded position.
_INTERRUPTIONS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresError,
    NatsError,
)
#: The recorded cursor trails the published one by at most this long while the relay is busy.
_RECORD_EVERY_S = 1.0
#: The lag gauge counts at most this many events: past it the relay is simply far behind.
_LAG_COUNT_CAP = 100_000


class Relay:
    """Publishes every committed event exactly once (deduplicated) to the events stream."""

    def __init__(
        self,
        dsn: str,
        nc: NatsClient,
        *,
        name: str = "jetstream",
        batch_size: int = 256,
        poll_interval: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._nc = nc
        self._js = nc.jetstream()
        self._name = name
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._cursor: tuple[int, int] = (0, 0)
        self._recorded: tuple[int, int] = (0, 0)

    async def run(self) -> None:
        """Relay until cancelled, surviving database and NATS outages."""
        while True:
            try:
                await self._run_while_leader()
            except _INTERRUPTIONS as exc:
                log.warning("eventlog.relay.interrupted", error=type(exc).__name__)
            await asyncio.sleep(self._poll_interval)

    async def _run_while_leader(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        subscription = None
        try:
            # Blocks while another relay is active; Postgres hands over the lock when that
            # relay's session ends, however it ends.
            await conn.execute("SELECT pg_advisory_lock($1)", RELAY_LOCK)
            log.info("eventlog.relay.started", relay=self._name)
            recorded = await conn.fetchrow(
                "SELECT txid, position FROM relay_positions WHERE relay = $1", self._name
            )
            self._cursor = (recorded["txid"], recorded["position"]) if recorded else (0, 0)
            self._recorded = self._cursor
            # Before NATS is needed: while it is down, each retry still shows the lag growing.
            await self._measure_lag(conn)
            await ensure_events_stream(self._js)
            subscription = await self._nc.subscribe(LOG_APPENDED, cb=self._on_nudge)
            next_record = time.monotonic() + _RECORD_EVERY_S
            while True:
                self._wake.clear()
                relayed = await self.relay_once(conn)
                if relayed and time.monotonic() >= next_record:
                    await self._record_cursor(conn)
                    await self._measure_lag(conn)
                    next_record = time.monotonic() + _RECORD_EVERY_S
                if relayed < self._batch_size:
                    try:
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                    except TimeoutError:
                        await self._record_cursor(conn)
                        await self._measure_lag(conn)
        finally:
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
            with contextlib.suppress(Exception):
                await conn.close()

    async def _on_nudge(self, _message: Any) -> None:  # noqa: ANN401  (nats.aio.msg.Msg)
        self._wake.set()

    async def relay_once(self, conn: Any) -> int:  # noqa: ANN401  (asyncpg connection)
        """Publish the next batch after the cursor; return how many were relayed."""
        batch = await read_committed_after(conn, self._cursor, self._batch_size)
        if not batch:
            return 0
        events = [recorded for _, recorded in batch]
        # Publishes are written to the socket in order, so the stream keeps log order.
        await asyncio.gather(
            *(
                self._js.publish(
                    event_subject(recorded.event),
                    _encoder.encode(recorded),
                    headers={"Nats-Msg-Id": str(recorded.event_id)},
                )
                for recorded in events
            )
        )
        self._cursor = batch[-1][0]
        log.debug("eventlog.relay.published", count=len(events), position=self._cursor[1])
        return len(events)

    async def _measure_lag(self, conn: Any) -> None:  # noqa: ANN401  (asyncpg connection)
        """Set ``spinup_relay_lag_events``: committed events past the cursor (capped count).

        Counted, not subtracted: positions have gaps (a failed append uses one up). An event of a
        transaction that ends after a younger one was relayed may be missed for a moment.
        """
        behind = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM events WHERE position > $1 LIMIT $2) AS ahead",
            self._cursor[1],
            _LAG_COUNT_CAP,
        )
        metrics.RELAY_LAG.set(int(behind))

    async def _record_cursor(self, conn: Any) -> None:  # noqa: ANN401  (asyncpg connection)
        """Store the cursor, so a restart resumes there (a no-op when it has not moved)."""
        if self._cursor == self._recorded:
            return
        await conn.execute(
            "INSERT INTO relay_positions (relay, txid, position) VALUES ($1, $2::xid8, $3)"
            " ON CONFLICT (relay) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position",
            self._name,
            *self._cursor,
        )
        self._recorded = self._cursor
