"""Extend, notify target, and notifications as Server-Sent Events (docs/adr/0027).

``POST /resources/{token}/extend``, ``PUT /resources/{token}/notify``,
``GET /resources/{token}/events``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from litestar import Request, get, post, put
from litestar.response import ServerSentEvent, ServerSentEventMessage

from gateway.accounts.auth import Scope
from gateway.context import GatewayContext
from gateway.http.middleware import request_id_of
from gateway.http.schemas import (
    ExtendResource,
    NotifyTarget,
    NotifyTargetInfo,
    ResourceExtendedInfo,
)
from gateway.resources.lifetime import (
    DELETED,
    EXPIRED,
    NOTIFICATION_TYPES,
    append_decided,
    duration,
    set_notify_target,
)
from gateway.resources.routes import TokenOrIdParam, resource_for
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.events import NotificationQueued, ResourceExtended
from shared.contracts.kinds import ResourceStatus
from shared.crypto.tokens import hash_token, looks_like_token
from shared.naming import notification_stream
from shared.resources import ResourceState

if TYPE_CHECKING:
    from shared.plans import Lifetime, Tier

#: How often an open ``/events`` stream looks for new notifications, and keeps itself open.
_EVENTS_POLL_S = 1.0
_EVENTS_KEEPALIVE_S = 15.0
#: Set when the process is asked to stop: every open ``/events`` stream ends at its next poll
#: (uvicorn waits for open responses before it stops, and these never end by themselves).
_closing = asyncio.Event()


def end_event_streams() -> None:
    """End every open ``/events`` stream of this process (a stop was asked for)."""
    _closing.set()


_CLAIM_ACTION = (
    "Claim the resource into an account to keep it with no expiry: POST /auth/register, then"
    " open the claim_url field of its create response (GET /llms.txt, Claim)."
)


@put(
    "/resources/{token:str}/notify",
    summary="Set where notifications about a resource go",
    description="Signed notifications (Standard Webhooks: webhook-id, webhook-timestamp,"
    " webhook-signature) go to `url`: resource.expiring (the plan's lifetime."
    "notify_lead_seconds before expiry), resource.over_quota, resource.expired,"
    " resource.deleted. The answer holds a new `secret` (whsec_...), shown once. The URL must"
    " reach the public internet; redirects are not followed. `url` null stops them.",
    tags=["resources"],
)
async def set_notify(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    data: NotifyTarget,
    token: str = TokenOrIdParam,
) -> NotifyTargetInfo:
    """``PUT /resources/{token}/notify``."""
    state = await resource_for(request, ctx, token, Scope.PROVISION)
    event, secret = await set_notify_target(
        ctx, state.resource_id, data.url, request_id_of(request.scope)
    )
    return NotifyTargetInfo(
        id=state.resource_id,
        url=event.url,
        secret=secret,
        types=NOTIFICATION_TYPES if event.url else [],
        expiring_lead_seconds=event.lead_seconds,
    )


def _not_extendable(state: ResourceState, tier: Tier | None) -> Lifetime:
    """The plan's lifetime rules for extending ``state``, or why it cannot be extended."""
    if state.parent_id is not None:
        msg = "This resource backs a stack: extend the stack (its token); its resources follow."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    if state.expires_at is None:
        msg = "This resource is permanent: there is nothing to extend."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    if tier is None or tier.lifetime is None:
        msg = f"Resources of the {state.tier} plan cannot be extended."
        raise SpinupError(ErrorCode.PLAN_LIMIT_REACHED, msg, agent_action=_CLAIM_ACTION)
    return tier.lifetime


