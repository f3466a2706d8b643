"""Append-only event store with optimistic concurrency.

Projections are updated in the appending transaction, and the reply of every command that
succeeded is stored with it (sealed, since replies hold credentials).

Appends run concurrently: nothing global is locked, so commits on different streams group into
one WAL flush. The relay orders by the appending transaction (``txid``) below the oldest one
still running, so it never skips an event committed late (docs/adr/0012).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import asyncpg
import msgspec

from shared.contracts.events import Event, RecordedEvent
from shared.contracts.replies import Reply
from shared.eventlog.codec import decode_event, encode_event, event_type
from shared.eventlog.errors import ConcurrencyConflictError, platform_errors
from shared.eventlog.schema import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from uuid import UUID

    from shared.crypto.sealing import Keyring

R = TypeVar("R", bound=Reply)
_encoder = msgspec.json.Encoder()

_SELECT = (
    "SELECT position, stream_id, version, event_id, event_type, data, command_id, correlation_id,"
    " recorded_at"
)


def _row_to_recorded(row: asyncpg.Record) -> RecordedEvent:
    """A stored row as a ``RecordedEvent``."""
    return RecordedEvent(
        position=row["position"],
        stream_id=row["stream_id"],
        version=row["version"],
        event_id=row["event_id"],
        command_id=row["command_id"],
        correlation_id=row["correlation_id"],
        recorded_at=row["recorded_at"],
        event=decode_event(row["event_type"], row["data"]),
    )


async def read_committed_after(
    conn: Any,  # noqa: ANN401  (asyncpg connection)
    cursor: tuple[int, int],
    limit: int,
) -> list[tuple[tuple[int, int], RecordedEvent]]:
    """Events after ``cursor`` (txid, position) in relay order, each with its own cursor.

    Only events of transactions older than every transaction still running are returned: no
    event can later commit before them, so a reader that resumes from the last cursor it saw
    misses nothing.
    """
    rows = await conn.fetch(
        f"{_SELECT}, txid FROM events"
        " WHERE (txid, position) > ($1::xid8, $2)"
        " AND txid < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY txid, position LIMIT $3",
        *cursor,
        limit,
    )
    return [((row["txid"], row["position"]), _row_to_recorded(row)) for row in rows]


class Projection(Protocol):
    """A read model kept in step with the log inside the appending transaction."""

    def handles(self, stream_id: str) -> bool:
        """Whether this projection reads this stream."""
        ...

    async def project(
        self,
        conn: Any,  # noqa: ANN401  (asyncpg connection)
        stream_id: str,
        appended: Sequence[RecordedEvent],
    ) -> None:
        """Bring the read model of ``stream_id`` up to date, on ``conn``'s transaction.

        ``appended``: the events this transaction just added, oldest first (none in a rebuild);
        when the first is version 1 they are the whole stream.
        """
        ...


class EventStore:
    """The platform's event log."""

    def __init__(
        self, pool: asyncpg.Pool, keyring: Keyring, projections: Sequence[Projection] = ()
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._projections = tuple(projections)
        self._nudge_wanted = False
        self._nudger: asyncio.Task[None] | None = None

    async def load(self, stream_id: str) -> list[RecordedEvent]:
        """Every event of a stream, oldest first."""
        async with platform_errors():
            rows = await self._pool.fetch(
                f"{_SELECT} FROM events WHERE stream_id = $1 ORDER BY version", stream_id
            )
        return [_row_to_recorded(row) for row in rows]

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        *,
        command_id: UUID,
        correlation_id: str,
        reply: Reply | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` after ``expected_version``, update projections, store ``reply``.

        All in one transaction.

        Raises:
            ConcurrencyConflictError: the stream moved past ``expected_version``.
            PlatformUnavailableError: the database is unreachable.
        """
        recorded: list[RecordedEvent] = []
        async with platform_errors(), self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    for offset, event in enumerate(events, start=1):
                        row = await conn.fetchrow(
                            "INSERT INTO events (stream_id, version, event_id, event_type,"
                            " data, command_id, correlation_id)"
                            " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)"
                            " RETURNING position, stream_id, version, event_id, event_type, data,"
                            " command_id, correlation_id, recorded_at",
                            stream_id,
                            expected_version + offset,
                            uuid.uuid4(),
                            event_type(event),
                            encode_event(event),
                            command_id,
                            correlation_id,
                        )
                        if row is None:  # pragma: no cover  (INSERT ... RETURNING always returns)
                            msg = "INSERT returned no row"
                            raise AssertionError(msg)
                        recorded.append(_row_to_recorded(row))
                    for projection in self._projections:
                        if projection.handles(stream_id):
                            await projection.project(conn, stream_id, recorded)
                    if reply is not None:
                        await conn.execute(
                            "INSERT INTO command_replies (command_id, reply) VALUES ($1, $2)"
                            " ON CONFLICT (command_id) DO NOTHING",
                            command_id,
                            self._keyring.seal(_encoder.encode(reply), aad=command_id.bytes),
                        )
            except asyncpg.UniqueViolationError as exc:
                msg = f"stream {stream_id} is past version {expected_version}"
                raise ConcurrencyConflictError(msg) from exc
        self._nudge_relay()
        return recorded

    def _nudge_relay(self) -> None:
        """Wake the relay after a commit, without making the append wait for it.

        A NOTIFY takes a lock every notifying commit queues on, flush included, so it is sent
        after the append's commit, one at a time per store: appends made while one is in flight
        share the next. The relay's poll covers a nudge that is lost.
        """
        self._nudge_wanted = True
        if self._nudger is None or self._nudger.done():
            self._nudger = asyncio.create_task(self._send_nudges(), name="eventlog-nudge")

    async def _send_nudges(self) -> None:
        while self._nudge_wanted:
            self._nudge_wanted = False
            with contextlib.suppress(Exception):
                await self._pool.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)

    async def stored_reply(self, command_id: UUID, reply_type: type[R]) -> R | None:
        """The reply stored for ``command_id`` when it succeeded, if any."""
        async with platform_errors():
            sealed = await self._pool.fetchval(
                "SELECT reply FROM command_replies WHERE command_id = $1", command_id
            )
        if sealed is None:
            return None
        return msgspec.json.decode(
            self._keyring.open(sealed, aad=command_id.bytes), type=reply_type
        )
