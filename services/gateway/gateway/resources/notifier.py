"""The notifier: from the event log to signed notifications at each resource's notify URL.

Why it lives in the gateway (docs/adr/0027): a notification is signed with a secret derived
from the token key and is queued and recorded by appends to the platform log; the gateway
already holds both, and httpx. The reaper holds no secret and no database connection on
purpose, and stays that way.

One gateway process at a time notifies (a session advisory lock, like the relay); the others
wait on the lock and take over when its session ends, however it ends. The leader keeps nothing
it cannot lose: every pass asks the platform database what is due (``gateway.resources.outbox``,
docs/adr/0037), and the outbox is the log.

- what is due is queued as ``NotificationQueued`` in the resource's ``notification-<id>``
  stream (ids derive from what caused it, so a new leader never queues twice):
  ``resource.expiring`` at each of the target's lead times before ``expires_at`` (the shortest
  one due, once per expiry), ``resource.over_quota`` for the last ``QuotaExceeded`` while a
  target is set, and ``resource.expired`` / ``resource.deleted`` once the resource ended (or
  was suspended for its export grace);
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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import httpx
import msgspec
import structlog

from gateway.resources.lifetime import notify_secret
from gateway.resources.outbound import TIMEOUT, UnsafeTargetError, post
from gateway.resources.outbox import to_deliver, to_queue
from shared.contracts.events import (
    NotificationAttemptFailed,
    NotificationDelivered,
    NotificationEvent,
    NotificationQueued,
)
from shared.eventlog.errors import ConcurrencyConflictError
from shared.eventlog.schema import NOTIFIER_LOCK
from shared.naming import notification_stream
from shared.postgres.errors import CONNECTION_ERRORS
from shared.postgres.pool import CLOSE_TIMEOUT_S
from shared.runtime import raise_if_cancelled

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.resources.outbound import Networks
    from gateway.resources.outbox import Notice, Pending
    from shared.eventlog.store import EventStore

log = structlog.get_logger("gateway.notifier")
#: A new leader looks this far back for ends not yet notified: longer than any outage the
#: platform is run through, and a bounded first pass whatever the age of the log.
ENDS_LOOKED_BACK = timedelta(days=7)
#: An append is stamped with its appender's clock before it commits; a pass looks at ends this
#: much older than the previous pass began, so one committed late is not missed (appends time
#: out long before this).
APPEND_OVERLAP = timedelta(minutes=5)
_BATCH = 512
_APPEND_ATTEMPTS = 5
_DELIVERIES_AT_ONCE = 16
_encoder = msgspec.json.Encoder()
_INTERRUPTIONS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


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
        self._in_flight: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(_DELIVERIES_AT_ONCE)

    async def run(self) -> None:
        """Notify until cancelled, surviving database outages."""
        while True:
            try:
                await self._run_while_leader()
            except _INTERRUPTIONS as exc:
                raise_if_cancelled(exc)
                log.warning("notifier.interrupted", error=type(exc).__name__)
            await asyncio.sleep(self._poll_s)

    async def _run_while_leader(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", NOTIFIER_LOCK)
            log.info("notifier.started")
            ended_since = datetime.now(UTC) - ENDS_LOOKED_BACK
            async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
                while True:
                    now = datetime.now(UTC)
                    # On the lock's own session: a pass that fails tells this process it may
                    # no longer be the leader.
                    notices, ends_from = await to_queue(conn, now, ended_since, _BATCH)
                    for notice in notices:
                        await self.queue(notice, now)
                    # Ends recorded since this pass began are seen by the next one; an append
                    # stamped before it but committed after it, by the overlap. A full batch
                    # of ends goes on from its last.
                    ended_since = ends_from or now - APPEND_OVERLAP
                    for pending in await to_deliver(conn, now, _BATCH):
                        self._start_delivery(pending, client)
                    await asyncio.sleep(self._poll_s)
        finally:
            for task in self._in_flight.values():
                task.cancel()
            self._in_flight.clear()
            with contextlib.suppress(Exception):
                await conn.close(timeout=CLOSE_TIMEOUT_S)

    # -- queueing ----------------------------------------------------------------------------

    async def queue(self, notice: Notice, now: datetime) -> None:
        """Queue ``notice``: its ``NotificationQueued``, with the body it is sent with."""
        body = {
            "type": notice.notification_type,
            "timestamp": now.isoformat(),
            "data": {
                "resource_id": str(notice.resource_id),
                "kind": notice.kind.value if notice.kind else None,
                "name": notice.name,
                "expires_at": notice.expires_at.isoformat() if notice.expires_at else None,
                **notice.data,
            },
        }
        queued = NotificationQueued(
            resource_id=notice.resource_id,
            notification_id=notice.notification_id,
            notification_type=notice.notification_type,
            url=notice.url,
            secret_generation=notice.secret_generation,
            body=_encoder.encode(body).decode(),
        )
        await self._append(queued)

    async def _append(self, event: NotificationEvent) -> None:
        """Append ``event`` to its resource's outbox, after whatever is there now.

        Two appends to one outbox at once (this leader's queueing and a delivery's outcome, or
        a leader that lost its session and has not noticed yet) conflict; the loser reads the
        outbox again and appends after it. A notification already queued is not queued again.
        """
        stream = notification_stream(event.resource_id)
        for _ in range(_APPEND_ATTEMPTS):
            history = await self._store.load(stream)
            if isinstance(event, NotificationQueued) and any(
                isinstance(e.event, NotificationQueued)
                and e.event.notification_id == event.notification_id
                for e in history
            ):
                return
            with contextlib.suppress(ConcurrencyConflictError):
                await self._store.append(
                    stream,
                    len(history),
                    [event],
                    command_id=uuid.uuid4(),
                    correlation_id="notifier",
                    prior=history,
                )
                return
        log.warning("notifier.append.contended", resource_id=str(event.resource_id))

    # -- delivery ----------------------------------------------------------------------------

    def _start_delivery(self, pending: Pending, client: httpx.AsyncClient) -> None:
        notification_id = pending.queued.notification_id
        if notification_id in self._in_flight:
            return
        task = asyncio.create_task(self._deliver(pending, client))
        self._in_flight[notification_id] = task
        task.add_done_callback(functools.partial(self._finished, notification_id))

    def _finished(self, notification_id: uuid.UUID, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(notification_id, None)

    async def _deliver(self, pending: Pending, client: httpx.AsyncClient) -> None:
        queued = pending.queued
        attempt = pending.attempts + 1
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
            await self._append(outcome)
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
