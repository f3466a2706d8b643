"""Append-only event store with optimistic concurrency.

Projections are updated with the append, atomically. No reply is stored: a retried command is
answered from the log (docs/adr/0048).

An append is one statement, and so one round trip and one implicit transaction, when every
projection of its stream is a ``FoldedProjection`` (a row folded from the stream's events alone,
as the ``resources`` read model is): the events and the projected row are written by one
data-modifying ``WITH``. Appends to streams with a ``Projection`` that reads its tables (the
accounts') run in an explicit transaction instead (docs/adr/0013).

Appends run concurrently: nothing global is locked, so commits on different streams group into
one WAL flush. The relay orders by the appending transaction (``txid``) below the oldest one
still running, so it never skips an event committed late (docs/adr/0012).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import asyncpg
import msgspec

from shared.contracts.events import RecordedEvent, StoredEvent
from shared.eventlog.codec import decode_event, encode_event, event_type
from shared.eventlog.errors import ConcurrencyConflictError, platform_errors
from shared.eventlog.schema import HOLD_APPENDS
from shared.observability import metrics, tracing
from shared.postgres.pool import rehearse_writes

if TYPE_CHECKING:
    from uuid import UUID


#: The columns of ``events`` that ``recorded_from_row`` reads.
EVENT_COLUMNS = (
    "position, stream_id, version, event_id, event_type, data, command_id, correlation_id,"
    " recorded_at"
)
_SELECT = f"SELECT {EVENT_COLUMNS}"


def recorded_from_row(row: asyncpg.Record) -> RecordedEvent:
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
    return [((row["txid"], row["position"]), recorded_from_row(row)) for row in rows]


# $1 stream, $2 expected version, $3 event ids, $4 types, $5 data, $6 command, $7 correlation,
# $8 recorded at. Each folded projection's statement follows as one more WITH item, its
# parameters numbered on from $9.
_APPEND = """
WITH appended AS (
  INSERT INTO events (stream_id, version, event_id, event_type, data, command_id, correlation_id,
                      recorded_at)
  SELECT $1, $2::integer + e.n::integer, e.event_id, e.event_type, e.data, $6, $7, $8
  FROM unnest($3::uuid[], $4::text[], $5::jsonb[]) WITH ORDINALITY AS e(event_id, event_type,
                                                                          data, n)
  RETURNING position, version
){projected}
SELECT position FROM appended{checked} ORDER BY version
"""


def _arguments(
    stream_id: str,
    expected_version: int,
    appended: Sequence[RecordedEvent],
    *,
    command_id: UUID,
    correlation_id: str,
    recorded_at: datetime,
) -> list[Any]:
    """``_APPEND``'s own arguments, for ``appended`` after ``expected_version``."""
    return [
        stream_id,
        expected_version,
        [e.event_id for e in appended],
        [event_type(e.event) for e in appended],
        [encode_event(e.event) for e in appended],
        command_id,
        correlation_id,
        recorded_at,
    ]


@dataclass(frozen=True, slots=True)
class Precondition:
    """What must hold for an append to be written, checked by the append's own statement.

    ``sql`` is a ``SELECT`` whose parameters are written ``${p0}``, ``${p1}``, ... for
    ``values[0]``, ``values[1]``, ... (the store numbers them on after its own; ``str.format``
    does it, so ``sql`` holds no other braces). It refuses by
    calling ``refuse_append(detail)``, which raises, so the statement writes nothing at all.
    Checked in the same statement, it costs no round trip of its own (docs/adr/0040).
    """

    sql: str
    values: Sequence[Any]

    def numbered_from(self, first_parameter: int) -> str:
        """``sql`` with its parameters numbered on from ``first_parameter``."""
        return self.sql.format(**{f"p{i}": first_parameter + i for i in range(len(self.values))})


@dataclass(frozen=True, slots=True)
class _Append:
    """One append's writes, as ``EventStore.append`` was given them."""

    stream_id: str
    expected_version: int
    events: Sequence[StoredEvent]
    command_id: UUID
    correlation_id: str
    recorded_at: datetime
    precondition: Precondition | None


@runtime_checkable
class FoldedProjection(Protocol):
    """A read model whose rows are a fold of one stream's events and nothing else.

    Written by the append's own statement: the store hands it the stream's whole history
    (what was there before, then what this append adds) and runs the statement it returns.
    """

    def handles(self, stream_id: str) -> bool:
        """Whether this projection reads this stream."""
        ...

    def upsert(
        self, stream_id: str, history: Sequence[RecordedEvent], first_parameter: int
    ) -> tuple[str, Sequence[Any]]:
        """A data-modifying statement that writes the fold of ``history``, and its arguments.

        Its parameters are numbered from ``$first_parameter`` on.
        """
        ...


