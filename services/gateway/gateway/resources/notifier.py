"""The notifier: from the event log to signed notifications at each resource's notify URL.

Why it lives in the gateway (docs/adr/0027): a notification is signed with a secret derived
from the token key and is queued and recorded by appends to the platform log; the gateway
already holds both, and httpx. The reaper holds no secret and no database connection on
purpose, and stays that way.

One gateway process at a time notifies (a session advisory lock, like the relay); the others
wait on the lock and take over when its session ends, however it ends. The leader folds the
whole log from the start (the outbox is the log: nothing else to recover), then follows it:

- what is due is queued as ``NotificationQueued`` in the resource's ``notification-<id>``
  stream (ids derive from what caused it, so a new leader never queues twice):
  ``resource.expiring`` at each of the target's lead times before ``expires_at`` (the shortest
  one due, once per expiry), ``resource.over_quota`` per ``QuotaExceeded``, and
  ``resource.expired`` / ``resource.deleted`` once ``ResourceDeprovisioned`` is in the log;
- each queued notification is posted (``gateway.resources.outbound``: public addresses only,
  no redirects, a timeout, a size cap) from a task of its own under a bound, so a slow receiver
  holds nothing else up; each attempt's outcome is appended (``NotificationDelivered``, or
  ``NotificationAttemptFailed`` with the next try after ``SPINUP_NOTIFY_RETRY_S``).

Delivery is at least once: a leader that dies after a receiver answered but before the outcome
was recorded sends it again, with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import msgspec
import structlog

from gateway.resources.lifetime import DELETED, EXPIRED, EXPIRING, OVER_QUOTA, notify_secret
from gateway.resources.outbound import TIMEOUT, UnsafeTargetError, post
from shared.contracts.events import (
    NotificationAttemptFailed,
    NotificationDelivered,
    NotificationEvent,
    NotificationEventBase,
    NotificationQueued,
    NotifyTargetSet,
    QuotaExceeded,
    RecordedEvent,
    ResourceDeprovisioned,
    ResourceEventBase,
)
from shared.contracts.kinds import DeprovisionReason, ResourceStatus
from shared.eventlog.errors import ConcurrencyConflictError
from shared.eventlog.schema import NOTIFIER_LOCK
from shared.eventlog.store import read_committed_after
from shared.naming import notification_stream
from shared.pgerrors import CONNECTION_ERRORS
from shared.resources import ResourceState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.resources.outbound import Networks
    from shared.eventlog.store import EventStore

log = structlog.get_logger("gateway.notifier")
NOTIFY_NAMESPACE = uuid.UUID("0b7f6c1e-5a2d-4f0e-9c3b-27d1e8a4f623")
_BATCH = 512
_DELIVERIES_AT_ONCE = 16
_encoder = msgspec.json.Encoder()
_INTERRUPTIONS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


@dataclass(slots=True)
class _Outgoing:
    """One queued notification and how its delivery stands."""

    queued: NotificationQueued
    next_at: datetime
    attempts: int = 0
    done: bool = False


@dataclass(slots=True)
class _Watched:
    """What the notifier knows of one resource: its fold, its target and its outbox."""

    state: ResourceState
    target: NotifyTargetSet | None = None
    outbox_version: int = 0
    outgoing: dict[uuid.UUID, _Outgoing] = field(default_factory=dict)
    #: ``QuotaExceeded`` events not yet turned into a notification.
    over_quota: list[RecordedEvent] = field(default_factory=list)
    ended: ResourceDeprovisioned | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def settled(self) -> bool:
        """Gone, and nothing left to send: the notifier can forget it."""
        return self.state.is_gone and all(o.done for o in self.outgoing.values())


class Notifier:
    """Queues and delivers every resource's notifications while it holds the lock."""

    def __init__(
        self,
        dsn: str,
        store: EventStore,
        *,
        token_key: bytes,
        allowed: Networks,
        retry_s: Sequence[float],
        poll_s: float,
    ) -> None:
        self._dsn = dsn
        self._store = store
        self._token_key = token_key
        self._allowed = allowed
        self._retry_s = tuple(retry_s)
        self._poll_s = poll_s
        self._watched: dict[uuid.UUID, _Watched] = {}
        self._in_flight: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(_DELIVERIES_AT_ONCE)

    async def run(self) -> None:
        """Notify until cancelled, surviving database outages."""
        while True:
            try:
                await self._run_while_leader()
            except _INTERRUPTIONS as exc:
                log.warning("notifier.interrupted", error=type(exc).__name__)
            await asyncio.sleep(self._poll_s)

    async def _run_while_leader(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", NOTIFIER_LOCK)
            log.info("notifier.started")
            self._watched = {}
            cursor: tuple[int, int] = (0, 0)
            async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
                while True:
                    while True:
                        batch = await read_committed_after(conn, cursor, _BATCH)
                        for position, recorded in batch:
                            self._apply(recorded)
                            cursor = position
                        if len(batch) < _BATCH:
                            break
                    now = datetime.now(UTC)
                    await self._queue_due(now)
                    self._deliver_due(now, client)
                    self._forget_settled()
                    await asyncio.sleep(self._poll_s)
        finally:
            for task in self._in_flight.values():
                task.cancel()
            self._in_flight.clear()
            with contextlib.suppress(Exception):
                await conn.close()

    # -- the fold ----------------------------------------------------------------------------

    def _apply(self, recorded: RecordedEvent) -> None:
        """Fold one event in; versions already seen (this leader's own appends) are skipped."""
        event = recorded.event
        if isinstance(event, ResourceEventBase):
            watched = self._watched.get(event.resource_id)
            if watched is None:
                watched = _Watched(ResourceState(resource_id=event.resource_id))
                self._watched[event.resource_id] = watched
            if recorded.version != watched.state.version + 1:
                return
            watched.state = watched.state.apply(
                event, command_id=recorded.command_id, recorded_at=recorded.recorded_at
            )
            match event:
                case NotifyTargetSet():
                    watched.target = event if event.url is not None else None
                case QuotaExceeded() if watched.target is not None:
                    watched.over_quota.append(recorded)
                case ResourceDeprovisioned():
                    watched.ended = event
            if watched.state.is_gone and watched.target is None and not watched.outgoing:
                del self._watched[event.resource_id]
        elif isinstance(event, NotificationEventBase):
            found = self._watched.get(event.resource_id)
            if found is not None and recorded.version == found.outbox_version + 1:
                found.outbox_version = recorded.version
                _apply_outgoing(found, event, recorded.recorded_at)

    def _forget_settled(self) -> None:
        for resource_id in [k for k, w in self._watched.items() if w.settled and w.ended]:
            if not _wants_end_notice(self._watched[resource_id]):
                del self._watched[resource_id]

    # -- queueing ----------------------------------------------------------------------------

    async def _queue_due(self, now: datetime) -> None:
        for watched in list(self._watched.values()):
            target = watched.target
            if target is None or target.url is None:
                continue
            due = _due(watched, now)
            if due:
                await self._queue(watched, target, due, now)

    async def _queue(
        self,
        watched: _Watched,
        target: NotifyTargetSet,
        due: list[tuple[uuid.UUID, str, dict[str, Any]]],
        now: datetime,
    ) -> None:
        state = watched.state
        events: list[NotificationEvent] = []
        for notification_id, kind_of_notice, data in due:
            body = {
                "type": kind_of_notice,
                "timestamp": now.isoformat(),
                "data": {
                    "resource_id": str(state.resource_id),
                    "kind": state.kind.value if state.kind else None,
                    "name": state.name,
                    "expires_at": state.expires_at.isoformat() if state.expires_at else None,
                    **data,
                },
            }
            events.append(
                NotificationQueued(
                    resource_id=state.resource_id,
                    notification_id=notification_id,
                    notification_type=kind_of_notice,
                    url=target.url or "",
                    secret_generation=target.secret_generation,
                    body=_encoder.encode(body).decode(),
                )
            )
        if await self._append(watched, events):
            watched.over_quota.clear()

    async def _append(self, watched: _Watched, events: Sequence[NotificationEvent]) -> bool:
        """Append to the resource's outbox after what this leader has folded of it.

        False when another leader had written meanwhile: its writes are folded in instead, and
        the next pass decides again.
        """
        resource_id = watched.state.resource_id
        async with watched.lock:
            try:
                recorded = await self._store.append(
                    notification_stream(resource_id),
                    watched.outbox_version,
                    list(events),
                    command_id=uuid.uuid4(),
                    correlation_id="notifier",
                )
            except ConcurrencyConflictError:
                # Another leader wrote meanwhile: read its writes, decide again next pass.
                for entry in await self._store.load(notification_stream(resource_id)):
                    if entry.version == watched.outbox_version + 1 and isinstance(
                        entry.event, NotificationEventBase
                    ):
                        watched.outbox_version = entry.version
                        _apply_outgoing(watched, entry.event, entry.recorded_at)
                return False
            for entry in recorded:
                watched.outbox_version = entry.version
                if isinstance(entry.event, NotificationEventBase):
                    _apply_outgoing(watched, entry.event, entry.recorded_at)
            return True

    # -- delivery ----------------------------------------------------------------------------

    def _deliver_due(self, now: datetime, client: httpx.AsyncClient) -> None:
        for watched in self._watched.values():
            for notification_id, outgoing in watched.outgoing.items():
                if outgoing.done or outgoing.next_at > now or notification_id in self._in_flight:
                    continue
                task = asyncio.create_task(self._deliver(watched, outgoing, client))
                self._in_flight[notification_id] = task
                task.add_done_callback(functools.partial(self._finished, notification_id))

    def _finished(self, notification_id: uuid.UUID, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(notification_id, None)

    async def _deliver(
        self, watched: _Watched, outgoing: _Outgoing, client: httpx.AsyncClient
    ) -> None:
        queued = outgoing.queued
        attempt = outgoing.attempts + 1
        async with self._slots:
            headers = self.signed_headers(queued, int(time.time()))
            error: str | None = None
            status = 0
            try:
                status = await post(
                    client, queued.url, queued.body.encode(), headers, self._allowed
                )
            except UnsafeTargetError as exc:
                error = str(exc)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: the request did not complete"
            if error is None and not 200 <= status < 300:  # noqa: PLR2004  (HTTP success)
                error = f"HTTP {status}" + (
                    " (redirects are not followed)" if 300 <= status < 400 else ""  # noqa: PLR2004
                )
        outcome: NotificationEvent
        if error is None:
            outcome = NotificationDelivered(
                resource_id=queued.resource_id,
                notification_id=queued.notification_id,
                attempt=attempt,
                status_code=status,
            )
        else:
            wait = self._retry_s[attempt - 1] if attempt <= len(self._retry_s) else None
            outcome = NotificationAttemptFailed(
                resource_id=queued.resource_id,
                notification_id=queued.notification_id,
                attempt=attempt,
                error=error[:300],
                retry_at=datetime.now(UTC) + timedelta(seconds=wait) if wait else None,
            )
        log.info(
            "notifier.attempt",
            resource_id=str(queued.resource_id),
            type=queued.notification_type,
            attempt=attempt,
            error=error,
        )
        try:
            await self._append(watched, [outcome])
        except Exception:  # noqa: BLE001  (recorded next pass: the attempt is made again)
            log.warning("notifier.outcome.unrecorded", resource_id=str(queued.resource_id))

    def signed_headers(self, queued: NotificationQueued, timestamp: int) -> dict[str, str]:
        """Standard Webhooks headers: HMAC-SHA256 of ``id.timestamp.body`` with the secret."""
        message_id = f"msg_{queued.notification_id.hex}"
        secret = notify_secret(self._token_key, queued.resource_id, queued.secret_generation)
        key = base64.b64decode(secret.removeprefix("whsec_"))
        signed = f"{message_id}.{timestamp}.{queued.body}".encode()
        signature = base64.b64encode(hmac.new(key, signed, "sha256").digest()).decode()
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{signature}",
            "user-agent": "Spinup-Notifier/1",
        }


def _apply_outgoing(watched: _Watched, event: NotificationEventBase, at: datetime) -> None:
    match event:
        case NotificationQueued():
            watched.outgoing[event.notification_id] = _Outgoing(queued=event, next_at=at)
        case NotificationDelivered():
            if (outgoing := watched.outgoing.get(event.notification_id)) is not None:
                outgoing.attempts = event.attempt
                outgoing.done = True
        case NotificationAttemptFailed():
            if (outgoing := watched.outgoing.get(event.notification_id)) is not None:
                outgoing.attempts = event.attempt
                outgoing.done = event.retry_at is None
                outgoing.next_at = event.retry_at or outgoing.next_at


def _notice_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NOTIFY_NAMESPACE, "|".join(str(part) for part in parts))


