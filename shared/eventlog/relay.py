"""Relay committed events from the platform Postgres to JetStream, in log order.

One relay is active per platform database (a session advisory lock); the others wait on the
lock. It wakes when an appender says the log has grown (``LOG_APPENDED`` on core NATS, with a
poll as a safety net), lingers a few milliseconds so the appends of concurrent requests go
together, and publishes what it read as one message (``shared.eventlog.relayed``, ADR 0031): a
message per event cost the relay, JetStream and every consumer a publish, an ack and a delivery
each. It keeps its cursor (appending transaction, position of the last event) in memory, and
records it at most once a second and whenever it goes idle. Each message carries the cursor of
its last event, so a relay that takes over resumes after the last message the stream holds, or
from the recorded cursor if that is later: every event is on the stream once. Log order is the
order of that cursor, which keeps every stream's versions in order; an event is relayed once every
older transaction has ended (``read_committed_after``).
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
from nats.js.errors import NotFoundError

from shared.contracts.subjects import (
    EVENT_BATCH_SUBJECT,
    EVENTS_STREAM,
    LOG_APPENDED,
)
from shared.eventlog.relayed import pack, relayed_through
from shared.eventlog.schema import RELAY_LOCK
from shared.eventlog.store import read_committed_after
from shared.eventlog.stream import ensure_events_stream
from shared.observability import metrics
from shared.postgres.errors import CONNECTION_ERRORS
from shared.postgres.pool import CLOSE_TIMEOUT_S
from shared.runtime import raise_if_cancelled, set_within

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

    from shared.contracts.events import RecordedEvent

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
#: A message holds at most this many bytes of events (NATS refuses payloads over 1 MB).
_MESSAGE_BYTES = 256 * 1024
#: After a nudge, how long the relay waits for the appends running alongside to commit too.
LINGER_S = 0.005


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
        linger: float = LINGER_S,
    ) -> None:
        self._dsn = dsn
        self._nc = nc
        self._js = nc.jetstream()
        self._name = name
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._linger = linger
        self._wake = asyncio.Event()
        self._cursor: tuple[int, int] = (0, 0)
        self._recorded: tuple[int, int] = (0, 0)

    async def run(self) -> None:
        """Relay until cancelled, surviving database and NATS outages."""
        while True:
            try:
                await self._run_while_leader()
            except _INTERRUPTIONS as exc:
                raise_if_cancelled(exc)
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
            # The relay before this one may have published past the cursor it recorded.
            self._cursor = max(self._cursor, await self._last_published(conn))
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
                    if await set_within(self._wake, self._poll_interval):
                        await asyncio.sleep(self._linger)
                    else:
                        await self._record_cursor(conn)
                        await self._measure_lag(conn)
        finally:
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
            with contextlib.suppress(Exception):
                await conn.close(timeout=CLOSE_TIMEOUT_S)

    async def _on_nudge(self, _message: Any) -> None:  # noqa: ANN401  (nats.aio.msg.Msg)
        self._wake.set()

    async def relay_once(self, conn: Any) -> int:  # noqa: ANN401  (asyncpg connection)
        """Publish the next batch after the cursor; return how many were relayed."""
        batch = await read_committed_after(conn, self._cursor, self._batch_size)
        if not batch:
            return 0
        events = [recorded for _, recorded in batch]
        for message, through in _messages(batch):
            # One at a time, each acknowledged before the next: the stream's last message is
            # always the relay's furthest point, which a relay taking over resumes from.
            await self._js.publish(
                EVENT_BATCH_SUBJECT, message, headers={"Nats-Msg-Id": f"{through[0]}.{through[1]}"}
            )
            self._cursor = through
        log.debug("eventlog.relay.published", count=len(events), position=self._cursor[1])
        return len(events)

    async def _last_published(self, conn: Any) -> tuple[int, int]:  # noqa: ANN401  (asyncpg)
        """The cursor after the last event the stream holds ((0, 0): none, or not this log's).

        Only a cursor this log holds counts: a log restored from a dump has its transaction ids
        renumbered (docs/operations.md), and a stream that outlived it would otherwise send the
        relay past every later append.
        """
        try:
            last = await self._js.get_last_msg(EVENTS_STREAM, EVENT_BATCH_SUBJECT)
        except NotFoundError:
            return (0, 0)
        try:
            through = relayed_through(last.data or b"")
        except msgspec.MsgspecError:
            log.warning("eventlog.relay.last_batch_unreadable", seq=last.seq)
            return (0, 0)
        return through if await log_holds(conn, through) else (0, 0)

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


async def log_holds(conn: Any, cursor: tuple[int, int]) -> bool:  # noqa: ANN401  (asyncpg)
    """Whether this log holds the event at ``cursor``: its position, appended by its txid."""
    return bool(
        await conn.fetchval(
            "SELECT txid = $2::xid8 FROM events WHERE position = $1", cursor[1], cursor[0]
        )
    )


def _messages(
    batch: list[tuple[tuple[int, int], RecordedEvent]],
) -> list[tuple[bytes, tuple[int, int]]]:
    """``batch`` as message bodies, each with the cursor after its last event.

    Each body holds at most ``_MESSAGE_BYTES`` of events; an event larger than that goes alone.
    """
    messages: list[tuple[bytes, tuple[int, int]]] = []
    chunk: list[bytes] = []
    size = 0
    through = batch[0][0]
    for cursor, recorded in batch:
        encoded = _encoder.encode(recorded)
        if chunk and size + len(encoded) > _MESSAGE_BYTES:
            messages.append((pack(chunk, through), through))
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded)
        through = cursor
    messages.append((pack(chunk, through), through))
    return messages
