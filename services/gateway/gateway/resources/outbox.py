"""What the notifier has to do, as indexed rows (docs/adr/0037).

Two read models, each a fold of the log and rebuilt from it alone:

- ``resources`` (``shared.eventlog.projections``) holds each resource's notify target: where
  its notifications go, when its first ``resource.expiring`` can be due (``notify_from``) and
  its last over-quota event while targeted;
- ``notifications`` (here) holds every notification of every outbox stream
  (``notification-<id>``), one row each: what it says, where it goes, how its delivery stands.

So the notifier asks what is due instead of folding every event of the platform: the rows of
resources that have a target and something to say now (``Outbox.to_queue``), and the queued
notifications whose next attempt is due (``Outbox.to_deliver``). A resource without a target
costs it nothing, and a new leader starts with a query, not a replay of the log.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.resources.lifetime import DELETED, EXPIRED, EXPIRING, OVER_QUOTA
from shared.contracts.events import (
    NotificationAttemptFailed,
    NotificationDelivered,
    NotificationQueued,
    RecordedEvent,
)
from shared.contracts.kinds import DeprovisionReason, ResourceKind, ResourceStatus
from shared.eventlog.schema import ENDED_STATUSES, migrate
from shared.eventlog.store import rebuild_folded

if TYPE_CHECKING:
    import asyncpg

_STREAM_PREFIX = "notification-"
NOTIFY_NAMESPACE = uuid.UUID("0b7f6c1e-5a2d-4f0e-9c3b-27d1e8a4f623")

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id                uuid PRIMARY KEY,
    resource_id       uuid        NOT NULL,
    -- The outbox stream's version after its last event: the next append's expected version.
    outbox_version    integer     NOT NULL,
    notification_type text        NOT NULL,
    url               text        NOT NULL,
    secret_generation integer     NOT NULL,
    body              text        NOT NULL,
    -- A resource.expiring notice: the expiry and the lead it warned of (from its body).
    expires_at        timestamptz,
    lead_seconds      integer,
    attempts          integer     NOT NULL,
    -- When the next attempt is due; NULL once delivered or given up.
    next_at           timestamptz
);
CREATE INDEX IF NOT EXISTS notifications_resource ON notifications (resource_id, notification_type);
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (next_at)
    WHERE next_at IS NOT NULL;
"""

_COLUMNS = (
    "id",
    "resource_id",
    "outbox_version",
    "notification_type",
    "url",
    "secret_generation",
    "body",
    "expires_at",
    "lead_seconds",
    "attempts",
    "next_at",
)
_TYPES = (
    "uuid[]",
    "uuid[]",
    "integer[]",
    "text[]",
    "text[]",
    "integer[]",
    "text[]",
    "timestamptz[]",
    "integer[]",
    "integer[]",
    "timestamptz[]",
)


def _upsert(first_parameter: int) -> str:
    arrays = ", ".join(f"${first_parameter + i}::{t}" for i, t in enumerate(_TYPES))
    names = ", ".join(_COLUMNS)
    return (
        f"INSERT INTO notifications ({names}) SELECT * FROM unnest({arrays})"
        " ON CONFLICT (id) DO UPDATE SET outbox_version = EXCLUDED.outbox_version,"
        " attempts = EXCLUDED.attempts, next_at = EXCLUDED.next_at"
    )


class _Warned(msgspec.Struct):
    lead_seconds: int | None = None
    expires_at: datetime | None = None


class _Body(msgspec.Struct):
    data: _Warned


_body_decoder = msgspec.json.Decoder(_Body)


def _outbox_rows(history: Sequence[RecordedEvent]) -> list[list[Any]]:
    """One row per notification of one outbox stream, in ``_COLUMNS`` order."""
    rows: dict[uuid.UUID, list[Any]] = {}
    for recorded in history:
        match recorded.event:
            case NotificationQueued() as queued:
                warned = (
                    _body_decoder.decode(queued.body).data
                    if queued.notification_type == EXPIRING
                    else _Warned()
                )
                rows[queued.notification_id] = [
                    queued.notification_id,
                    queued.resource_id,
                    0,
                    queued.notification_type,
                    queued.url,
                    queued.secret_generation,
                    queued.body,
                    warned.expires_at,
                    warned.lead_seconds,
                    0,
                    recorded.recorded_at,
                ]
            case NotificationDelivered() as delivered if delivered.notification_id in rows:
                rows[delivered.notification_id][9:] = [delivered.attempt, None]
            case NotificationAttemptFailed() as failed if failed.notification_id in rows:
                rows[failed.notification_id][9:] = [failed.attempt, failed.retry_at]
    for row in rows.values():
        row[2] = len(history)
    return list(rows.values())


