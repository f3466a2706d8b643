"""``GET /resources/{token}/export``: a complete copy of a resource's data (docs/adr/0030).

The worker of the resource's kind dumps it and streams the chunks over NATS under this
gateway's credit (``Bus.request_stream``); they go out as the HTTP body as they come, so
neither side holds more than a window of chunks whatever the size. Works while the resource
is live and, after expiry, while it is suspended within its export grace.

Exports count against the plan (``export`` in ``plans.yaml``): ``per_hour`` started per resource
in any hour (the provision rate limit's sliding log, over an hour) and ``concurrent`` at once
(a counter in Redis); past either, 429 with ``Retry-After``. Both fail open when Redis is down,
as admission does.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Final

import structlog
from litestar import Request, get
from litestar.params import QueryParameter
from litestar.response import Stream
from redis.exceptions import RedisError

from gateway.accounts.auth import Scope
from gateway.admission.ratelimit import RateLimiter
from gateway.context import GatewayContext
from gateway.http.cleanup import StreamEnd
from gateway.http.middleware import request_id_of
from gateway.resources.routes import TokenOrIdParam, resource_or_suspended
from shared.contracts.commands import ExportResource
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import EXPORT_FORMATS, ResourceKind, export_format
from shared.contracts.subjects import ENDPOINTS

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from shared.plans import ExportLimits
    from shared.resources import ResourceState

log = structlog.get_logger("gateway.export")

_HOUR_MS: Final = 3_600_000
#: A running-exports counter outlives a gateway that died mid-export by at most this.
_RUNNING_TTL_MS: Final = _HOUR_MS
#: As admission's limiter: a Redis slower than this is treated as down, and the limit fails open.
_REDIS_TIMEOUT_S: Final = 0.1


@functools.cache
def _hourly(redis: Redis) -> RateLimiter:
    """The per-hour sliding log of this replica (one per Redis client, like the provision one)."""
    return RateLimiter(redis, window_ms=_HOUR_MS)


def formats_text(kind: ResourceKind) -> str:
    """``custom (default), sql``: how a 400 names a kind's formats."""
    names = [fmt.name for fmt in EXPORT_FORMATS.get(kind, ())]
    return ", ".join([f"{names[0]} (default)", *names[1:]]) if names else "none"


def _named(children: list[ResourceState]) -> str:
    named = [
        f"{child.name or child.resource_id} ({child.kind.value if child.kind else '?'})"
        for child in children
    ]
    return ", ".join(named) or "none"


async def _export_target(
    ctx: GatewayContext, state: ResourceState, backing: str | None
) -> ResourceState:
    """What the request exports: the resource itself, or one of a stack's backing resources.

    A stack is exported one backing resource at a time, named by ``?resource=`` (its name in
    the manifest, or its id), with the stack's own token: the backing resources have none.
    """
    if state.kind is not ResourceKind.STACK:
        if backing is not None:
            msg = "`resource` names one of a stack's backing resources; this is not a stack."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        return state
    children = await ctx.resources.children_of(state.resource_id)
    if backing is None:
        msg = (
            "A stack is exported one backing resource at a time: add ?resource=<name> for one"
            f" of {_named(children)}."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    for child in children:
        if backing in {child.name, str(child.resource_id)}:
            return child
    msg = f"This stack has no backing resource {backing!r}; it has {_named(children)}."
    raise SpinupError(ErrorCode.NOT_FOUND, msg)


async def _start_running(ctx: GatewayContext, key: str, limits: ExportLimits) -> bool:
    """Count one more running export of the resource; False when it already has enough."""
    try:
        async with asyncio.timeout(_REDIS_TIMEOUT_S), ctx.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, _RUNNING_TTL_MS)
            running, _ = await pipe.execute()
    except (RedisError, OSError):
        log.warning("gateway.export.limit_unavailable")
        return True
    if int(running) > limits.concurrent:
        await _stop_running(ctx, key)
        return False
    return True


async def _stop_running(ctx: GatewayContext, key: str) -> None:
    try:
        async with asyncio.timeout(_REDIS_TIMEOUT_S):
            await ctx.redis.decr(key)
    except (RedisError, OSError):
        log.warning("gateway.export.limit_unavailable")


