"""The ``resources`` read model: one row per resource, the fold of its stream.

Rows are written from ``ResourceState`` (the same fold the workers decide with) and only from
event data, never from the clock, so a rebuild from the log gives the same table.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import asyncpg
import msgspec

from shared.contracts.events import NotifyTargetSet, QuotaExceeded
from shared.contracts.kinds import DeprovisionReason, Limits, ResourceKind, ResourceStatus
from shared.eventlog.errors import AppendRefusedError, platform_errors
from shared.eventlog.schema import DEPLOYS_UNDER_WAY, LIVE_STATUSES
from shared.eventlog.store import EventStore, Precondition, rebuild_folded
from shared.naming import resource_stream
from shared.resources import Due, ResourceState
from shared.stacks.state import DeployProgress

if TYPE_CHECKING:
    from shared.contracts.commands import ProvisionResource
    from shared.contracts.events import Event, RecordedEvent
    from shared.contracts.kinds import Caps

_STREAM_PREFIX = "resource-"
_IDS_PER_QUERY = 10_000
# Below every id a resource gets (uuid4): where a walk by id starts.
_BEFORE_EVERY_ID = UUID(int=0)
_GONE = (ResourceStatus.DELETED, ResourceStatus.EXPIRED, ResourceStatus.NONE)
_limits_decoder: msgspec.json.Decoder[Limits] = msgspec.json.Decoder(Limits)
_encoder = msgspec.json.Encoder()

_COLUMNS = (
    "id, version, status, kind, tier, limits, token_hash, fingerprint, name, created_at,"
    " expires_at, deadline, updated_at, provision_command_id, credentials_sealed, failure_code,"
    " needs_cleanup, deprovision_reason, account_id, claimed_at, quota_exceeded, parent_id,"
    " extensions, export_grace_seconds, delete_at, deploy_status, deploy_revision, deploy_moved_at,"
    " notify_url, notify_generation, notify_leads, notify_from, over_quota_event,"
    " over_quota_usage, over_quota_quota"
)


@functools.cache
def _upsert(first_parameter: int) -> str:
    """The row's upsert, its parameters numbered from ``$first_parameter``."""
    names = _COLUMNS.split(", ")
    values = ", ".join(
        f"${first_parameter + i}" + ("::jsonb" if name == "limits" else "")
        for i, name in enumerate(names)
    )
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in names[1:])
    return (
        f"INSERT INTO resources ({_COLUMNS}) VALUES ({values})"
        f" ON CONFLICT (id) DO UPDATE SET {updates}"
    )


# What a plan's caps count of one holder: its live resources of a kind, and what it made in the
# last day; each count stops at its cap. ``own`` leaves a resource out (a retried create's).
_COUNT_HELD = """
SELECT
  (SELECT count(*) FROM (SELECT 1 FROM resources WHERE {holder} AND kind = {kind}
     AND status IN ({live}){own} LIMIT {live_cap}) AS l) AS live,
  (SELECT count(*) FROM (SELECT 1 FROM resources WHERE {holder}
     AND created_at > now() - interval '1 day'{own} LIMIT {today_cap}) AS t) AS today
"""
_HOLDER_ANONYMOUS = "fingerprint = {} AND account_id IS NULL"
_HOLDER_ACCOUNT = "account_id = {}"


def _count_held(holder: str, numbers: Sequence[str], *, own: str = "") -> str:
    """``_COUNT_HELD`` of ``holder``, its parameters (holder, kind, caps) named by ``numbers``."""
    who, kind, live_cap, today_cap = numbers
    return _COUNT_HELD.format(
        holder=holder.format(who),
        kind=kind,
        live=LIVE_STATUSES,
        own=own,
        live_cap=live_cap,
        today_cap=today_cap,
    )


_COUNT_HELD_ANONYMOUS = _count_held(_HOLDER_ANONYMOUS, ["$1", "$2", "$3", "$4"])
_COUNT_HELD_BY_ACCOUNT = _count_held(_HOLDER_ACCOUNT, ["$1", "$2", "$3", "$4"])