class OutboxProjection:
    """Keeps ``notifications`` equal to the fold of every outbox stream.

    A ``shared.eventlog.store.FoldedProjection``: every append writes its stream's rows in its
    own statement.
    """

    def handles(self, stream_id: str) -> bool:
        """Outbox streams only."""
        return stream_id.startswith(_STREAM_PREFIX)

    def upsert(
        self, stream_id: str, history: Sequence[RecordedEvent], first_parameter: int
    ) -> tuple[str, Sequence[Any]]:
        """The rows of the stream's fold, written by the append that made ``history`` whole."""
        del stream_id
        rows = _outbox_rows(history)
        columns = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in _COLUMNS]
        return _upsert(first_parameter), columns


async def rebuild_outbox(pool: asyncpg.Pool) -> int:
    """Recompute ``notifications`` from the log alone; returns the number of rows written."""
    return await rebuild_folded(pool, OutboxProjection(), "notifications", _STREAM_PREFIX)


async def migrate_outbox(pool: asyncpg.Pool) -> None:
    """Create ``notifications``; the first time, fill it from the outbox streams already logged."""
    existed = await pool.fetchval("SELECT to_regclass('notifications') IS NOT NULL")
    await migrate(pool, OUTBOX_SCHEMA)
    if not existed:
        await rebuild_outbox(pool)


def notice_id(*parts: object) -> uuid.UUID:
    """A notification's id, derived from what caused it: a new leader never queues twice."""
    return uuid.uuid5(NOTIFY_NAMESPACE, "|".join(str(part) for part in parts))


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification to queue now for one resource, and what its body says of it."""

    resource_id: uuid.UUID
    notification_id: uuid.UUID
    notification_type: str
    url: str
    secret_generation: int
    kind: ResourceKind | None
    name: str | None
    expires_at: datetime | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Pending:
    """A queued notification whose next attempt is due."""

    queued: NotificationQueued
    attempts: int


_TARGET = "r.id, r.kind, r.name, r.expires_at, r.notify_url, r.notify_generation"

# Live resources in their warning window whose shortest lead now due (``lead``) has not been
# queued for this expiry: queued leads are all due ones, so if the shortest was not, none
# shorter was either, and a longer one queued earlier never makes it redundant. After an
# extension the leads count again (the notices name the expiry).
_TO_WARN = f"""
SELECT {_TARGET}, w.lead FROM resources r
CROSS JOIN LATERAL (
  SELECT min(l) AS lead FROM unnest(r.notify_leads) AS l
  WHERE r.expires_at - make_interval(secs => l) <= $1
    AND r.expires_at - make_interval(secs => l) > r.created_at) AS w
WHERE r.notify_from <= $1 AND r.status = '{ResourceStatus.ACTIVE.value}' AND r.expires_at > $1
  AND w.lead IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.resource_id = r.id
    AND n.notification_type = '{EXPIRING}' AND n.expires_at = r.expires_at
    AND n.lead_seconds <= w.lead)
ORDER BY r.notify_from LIMIT $2
"""
# Live resources with a target that went over quota while it was set, with the over-quota
# notices already queued: few, and the notice id (derived from the event's) is compared here.
_OVER_QUOTA = f"""
SELECT {_TARGET}, r.over_quota_event, r.over_quota_usage, r.over_quota_quota,
  ARRAY(SELECT n.id FROM notifications n WHERE n.resource_id = r.id
        AND n.notification_type = '{OVER_QUOTA}') AS queued
FROM resources r
WHERE r.notify_url IS NOT NULL AND r.over_quota_event IS NOT NULL
  AND r.status = '{ResourceStatus.ACTIVE.value}'
