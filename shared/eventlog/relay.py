"""Relay committed events from the platform Postgres to JetStream, in log order.

One relay is active per platform database (a session advisory lock); the others wait on the
lock. It wakes on NOTIFY after appends (with a poll as a safety net), publishes a batch with
``Nats-Msg-Id`` = event id so the server drops re-publishes, then records how far it got: the
cursor (appending transaction, position) of the last event. After a restart it resumes from
there. Log order is the order of that cursor, which keeps every stream's versions in order; an
event is relayed once every older transaction has ended (``read_committed_after``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import structlog
from nats.errors import Error as NatsError

from shared.contracts.subjects import event_subject
from shared.eventlog.schema import NOTIFY_CHANNEL, RELAY_LOCK
from shared.eventlog.store import read_committed_after
from shared.eventlog.stream import ensure_events_stream
from shared.pgerrors import CONNECTION_ERRORS

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

log = structlog.get_logger("shared.eventlog.relay")
_encoder = msgspec.json.Encoder()
# Outages of either side pause the relay; it reconnects and resumes from its recorded position.
_INTERRUPTIONS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresError,
    NatsError,
)


class Relay:
    """Publishes every committed event exactly once (deduplicated) to the events stream."""

    def __init__(
        self,
        dsn: str,
        js: JetStreamContext,
        *,
        name: str = "jetstream",
        batch_size: int = 256,
        poll_interval: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._js = js
        self._name = name
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()

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
        try:
            # Blocks while another relay is active; Postgres hands over the lock when that
            # relay's session ends, however it ends.
            await conn.execute("SELECT pg_advisory_lock($1)", RELAY_LOCK)
            log.info("eventlog.relay.started", relay=self._name)
            await ensure_events_stream(self._js)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            while True:
                self._wake.clear()
                relayed = await self.relay_once(conn)
                if relayed < self._batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    def _on_notify(self, *_args: Any) -> None:  # noqa: ANN401
        self._wake.set()

    async def relay_once(self, conn: Any) -> int:  # noqa: ANN401  (asyncpg connection)
        """Publish the next batch after the recorded cursor; return how many were relayed."""
        recorded_cursor = await conn.fetchrow(
            "SELECT txid, position FROM relay_positions WHERE relay = $1", self._name
        )
        cursor = (
            (recorded_cursor["txid"], recorded_cursor["position"]) if recorded_cursor else (0, 0)
        )
        batch = await read_committed_after(conn, cursor, self._batch_size)
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
        last_txid, last_position = batch[-1][0]
        await conn.execute(
            "INSERT INTO relay_positions (relay, txid, position) VALUES ($1, $2::xid8, $3)"
            " ON CONFLICT (relay) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position",
            self._name,
            last_txid,
            last_position,
        )
        log.debug("eventlog.relay.published", count=len(events), position=last_position)
        return len(events)