async def rebuild_folded(
    pool: asyncpg.Pool, projection: FoldedProjection, table: str, stream_prefix: str
) -> int:
    """Recompute a folded projection's ``table`` from the log alone; returns its row count.

    Every stream whose id starts with ``stream_prefix`` is folded by the projection's own
    ``upsert``, the statement its appends run. Holds appends back (``HOLD_APPENDS``), so the
    log stands still while it runs.
    """
    async with platform_errors(), pool.acquire() as conn, conn.transaction():
        await conn.execute(HOLD_APPENDS)
        await conn.execute(f"TRUNCATE {table}")
        stream: list[RecordedEvent] = []

        async def write() -> None:
            statement, values = projection.upsert(stream[0].stream_id, stream, 1)
            await conn.execute(statement, *values)

        async for row in conn.cursor(
            f"{_SELECT} FROM events WHERE stream_id LIKE $1 ORDER BY stream_id, version",
            f"{stream_prefix}%",
        ):
            if stream and stream[0].stream_id != row["stream_id"]:
                await write()
                stream = []
            stream.append(recorded_from_row(row))
        if stream:
            await write()
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


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
        self,
        pool: asyncpg.Pool,
        projections: Sequence[Projection | FoldedProjection] = (),
        *,
        nudge: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``nudge``: tells the relay that the log has grown (``Bus.nudge_relay``)."""
        self._pool = pool
        self._folded = tuple(p for p in projections if isinstance(p, FoldedProjection))
        self._projections = tuple(p for p in projections if not isinstance(p, FoldedProjection))
        self._nudge = nudge

    async def load(self, stream_id: str) -> list[RecordedEvent]:
        """Every event of a stream, oldest first."""
        async with platform_errors():
            rows = await self._pool.fetch(
                f"{_SELECT} FROM events WHERE stream_id = $1 ORDER BY version", stream_id
            )
        return [recorded_from_row(row) for row in rows]

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[StoredEvent],
        *,
        command_id: UUID,
        correlation_id: str,
        prior: Sequence[RecordedEvent] | None = None,
        recorded_at: datetime | None = None,
        precondition: Precondition | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` after ``expected_version`` and update projections.

        All or nothing. ``prior``: the stream's events up to ``expected_version``, when the
        caller already holds them (a folded projection needs them; otherwise they are read).
        ``recorded_at``: the time the events are stored with, when the caller already told it
        (in its answer); the appender's clock now otherwise. ``precondition``: checked in the
        same transaction; when it refuses, nothing is written.

        Raises:
            ConcurrencyConflictError: the stream is not at ``expected_version``.
            AppendRefusedError: ``precondition`` refused the append.
            PlatformUnavailableError: the database is unreachable.
        """
        write = _Append(
            stream_id,
            expected_version,
            events,
            command_id,
            correlation_id,
            recorded_at or datetime.now(UTC),
            precondition,
        )
        started = time.perf_counter()
        try:
            with tracing.span("eventlog.append", attributes={"spinup.events": len(events)}):
                if self._in_transaction(stream_id):
                    recorded = await self._append_in_transaction(write)
                else:
                    recorded = await self._append_in_one_statement(write, prior)
        except asyncpg.UniqueViolationError as exc:
            msg = f"stream {stream_id} is past version {expected_version}"
            raise ConcurrencyConflictError(msg) from exc
        finally:
            metrics.EVENTLOG_APPEND_DURATION.observe(time.perf_counter() - started)
        if self._nudge is not None:
            # After the commit, outside it: a lost nudge only delays the relay to its poll.
            with contextlib.suppress(Exception):
                await self._nudge()
        return recorded

    def _in_transaction(self, stream_id: str) -> bool:
        """Whether appends to ``stream_id`` run in a transaction (a projection reads its tables)."""
        return any(p.handles(stream_id) for p in self._projections)

    async def _append_in_one_statement(
        self, write: _Append, prior: Sequence[RecordedEvent] | None
    ) -> list[RecordedEvent]:
        stream_id, expected_version = write.stream_id, write.expected_version
        folded = [p for p in self._folded if p.handles(stream_id)]
        before: Sequence[RecordedEvent] = ()
        if folded and expected_version > 0:
            before = prior if prior is not None else await self.load(stream_id)
            if len(before) != expected_version:
                msg = f"stream {stream_id} is at version {len(before)}, not {expected_version}"
                raise ConcurrencyConflictError(msg)
        # The appender's clock, not the server's: the projected row is folded before the
        # statement runs, from the same time the events are stored with (docs/adr/0013).
        recorded_at = write.recorded_at
        # The objects are what a read would decode: no need to encode and decode them again.
        stored = write.events
        appended = [
            RecordedEvent(
                position=0,  # the identity the insert assigns; filled in below
                stream_id=stream_id,
                version=expected_version + offset,
                event_id=uuid.uuid4(),
                command_id=write.command_id,
                correlation_id=write.correlation_id,
                recorded_at=recorded_at,
                event=event,
            )
            for offset, event in enumerate(stored, start=1)
        ]
        statement, arguments = self._statement(
            stream_id,
            [*before, *appended],
            write.precondition,
            _arguments(
                stream_id,
                expected_version,
                appended,
                command_id=write.command_id,
                correlation_id=write.correlation_id,
                recorded_at=recorded_at,
            ),
        )
        async with platform_errors():
            rows = await self._pool.fetch(statement, *arguments)
        return [
            msgspec.structs.replace(e, position=row["position"])
            for e, row in zip(appended, rows, strict=True)
        ]

    def _statement(
        self,
        stream_id: str,
        history: Sequence[RecordedEvent],
        precondition: Precondition | None,
        arguments: list[Any],
    ) -> tuple[str, list[Any]]:
        """The one statement of an append to ``stream_id``, and its arguments.

        ``arguments`` are ``_APPEND``'s own; each folded projection's row (the fold of
        ``history``) and the precondition's values are numbered on after them.
        """
        projected = ""
        for index, projection in enumerate(p for p in self._folded if p.handles(stream_id)):
            upsert, values = projection.upsert(stream_id, history, len(arguments) + 1)
            projected += f", projected_{index} AS ({upsert})"
            arguments.extend(values)
        checked = ""
        if precondition is not None:
            # Joined by the final SELECT so that it is evaluated; whichever part raises, the
            # one statement writes nothing.
            projected += f", checked AS ({precondition.numbered_from(len(arguments) + 1)})"
            arguments.extend(precondition.values)
            checked = ", checked"
        return _APPEND.format(projected=projected, checked=checked), arguments

    async def rehearse_appends(
        self, appends: Callable[[], Sequence[tuple[str, Precondition | None]]]
    ) -> None:
        """Rehearse appends on every pooled connection: written, then rolled back.

        ``appends`` gives each connection its ``(stream id, precondition)`` pairs; each is an
        append of no events at version 0, the statement a real append to such a stream with
        such a precondition runs (``pgpool.rehearse_writes``). Streams whose appends run in a
        transaction are left out.
        """
        now = datetime.now(UTC)

        def writes() -> list[tuple[str, list[Any]]]:
            return [
                self._statement(
                    stream_id,
                    [],
                    precondition,
                    _arguments(
                        stream_id,
                        0,
                        [],
                        command_id=uuid.uuid4(),
                        correlation_id="rehearsal",
                        recorded_at=now,
                    ),
                )
                for stream_id, precondition in appends()
                if not self._in_transaction(stream_id)
            ]

        async with platform_errors():
            await rehearse_writes(self._pool, writes)

    async def _append_in_transaction(self, write: _Append) -> list[RecordedEvent]:
        stream_id = write.stream_id
        recorded: list[RecordedEvent] = []
        async with platform_errors(), self._pool.acquire() as conn, conn.transaction():
            if write.precondition is not None:
                await conn.fetchrow(write.precondition.numbered_from(1), *write.precondition.values)
            for offset, event in enumerate(write.events, start=1):
                row = await conn.fetchrow(
                    "INSERT INTO events (stream_id, version, event_id, event_type,"
                    " data, command_id, correlation_id, recorded_at)"
                    " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)"
                    f" RETURNING {EVENT_COLUMNS}",
                    stream_id,
                    write.expected_version + offset,
                    uuid.uuid4(),
                    event_type(event),
                    encode_event(event),
                    write.command_id,
                    write.correlation_id,
                    write.recorded_at,
                )
                if row is None:  # pragma: no cover  (INSERT ... RETURNING always returns)
                    msg = "INSERT returned no row"
                    raise AssertionError(msg)
                recorded.append(recorded_from_row(row))
            for projection in self._projections:
                if projection.handles(stream_id):
                    await projection.project(conn, stream_id, recorded)
            for folded in self._folded:
                if folded.handles(stream_id):
                    rows = await conn.fetch(
                        f"{_SELECT} FROM events WHERE stream_id = $1 ORDER BY version", stream_id
                    )
                    statement, values = folded.upsert(
                        stream_id, [recorded_from_row(r) for r in rows], 1
                    )
                    await conn.execute(statement, *values)
        return recorded

    async def check(self, precondition: Precondition) -> None:
        """Ask ``precondition`` alone, as an append would.

        Raises:
            AppendRefusedError: it refuses.
            PlatformUnavailableError: the database is unreachable.
        """
        async with platform_errors():
            await self._pool.fetchval(precondition.numbered_from(1), *precondition.values)