def _end_notice(watched: _Watched) -> tuple[uuid.UUID, str, dict[str, Any]] | None:
    state = watched.state
    if watched.ended is None and state.status is ResourceStatus.SUSPENDED and state.delete_at:
        # Expired with an export grace (ADR 0030): said once, at suspension, with the deadline;
        # the deletion at the end of the grace has the same notice id, so it is not said again.
        return (
            _notice_id(EXPIRED, state.resource_id),
            EXPIRED,
            {
                "reason": DeprovisionReason.EXPIRED.value,
                "export_until": state.delete_at.isoformat(),
                "export": "GET /resources/{token}/export",
            },
        )
    if watched.ended is None:
        return None
    expired = watched.ended.reason is DeprovisionReason.EXPIRED
    kind_of_notice = EXPIRED if expired else DELETED
    return (
        _notice_id(kind_of_notice, watched.state.resource_id),
        kind_of_notice,
        {"reason": watched.ended.reason.value},
    )


def _wants_end_notice(watched: _Watched) -> bool:
    notice = _end_notice(watched)
    return watched.target is not None and notice is not None and notice[0] not in watched.outgoing


def _due(watched: _Watched, now: datetime) -> list[tuple[uuid.UUID, str, dict[str, Any]]]:
    """The notifications ``watched`` should have queued by ``now`` and has not."""
    due: list[tuple[uuid.UUID, str, dict[str, Any]]] = []
    for recorded in watched.over_quota:
        event = recorded.event
        if isinstance(event, QuotaExceeded):
            notice_id = _notice_id(OVER_QUOTA, recorded.event_id)
            if notice_id not in watched.outgoing:
                data = {"usage_bytes": event.usage_bytes, "quota_bytes": event.quota_bytes}
                due.append((notice_id, OVER_QUOTA, data))
    end = _end_notice(watched)
    if end is not None and end[0] not in watched.outgoing:
        due.append(end)
    expiring = _expiring(watched, now)
    if expiring is not None:
        due.append(expiring)
    return due