def _caps_check(holder: str) -> str:
    """A create's caps, checked by the append of its intent (docs/adr/0040).

    It goes ahead only while both counts are below their caps. Parameters as
    ``_caps_of`` gives them.
    """
    counts = _count_held(holder, ["${p0}", "${p1}", "${p2}", "${p3}"], own=" AND id <> ${p4}")
    return (
        "SELECT CASE WHEN c.live < ${p2} AND c.today < ${p3} THEN 0"
        " ELSE refuse_append(json_build_object('live', c.live, 'today', c.today)::text) END"
        f" FROM ({counts}) AS c"
    )


_CAPS_CHECK_ANONYMOUS = _caps_check(_HOLDER_ANONYMOUS)
_CAPS_CHECK_BY_ACCOUNT = _caps_check(_HOLDER_ACCOUNT)
#: The caps of a rehearsed append: one, which passes, since no row has a rehearsal's holder.
_REHEARSAL_CAP = 1


def caps_precondition(command: ProvisionResource, caps: Caps) -> Precondition:
    """The append of ``command``'s intent goes ahead only below its holder's ``caps``.

    When it refuses, ``AppendRefusedError.detail`` is ``{"live": n, "today": n}`` (``held``).
    The resource itself is not counted: a retry of a create that failed made it once already.
    """
    holder = command.account_id if command.account_id is not None else command.fingerprint
    return _caps_of(
        holder,
        command.kind,
        command.resource_id,
        live=caps.active_per_kind,
        today=caps.provisions_per_day,
    )


def _caps_of(
    holder: UUID | str, kind: ResourceKind, resource_id: UUID, *, live: int, today: int
) -> Precondition:
    """The caps check of ``holder``, an account (its id) or a network (its fingerprint).

    ``live`` and ``today`` are its caps: live resources of ``kind``, resources made in a day.
    """
    sql = _CAPS_CHECK_BY_ACCOUNT if isinstance(holder, UUID) else _CAPS_CHECK_ANONYMOUS
    return Precondition(sql, (holder, kind.value, live, today, resource_id))


def _rehearsed_appends() -> list[tuple[str, Precondition | None]]:
    """A resource stream's append, once for each precondition it carries, on streams of its own.

    None, and a create's caps of either holder (``_REHEARSAL_CAP``), so that each is written as a
    create's append is (``rehearse_appends``).
    """
    rehearsals: list[tuple[str, Precondition | None]] = [(resource_stream(uuid4()), None)]
    for holder in ("rehearsal", uuid4()):
        resource_id = uuid4()
        caps = _caps_of(
            holder, ResourceKind.REDIS, resource_id, live=_REHEARSAL_CAP, today=_REHEARSAL_CAP
        )
        rehearsals.append((resource_stream(resource_id), caps))
    return rehearsals


async def rehearse_resource_appends(store: EventStore) -> None:
    """Rehearse every variant of a resource stream's append on each of ``store``'s connections.

    A connection's first append otherwise prepares it, and runs it for the first time, while a
    request waits: the first burst after a worker's start met one such connection per create in
    flight (bench/README.md).
    """
    await store.rehearse_appends(_rehearsed_appends)


def held(refused: AppendRefusedError) -> tuple[int, int]:
    """(live resources of the kind, resources made today) a caps precondition refused with."""
    counts = msgspec.json.decode(refused.detail, type=dict[str, int])
    return counts["live"], counts["today"]


