"""Append-only event store with optimistic concurrency.

Projections are updated in the appending transaction, and the reply of every command that
succeeded is stored with it (sealed, since replies hold credentials).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import asyncpg
import msgspec

from shared.contracts.events import Event, RecordedEvent
from shared.contracts.replies import Reply
from shared.eventlog.codec import decode_event, encode_event, event_type
from shared.eventlog.errors import ConcurrencyConflictError, platform_errors
from shared.eventlog.schema import APPEND_LOCK, NOTIFY_CHANNEL

if TYPE_CHECKING:
    from uuid import UUID

    from shared.crypto.sealing import Keyring

R = TypeVar("R", bound=Reply)
_encoder = msgspec.json.Encoder()

_SELECT = (
    "SELECT position, stream_id, version, event_id, event_type, data, command_id, correlation_id,"
    " recorded_at FROM events"
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


async def read_events_after(conn: Any, position: int, limit: int) -> list[RecordedEvent]:  # noqa: ANN401  (asyncpg connection)
    """Events after ``position`` in log order (for the relay and replays)."""
    rows = await conn.fetch(
        f"{_SELECT} WHERE position > $1 ORDER BY position LIMIT $2", position, limit
    )
    return [_row_to_recorded(row) for row in rows]


class Projection(Protocol):
    """A read model kept in step with the log inside the appending transaction."""

    def handles(self, stream_id: str) -> bool:
        """Whether this projection reads this stream."""
        ...

    async def project(self, conn: Any, stream_id: str) -> None:  # noqa: ANN401  (asyncpg conn)
        """Bring the read model of ``stream_id`` up to date, on ``conn``'s transaction."""
        ...


class EventStore:
    """The platform's event log."""

    def __init__(
        self, pool: asyncpg.Pool, keyring: Keyring, projections: Sequence[Projection] = ()
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._projections = tuple(projections)

    async def load(self, stream_id: str) -> list[RecordedEvent]:
        """Every event of a stream, oldest first."""
        async with platform_errors():
            rows = await self._pool.fetch(
                f"{_SELECT} WHERE stream_id = $1 ORDER BY version", stream_id
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
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
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
                            await projection.project(conn, stream_id)
                    if reply is not None:
                        await conn.execute(
                            "INSERT INTO command_replies (command_id, reply) VALUES ($1, $2)"
                            " ON CONFLICT (command_id) DO NOTHING",
                            command_id,
                            self._keyring.seal(_encoder.encode(reply), aad=command_id.bytes),
                        )
                    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
            except asyncpg.UniqueViolationError as exc:
                msg = f"stream {stream_id} is past version {expected_version}"
                raise ConcurrencyConflictError(msg) from exc
        return recorded

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