def _expiring(watched: _Watched, now: datetime) -> tuple[uuid.UUID, str, dict[str, Any]] | None:
    """``resource.expiring`` for the shortest lead now due, unless a shorter one was sent.

    A lead counts only if the resource lives longer than it (a 15-minute resource gets the
    10-minute warning, not the hour's); after an extension the leads count again.
    """
    state, target = watched.state, watched.target
    if (
        target is None
        or state.status is not ResourceStatus.ACTIVE
        or state.expires_at is None
        or state.created_at is None
        or now >= state.expires_at
    ):
        return None
    expires_at = state.expires_at
    leads = [
        lead
        for lead in target.lead_seconds
        if expires_at - timedelta(seconds=lead) > state.created_at
    ]
    ids = {
        lead: _notice_id(EXPIRING, state.resource_id, expires_at.isoformat(), lead)
        for lead in leads
    }
    sent = [lead for lead in leads if ids[lead] in watched.outgoing]
    due = [
        lead for lead in leads if lead not in sent and expires_at - timedelta(seconds=lead) <= now
    ]
    if not due:
        return None
    lead = min(due)
    if any(earlier < lead for earlier in sent):
        return None
    seconds_left = max(0, int((expires_at - now).total_seconds()))
    return ids[lead], EXPIRING, {"lead_seconds": lead, "seconds_left": seconds_left}