# A usage sweep's page. The status is written into the statement, not passed, so that
# resources_active_by_kind (active rows only) serves it in every plan: a page reads about as many
# rows as it returns, however many resources have ended (docs/adr/0058).
#: How old a usage row that still holds the measured figure may get before it is written again.
USAGE_ROW_REFRESH = timedelta(minutes=10)
# Rows are compared before the upsert, not in its ON CONFLICT ... WHERE: that would lock, and so
# write, every row it leaves as it was.
_RECORD_USAGE = """
INSERT INTO resource_usage (resource_id, usage_bytes, measured_at)
SELECT m.id, m.bytes, now() FROM unnest($1::uuid[], $2::bigint[]) AS m(id, bytes)
LEFT JOIN resource_usage u ON u.resource_id = m.id
WHERE u.resource_id IS NULL OR u.usage_bytes <> m.bytes OR u.measured_at <= now() - $3::interval
ON CONFLICT (resource_id) DO UPDATE
SET usage_bytes = EXCLUDED.usage_bytes, measured_at = EXCLUDED.measured_at
"""
ACTIVE_PAGE_SQL = (
    f"SELECT {_COLUMNS} FROM resources"
    f" WHERE kind = $1 AND status = '{ResourceStatus.ACTIVE.value}' AND id > $2"
    " ORDER BY id LIMIT $3"
)
# What may be due ($2: now, $3: now less the orphan grace): a superset of ``ResourceState.due``,
# which decides; each branch is a range of ``resources_kind_status_expires`` over the rows of the
# kind and status, past their time when it is the expiry.
DUE_SQL = f"""
SELECT {_COLUMNS}, count(*) OVER () AS backlog FROM resources WHERE kind = $1 AND (
  (status = '{ResourceStatus.ACTIVE.value}' AND expires_at <= $2)
  OR (status = '{ResourceStatus.SUSPENDED.value}' AND (delete_at IS NULL OR delete_at <= $2))
  OR (status = '{ResourceStatus.PROVISIONING.value}' AND deadline <= $3)
  OR (status = '{ResourceStatus.FAILED.value}' AND needs_cleanup AND updated_at <= $3)
  OR (status = '{ResourceStatus.DELETING.value}' AND updated_at <= $3))
ORDER BY coalesce(delete_at, expires_at, deadline, updated_at), id LIMIT $4
"""
# Live stacks whose deploy is under way and has not moved since $1 (``DeployProgress``).
_STUCK_STACKS = f"""
SELECT id, deploy_revision FROM resources
WHERE kind = '{ResourceKind.STACK.value}' AND status = '{ResourceStatus.ACTIVE.value}'
  AND deploy_status IN ({DEPLOYS_UNDER_WAY}) AND deploy_moved_at <= $1
ORDER BY deploy_moved_at, id
"""


@dataclass(slots=True)
class NotifyTarget:
    """Where a resource's notifications go, folded from its stream (docs/adr/0027, 0037).

    The notifier finds its work from these columns: no target, no row of its concern.
    ``over_quota``: the last ``QuotaExceeded`` recorded while a target was set (its event id,
    usage and quota), which ``resource.over_quota`` reports.
    """

    url: str | None = None
    generation: int | None = None
    leads: list[int] | None = None
    over_quota: tuple[UUID, int, int] | None = None

    def apply(self, event: Event, event_id: UUID) -> None:
        """Fold one event of the resource's stream in."""
        match event:
            case NotifyTargetSet(url=None):
                self.url, self.generation, self.leads = None, None, None
            case NotifyTargetSet():
                self.url = event.url
                self.generation = event.secret_generation
                self.leads = list(event.lead_seconds)
            case QuotaExceeded() if self.url is not None:
                self.over_quota = (event_id, event.usage_bytes, event.quota_bytes)

    def warned_from(self, state: ResourceState) -> datetime | None:
        """When the first ``resource.expiring`` can be due: the expiry less the longest lead.

        Only leads shorter than the resource's life count (a 15-minute resource gets the
        10-minute warning, not the hour's); None when none does, or nothing expires.
        """
        if self.url is None or state.expires_at is None or state.created_at is None:
            return None
        expires_at, created_at = state.expires_at, state.created_at
        fitting = [
            lead for lead in self.leads or () if expires_at - timedelta(seconds=lead) > created_at
        ]
        return expires_at - timedelta(seconds=max(fitting)) if fitting else None


def _row_values(
    state: ResourceState, deploy: DeployProgress | None, notify: NotifyTarget
) -> tuple[Any, ...]:
    return (
        state.resource_id,
        state.version,
        state.status.value,
        state.kind.value if state.kind else None,
        state.tier,
        _encoder.encode(state.limits).decode() if state.limits else None,
        state.token_hash,
        state.fingerprint,
        state.name,
        state.created_at,
        state.expires_at,
        state.deadline,
        state.updated_at,
        state.provision_command_id,
        state.credentials_sealed,
        state.failure_code,
        state.needs_cleanup,
        state.deprovision_reason.value if state.deprovision_reason else None,
        state.account_id,
        state.claimed_at,
        state.quota_exceeded,
        state.parent_id,
        state.extensions,
        state.export_grace_seconds,
        state.delete_at,
        deploy.view.status.value if deploy else None,
        deploy.view.revision if deploy else None,
        deploy.moved_at if deploy else None,
        notify.url,
        notify.generation,
        notify.leads,
        notify.warned_from(state),
        notify.over_quota[0] if notify.over_quota else None,
        notify.over_quota[1] if notify.over_quota else None,
        notify.over_quota[2] if notify.over_quota else None,
    )