@post(
    "/resources/{token:str}/extend",
    status_code=200,
    summary="Extend a temporary resource",
    description="Adds `ttl_seconds` to `expires_at`, up to the plan's total lifetime from"
    " creation and its number of extensions (GET /plans: lifetime); past either, a 402 whose"
    " agent_action says to claim the resource. A stack's backing resources are extended with it.",
    tags=["resources"],
)
async def extend_resource(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    data: ExtendResource,
    token: str = TokenOrIdParam,
) -> ResourceExtendedInfo:
    """``POST /resources/{token}/extend``."""
    found = await resource_for(request, ctx, token, Scope.PROVISION)
    tier = ctx.plans.tiers.get(found.tier or "")
    lifetime = _not_extendable(found, tier)
    correlation_id = request_id_of(request.scope)
    latest = (found.created_at or datetime.now(UTC)) + timedelta(seconds=lifetime.total_max_seconds)

    def decide(state: ResourceState) -> ResourceExtended:
        expires_at = state.expires_at
        if expires_at is None:  # claimed meanwhile
            msg = "This resource is permanent now: there is nothing to extend."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        if expires_at <= datetime.now(UTC):
            msg = f"This resource expired at {expires_at.isoformat()}; create a new one."
            raise SpinupError(ErrorCode.RESOURCE_GONE, msg)
        if state.extensions >= lifetime.extensions or expires_at >= latest:
            used = (
                f"all {lifetime.extensions} extensions"
                if state.extensions >= lifetime.extensions
                else f"its whole {duration(lifetime.total_max_seconds)} lifetime"
            )
            msg = (
                f"This resource has used {used} the {state.tier} plan allows without an account;"
                f" it expires at {expires_at.isoformat()}."
            )
            raise SpinupError(ErrorCode.PLAN_LIMIT_REACHED, msg, agent_action=_CLAIM_ACTION)
        return ResourceExtended(
            resource_id=state.resource_id,
            expires_at=min(expires_at + timedelta(seconds=data.ttl_seconds), latest),
            extensions=state.extensions + 1,
        )

    event = await append_decided(ctx, found.resource_id, decide, correlation_id)
    if not isinstance(event, ResourceExtended):  # pragma: no cover  (decide makes one)
        raise TypeError(type(event).__name__)
    # A stack and its backing resources expire together (the reaper deletes each at its own).
    children = await ctx.resources.children_of(found.resource_id)
    new_expiry = event.expires_at

    def follow_stack(state: ResourceState) -> ResourceExtended:
        return ResourceExtended(
            resource_id=state.resource_id,
            expires_at=new_expiry,
            extensions=state.extensions + 1,
        )

    await asyncio.gather(
        *(
            append_decided(ctx, child.resource_id, follow_stack, correlation_id)
            for child in children
        )
    )
    note = None
    if event.expires_at == latest:
        note = (
            f"Extended to {latest.isoformat()}, the end of the {found.tier} plan's"
            f" {duration(lifetime.total_max_seconds)} lifetime, not by all {data.ttl_seconds} s"
            " asked for. Claim it into an account to keep it longer."
        )
    return ResourceExtendedInfo(
        id=found.resource_id,
        expires_at=event.expires_at,
        extensions_used=event.extensions,
        extensions_left=max(0, lifetime.extensions - event.extensions),
        latest_expires_at=latest,
        extended_with=[child.resource_id for child in children],
        note=note,
    )


async def _notification_messages(
    ctx: GatewayContext, resource_id: uuid.UUID, after: int
) -> AsyncIterator[ServerSentEventMessage]:
    stream = notification_stream(resource_id)
    quiet = 0.0
    while not _closing.is_set():
        for entry in await ctx.store.load(stream):
            event = entry.event
            if entry.version <= after or not isinstance(event, NotificationQueued):
                continue
            after = entry.version
            quiet = 0.0
            yield ServerSentEventMessage(
                event=event.notification_type, id=str(entry.version), data=event.body
            )
            if event.notification_type in {EXPIRED, DELETED}:
                return  # nothing follows the end
        if quiet >= _EVENTS_KEEPALIVE_S:
            quiet = 0.0
            yield ServerSentEventMessage(data=None, comment="keep-alive")
        await asyncio.sleep(_EVENTS_POLL_S)
        quiet += _EVENTS_POLL_S


@get(
    "/resources/{token:str}/events",
    summary="Follow a resource's notifications",
    description="Server-Sent Events: every notification of the resource (event = its type,"
    " data = the body its notify_url receives), from the first or after Last-Event-ID; the"
    " stream ends after resource.expired or resource.deleted. Works after expiry too.",
    media_type="text/event-stream",
    tags=["resources"],
)
async def resource_events(
    request: Request[Any, Any, Any], ctx: GatewayContext, token: str = TokenOrIdParam
) -> ServerSentEvent:
    """``GET /resources/{token}/events``."""
    state = (
        await ctx.resources.by_token_hash(hash_token(token)) if looks_like_token(token) else None
    )
    if state is None or state.status is ResourceStatus.NONE:
        # By id (with the owner's Bearer), or a token no resource has: the usual answer.
        state = await resource_for(request, ctx, token, Scope.READ)
    last = request.headers.get("last-event-id", "0")
    after = int(last) if last.isdigit() else 0
    return ServerSentEvent(_notification_messages(ctx, state.resource_id, after))


LIFETIME_ROUTES = [extend_resource, set_notify, resource_events]