"""
# Resources that ended (or were suspended for an export: ``resource.expired`` is said then, with
# the deadline, and not again when the grace ends) since ``$1``, whose end notice is not queued.
_ENDED = f"""
SELECT {_TARGET}, r.status, r.delete_at, r.deprovision_reason, r.updated_at FROM resources r
WHERE r.notify_url IS NOT NULL AND r.status IN ({ENDED_STATUSES}) AND r.updated_at >= $1
  AND NOT (r.status = '{ResourceStatus.SUSPENDED.value}' AND r.delete_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.resource_id = r.id
    AND n.notification_type = CASE r.status WHEN '{ResourceStatus.DELETED.value}'
      THEN '{DELETED}' ELSE '{EXPIRED}' END)
ORDER BY r.updated_at LIMIT $2
"""
_TO_DELIVER = """
SELECT id, resource_id, notification_type, url, secret_generation, body, attempts
FROM notifications WHERE next_at <= $1 ORDER BY next_at LIMIT $2
"""


def _notice(
    row: asyncpg.Record, notification_id: uuid.UUID, kind_of_notice: str, data: dict[str, Any]
) -> Notice:
    return Notice(
        resource_id=row["id"],
        notification_id=notification_id,
        notification_type=kind_of_notice,
        url=row["notify_url"],
        secret_generation=row["notify_generation"],
        kind=ResourceKind(row["kind"]) if row["kind"] else None,
        name=row["name"],
        expires_at=row["expires_at"],
        data=data,
    )


def _end_notice(row: asyncpg.Record) -> Notice:
    status = ResourceStatus(row["status"])
    if status is ResourceStatus.SUSPENDED:
        # Expired with an export grace (ADR 0030): said once, at suspension, with the deadline;
        # the deletion at the end of the grace has the same notice id, so it is not said again.
        return _notice(
            row,
            notice_id(EXPIRED, row["id"]),
            EXPIRED,
            {
                "reason": DeprovisionReason.EXPIRED.value,
                "export_until": row["delete_at"].isoformat(),
                "export": "GET /resources/{token}/export",
            },
        )
    kind_of_notice = EXPIRED if status is ResourceStatus.EXPIRED else DELETED
    return _notice(
        row,
        notice_id(kind_of_notice, row["id"]),
        kind_of_notice,
        {"reason": row["deprovision_reason"]},
    )


async def to_queue(
    conn: asyncpg.Connection, now: datetime, ended_since: datetime, limit: int
) -> tuple[list[Notice], datetime | None]:
    """The notifications due by ``now`` and not queued yet, at most ``limit`` of each sort.

    ``ended_since``: ends recorded before this were looked at by an earlier call. Also returns
    where the next call must look for ends from when this one returned ``limit`` of them (more
    may follow): the time of the last one. None: every end since ``ended_since`` is returned.
    """
    warn = await conn.fetch(_TO_WARN, now, limit)
    over = await conn.fetch(_OVER_QUOTA)
    ended = await conn.fetch(_ENDED, ended_since, limit)
    ends_from: datetime | None = ended[-1]["updated_at"] if len(ended) == limit else None
    due = [_end_notice(row) for row in ended]
    for row in over:
        over_quota_id = notice_id(OVER_QUOTA, row["over_quota_event"])
        if over_quota_id not in row["queued"]:
            data = {
                "usage_bytes": row["over_quota_usage"],
                "quota_bytes": row["over_quota_quota"],
            }
            due.append(_notice(row, over_quota_id, OVER_QUOTA, data))
    for row in warn:
        lead, expires_at = row["lead"], row["expires_at"]
        seconds_left = max(0, int((expires_at - now).total_seconds()))
        due.append(
            _notice(
                row,
                notice_id(EXPIRING, row["id"], expires_at.isoformat(), lead),
                EXPIRING,
                {"lead_seconds": lead, "seconds_left": seconds_left},
            )
        )
    return due, ends_from


async def to_deliver(conn: asyncpg.Connection, now: datetime, limit: int) -> list[Pending]:
    """Queued notifications whose next attempt is due by ``now``, the longest waiting first."""
    rows = await conn.fetch(_TO_DELIVER, now, limit)
    return [
        Pending(
            queued=NotificationQueued(
                resource_id=row["resource_id"],
                notification_id=row["id"],
                notification_type=row["notification_type"],
                url=row["url"],
                secret_generation=row["secret_generation"],
                body=row["body"],
            ),
            attempts=row["attempts"],
        )
        for row in rows
    ]