def _state_from_row(row: asyncpg.Record) -> ResourceState:
    return ResourceState(
        resource_id=row["id"],
        version=row["version"],
        status=ResourceStatus(row["status"]),
        kind=ResourceKind(row["kind"]) if row["kind"] else None,
        tier=row["tier"],
        limits=_limits_decoder.decode(row["limits"]) if row["limits"] else None,
        token_hash=row["token_hash"],
        fingerprint=row["fingerprint"],
        name=row["name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        deadline=row["deadline"],
        updated_at=row["updated_at"],
        provision_command_id=row["provision_command_id"],
        credentials_sealed=row["credentials_sealed"],
        failure_code=row["failure_code"],
        needs_cleanup=row["needs_cleanup"],
        deprovision_reason=(
            DeprovisionReason(row["deprovision_reason"]) if row["deprovision_reason"] else None
        ),
        account_id=row["account_id"],
        claimed_at=row["claimed_at"],
        quota_exceeded=row["quota_exceeded"],
        parent_id=row["parent_id"],
        extensions=row["extensions"],
        export_grace_seconds=row["export_grace_seconds"],
        delete_at=row["delete_at"],
    )


def _resource_id(stream_id: str) -> UUID:
    return UUID(stream_id.removeprefix(_STREAM_PREFIX))


class _StreamFold:
    """A resource stream folded event by event: its state, notify target and deploy."""

    def __init__(self, resource_id: UUID) -> None:
        self.state = ResourceState(resource_id=resource_id)
        self._deploy = DeployProgress()
        self._notify = NotifyTarget()

    def apply(self, event: Event, event_id: UUID, command_id: UUID, recorded_at: datetime) -> None:
        self.state = self.state.apply(event, command_id=command_id, recorded_at=recorded_at)
        self._deploy.apply(event, recorded_at)
        self._notify.apply(event, event_id)

    def row(self) -> tuple[Any, ...]:
        deploy = self._deploy if self.state.kind is ResourceKind.STACK else None
        return _row_values(self.state, deploy, self._notify)


class ResourceProjection:
    """Keeps ``resources`` equal to the fold of every ``resource-*`` stream.

    A ``shared.eventlog.store.FoldedProjection``: every append writes the row in its own statement.
    """

    def handles(self, stream_id: str) -> bool:
        """Resource streams only."""
        return stream_id.startswith(_STREAM_PREFIX)

    def upsert(
        self, stream_id: str, history: Sequence[RecordedEvent], first_parameter: int
    ) -> tuple[str, Sequence[Any]]:
        """The row of the stream's fold, written by the append that made ``history`` whole."""
        fold = _StreamFold(_resource_id(stream_id))
        for recorded in history:
            fold.apply(recorded.event, recorded.event_id, recorded.command_id, recorded.recorded_at)
        return _upsert(first_parameter), fold.row()


async def rebuild_resources(pool: asyncpg.Pool) -> int:
    """Recompute ``resources`` from the log alone; returns the number of rows written."""
    return await rebuild_folded(pool, ResourceProjection(), "resources", _STREAM_PREFIX)


class ResourceReadModel:
    """Queries the gateway and the workers make against ``resources``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def by_token_hash(self, token_hash: str) -> ResourceState | None:
        """The resource a token belongs to."""
        async with platform_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM resources WHERE token_hash = $1", token_hash
            )
        return _state_from_row(row) if row else None

    async def measured_by_token_hash(
        self, token_hash: str
    ) -> tuple[ResourceState, tuple[int, datetime] | None] | None:
        """The resource a token belongs to, with its last measured usage (``usage_of``) if any.

        One query: what ``GET /resources/{token}`` shows, on the gateway's busiest read.
        """
        columns = ", ".join(f"r.{column}" for column in _COLUMNS.split(", "))
        async with platform_errors():
            row = await self._pool.fetchrow(
                f"SELECT {columns}, u.usage_bytes, u.measured_at FROM resources r"
                " LEFT JOIN resource_usage u ON u.resource_id = r.id WHERE r.token_hash = $1",
                token_hash,
            )
        if row is None:
            return None
        measured = (row["usage_bytes"], row["measured_at"]) if row["measured_at"] else None
        return _state_from_row(row), measured

    async def by_id(self, resource_id: UUID) -> ResourceState | None:
        """One resource by id."""
        async with platform_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM resources WHERE id = $1", resource_id
            )
        return _state_from_row(row) if row else None

    async def of_kind(
        self, kind: ResourceKind, statuses: Collection[ResourceStatus]
    ) -> list[ResourceState]:
        """Every resource of ``kind`` in ``statuses``.

        Active and suspended ones are those whose credentials the backend must hold (a
        suspended one keeps its stopped credentials until its grace ends, docs/adr/0030), what a
        restore puts back.
        """
        async with platform_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM resources WHERE kind = $1 AND status = ANY($2::text[])",
                kind.value,
                [status.value for status in statuses],
            )
        return [_state_from_row(row) for row in rows]

    async def active_page(
        self, kind: ResourceKind, *, after: UUID | None, limit: int
    ) -> list[ResourceState]:
        """The next ``limit`` active resources of ``kind`` by id after ``after``.

        What a usage sweep measures, a page at a time (docs/adr/0049; ``ACTIVE_PAGE_SQL``).
        """
        async with platform_errors():
            rows = await self._pool.fetch(
                ACTIVE_PAGE_SQL,
                kind.value,
                _BEFORE_EVERY_ID if after is None else after,
                limit,
            )
        return [_state_from_row(row) for row in rows]

    async def by_ids(self, resource_ids: set[UUID]) -> list[ResourceState]:
        """The rows of those of ``resource_ids`` that have one, ``_IDS_PER_QUERY`` at a time."""
        ids = list(resource_ids)
        states: list[ResourceState] = []
        async with platform_errors():
            for start in range(0, len(ids), _IDS_PER_QUERY):
                rows = await self._pool.fetch(
                    f"SELECT {_COLUMNS} FROM resources WHERE id = ANY($1::uuid[])",
                    ids[start : start + _IDS_PER_QUERY],
                )
                states.extend(_state_from_row(row) for row in rows)
        return states

    async def of_account(
        self, account_id: UUID, kind: ResourceKind | None = None
    ) -> list[ResourceState]:
        """The account's resources that are not gone, oldest first, optionally of one kind."""
        async with platform_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM resources WHERE account_id = $1"
                " AND ($2::text IS NULL OR kind = $2) AND status <> ALL($3::text[])"
                " ORDER BY created_at, id",
                account_id,
                kind.value if kind else None,
                [s.value for s in _GONE],
            )
        return [_state_from_row(row) for row in rows]

    async def unclaimed_of_fingerprint(self, fingerprint: str) -> list[ResourceState]:
        """Anonymous, live resources made from one client network, oldest first."""
        async with platform_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM resources WHERE fingerprint = $1 AND account_id IS NULL"
                " AND status = $2 ORDER BY created_at, id",
                fingerprint,
                ResourceStatus.ACTIVE.value,
            )
        return [_state_from_row(row) for row in rows]

    async def count_held(
        self,
        kind: ResourceKind,
        *,
        account_id: UUID | None,
        fingerprint: str,
        live_up_to: int,
        today_up_to: int,
    ) -> tuple[int, int]:
        """(live resources of ``kind``, resources made in the last 24 h) of one holder.

        The holder is the account when ``account_id`` is given, else the anonymous resources of
        the client network ``fingerprint``. Each count stops at its ``..._up_to`` (a plan's cap:
        past it the answer is the same), so the cost is bounded by the plan, not by how many
        resources the holder has made; both are index scans (``resources_*_live``, ``*_made``).
        """
        query = _COUNT_HELD_BY_ACCOUNT if account_id is not None else _COUNT_HELD_ANONYMOUS
        holder = account_id if account_id is not None else fingerprint
        async with platform_errors():
            row = await self._pool.fetchrow(query, holder, kind.value, live_up_to, today_up_to)
        if row is None:  # pragma: no cover  (a SELECT of two subqueries always returns a row)
            return 0, 0
        return int(row["live"]), int(row["today"])

    async def due(
        self, kind: ResourceKind, now: datetime, grace: timedelta, limit: int
    ) -> tuple[list[tuple[ResourceState, Due]], int]:
        """Resources of ``kind`` the reaper must act on now, oldest first, and how many in all.

        At most ``limit`` are returned; the count is of every due one (the reaper's backlog).
        ``grace`` is how long a worker may take before its work counts as abandoned.
        """
        async with platform_errors():
            rows = await self._pool.fetch(DUE_SQL, kind.value, now, now - grace, limit)
        found = []
        for row in rows:
            state = _state_from_row(row)
            due = state.due(now, grace)
            if due is not None:
                found.append((state, due))
        return found, int(rows[0]["backlog"]) if rows else 0

    async def stuck_stacks(self, now: datetime, after: timedelta) -> list[tuple[UUID, int]]:
        """Live stacks whose deploy is under way and has not moved for ``after``: id, revision.

        A deploy bounded by the build timeout always ends in ``StackReady`` or ``StackFailed``
        while its worker lives, so one still pending or building past it was interrupted.
        """
        async with platform_errors():
            rows = await self._pool.fetch(_STUCK_STACKS, now - after)
        return [(row["id"], row["deploy_revision"]) for row in rows]

    async def children_of(self, parent_id: UUID) -> list[ResourceState]:
        """The resources that back the stack ``parent_id`` and are not gone, by name."""
        async with platform_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM resources WHERE parent_id = $1"
                " AND status <> ALL($2::text[]) ORDER BY name, id",
                parent_id,
                [s.value for s in _GONE],
            )
        return [_state_from_row(row) for row in rows]

    async def with_rows(self, resource_ids: set[UUID]) -> set[UUID]:
        """Those of ``resource_ids`` that have a row, whatever their status.

        Asked ``_IDS_PER_QUERY`` at a time, so a backend with many tenants makes several
        bounded statements, not one huge one.
        """
        ids = list(resource_ids)
        found: set[UUID] = set()
        async with platform_errors():
            for start in range(0, len(ids), _IDS_PER_QUERY):
                rows = await self._pool.fetch(
                    "SELECT id FROM resources WHERE id = ANY($1::uuid[])",
                    ids[start : start + _IDS_PER_QUERY],
                )
                found.update(row["id"] for row in rows)
        return found

    async def usage_of(self, resource_ids: list[UUID]) -> dict[UUID, tuple[int, datetime]]:
        """The last measured usage (bytes, when) of each of these resources that has one."""
        async with platform_errors():
            rows = await self._pool.fetch(
                "SELECT resource_id, usage_bytes, measured_at FROM resource_usage"
                " WHERE resource_id = ANY($1::uuid[])",
                resource_ids,
            )
        return {row["resource_id"]: (row["usage_bytes"], row["measured_at"]) for row in rows}

    async def record_usage(
        self, measured: dict[UUID, int], *, refresh: timedelta = USAGE_ROW_REFRESH
    ) -> None:
        """Record the measured usage of these resources where it differs from their row.

        A row is written when it is new, its bytes changed, or it was written ``refresh`` ago or
        more; the others are only read. Most tenants' figures stay the same from one sweep to the
        next, and rewriting each row every minute made the sweep the platform's largest writer
        at rest (docs/adr/0062). So ``measured_at`` is when the figure was last found different,
        or confirmed at most ``refresh`` before.
        """
        async with platform_errors():
            await self._pool.execute(
                _RECORD_USAGE, list(measured), list(measured.values()), refresh
            )

    async def all_rows(self) -> list[ResourceState]:
        """Every row, ordered by id (for rebuild comparisons and admin tools)."""
        async with platform_errors():
            rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM resources ORDER BY id")
        return [_state_from_row(row) for row in rows]