async def _spend_hourly(ctx: GatewayContext, state: ResourceState, limits: ExportLimits) -> None:
    wait_ms = await _hourly(ctx.redis).spend(f"export:{state.resource_id}", limits.per_hour)
    if wait_ms:
        wait_s = max(1, -(-wait_ms // 1000))
        msg = (
            f"This resource was exported {limits.per_hour} times in the last hour (the"
            f" {state.tier} plan's export.per_hour); try again in {wait_s} s."
        )
        raise SpinupError(ErrorCode.RATE_LIMITED, msg, retryable=True, retry_after_s=wait_s)


@get(
    "/resources/{token:str}/export",
    summary="Export a resource's data",
    description="Streams a complete copy of the data in a format its own tools restore:"
    " Postgres `custom` (pg_dump -Fc, for pg_restore; default) or `sql` (plain SQL, for psql);"
    " Redis `jsonl` (one JSON line per key: type, TTL, base64 value); MongoDB `tar`"
    " (mongoexport JSON per collection, for mongoimport); S3 `tar` (the objects and their"
    " metadata); NATS `jsonl` (each stream's config and messages); webhook `jsonl` (the"
    " captured requests). `?format=` picks one (400 names the kind's formats). A stack is"
    " exported one backing resource at a time with the stack's token: `?resource=` names it"
    " (400 without, 404 for a name it lacks; both list them). Works after expiry too, while"
    " the data is kept for the plan's lifetime.export_grace_seconds (GET /plans); then 410."
    " Counted per resource: the plan's export.per_hour and export.concurrent, past either 429"
    " with Retry-After.",
    tags=["resources"],
    operation_id="export_resource",
)
async def export_resource(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    token: str = TokenOrIdParam,
    fmt: Annotated[
        str | None,
        QueryParameter(
            name="format", description="The export format; the kind's first one when left out."
        ),
    ] = None,
    backing: Annotated[
        str | None,
        QueryParameter(
            name="resource",
            description="For a stack: the backing resource to export (its name in the manifest,"
            " e.g. `db`, or its id).",
        ),
    ] = None,
) -> Stream:
    """``GET /resources/{token}/export``."""
    state = await _export_target(
        ctx, await resource_or_suspended(request, ctx, token, Scope.READ), backing
    )
    kind = state.kind
    if kind is None or kind not in EXPORT_FORMATS:
        msg = "A resource of this kind cannot be exported."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    chosen = export_format(kind, fmt)
    if chosen is None:
        msg = f"format {fmt!r} is not one of the {kind.value} export formats: {formats_text(kind)}."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    tier = ctx.plans.tiers.get(state.tier or "", ctx.plans.anonymous)
    running_key = f"export:running:{state.resource_id}"
    if not await _start_running(ctx, running_key, tier.export):
        msg = (
            f"An export of this resource is already running (the {state.tier} plan allows"
            f" {tier.export.concurrent} at a time); wait for it to finish."
        )
        raise SpinupError(ErrorCode.RATE_LIMITED, msg, retryable=True, retry_after_s=10)
    try:
        await _spend_hourly(ctx, state, tier.export)
        endpoint = ENDPOINTS[kind].export
        started, chunks = await ctx.bus.request_stream(
            endpoint,
            lambda subject, window: ExportResource(
                command_id=uuid.uuid4(),
                correlation_id=request_id_of(request.scope),
                deadline=time.time() + endpoint.timeout,
                resource_id=state.resource_id,
                format=chosen.name,
                stream_subject=subject,
                window=window,
            ),
        )
        # The first chunk before the answer's status: a dump that cannot start (a missing
        # database, a locked table) is still an error response, not a cut-off 200.
        first = await anext(chunks, b"")
    except BaseException:
        await _stop_running(ctx, running_key)
        raise
    filename = f"{_safe_name(state)}.{chosen.extension}"
    log.info(
        "gateway.export.started",
        resource_id=str(started.resource_id),
        format=chosen.name,
    )
    return _ExportStream(ctx, running_key, first, chunks).response(
        media_type=chosen.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


class _ExportStream:
    """One running export's body, and its end, which gives the slot back once (``StreamEnd``).

    The client may hang up before the first piece, or while the worker's next one is awaited:
    either way the worker's stream is stopped and the slot given back, or the resource answers
    "already running" until the slot's TTL, an hour.
    """

    def __init__(
        self, ctx: GatewayContext, running_key: str, first: bytes, chunks: AsyncIterator[bytes]
    ) -> None:
        self._ctx = ctx
        self._running_key = running_key
        self._first = first
        self._chunks = chunks
        self._sent = 0
        self.end = StreamEnd(self._end)

    def response(self, *, media_type: str, headers: dict[str, str]) -> Stream:
        """The streamed response: the body, and the end as its background task."""
        return Stream(
            self.body(), background=self.end.background, media_type=media_type, headers=headers
        )

    async def body(self) -> AsyncIterator[bytes]:
        """The first piece, then the worker's until its stream ends."""
        try:
            if self._first:
                self._sent += len(self._first)
                yield self._first
            async for chunk in self._chunks:
                self._sent += len(chunk)
                yield chunk
        finally:
            await self.end.run()

    async def _end(self) -> None:
        """Stop the worker's stream (if still open), give the slot back, say so."""
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()
        await _stop_running(self._ctx, self._running_key)
        log.info("gateway.export.ended", bytes=self._sent)


def _safe_name(state: ResourceState) -> str:
    """The resource's name for a file name: letters, digits, ``-_.`` only; else its id."""
    name = "".join(c for c in (state.name or "") if c.isascii() and (c.isalnum() or c in "-_."))
    return name.strip(".") or str(state.resource_id)


EXPORT_ROUTES = [export_resource]
