"""A temporary resource's lifetime: chosen at create, extended, followed (docs/adr/0027).

The bounds are the tier's ``lifetime`` in ``plans.yaml``. Extending and setting a notify target
are facts of the resource's own stream (``ResourceExtended``, ``NotifyTargetSet``) appended here,
at the version the gateway folded, so a concurrent delete or claim wins or loses cleanly; the
notifications themselves are the notifier's (``gateway.resources.notifier``).
"""

from __future__ import annotations

import base64
import hmac
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from litestar import Request

from gateway.resources.outbound import check_url
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.events import NotifyTargetSet, ResourceEvent
from shared.contracts.kinds import ResourceKind, ResourceStatus
from shared.eventlog.errors import ConcurrencyConflictError
from shared.naming import resource_stream
from shared.resources import ResourceState

if TYPE_CHECKING:
    from gateway.context import GatewayContext
    from shared.plans import Lifetime, Tier

EXPIRING = "resource.expiring"
OVER_QUOTA = "resource.over_quota"
EXPIRED = "resource.expired"
DELETED = "resource.deleted"
NOTIFICATION_TYPES = [EXPIRING, OVER_QUOTA, EXPIRED, DELETED]
_APPEND_ATTEMPTS = 5


def duration(seconds: int) -> str:
    """``seconds`` as people read a plan's bound: ``10 min``, ``24 h``."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _ttl_max(tier: Tier, lifetime: Lifetime, kind: ResourceKind) -> int:
    """The longest ``ttl_seconds`` a create of ``kind`` may ask for (stacks: within their TTL)."""
    if kind is ResourceKind.STACK and tier.stack.ttl_seconds is not None:
        return min(lifetime.ttl_max_seconds, tier.stack.ttl_seconds)
    return lifetime.ttl_max_seconds


def expires_at_for(
    tier_name: str, tier: Tier, kind: ResourceKind, ttl_seconds: int | None, now: datetime
) -> datetime | None:
    """When a new resource expires: ``ttl_seconds`` from now within the plan, else its TTL.

    Raises:
        SpinupError: ``invalid_request`` naming the bounds (or why there are none).
    """
    default = tier.ttl_of(kind)
    if ttl_seconds is None:
        return now + timedelta(seconds=default) if default else None
    lifetime = tier.lifetime
    if default is None:
        msg = (
            f"Resources of the {tier_name} plan are permanent: leave out ttl_seconds"
            " (DELETE /resources/{token} removes one when you are done)."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    if lifetime is None:
        msg = f"The {tier_name} plan's resources live {duration(default)}: leave out ttl_seconds."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    low, high = lifetime.ttl_min_seconds, _ttl_max(tier, lifetime, kind)
    if not low <= ttl_seconds <= high:
        msg = (
            f"ttl_seconds must be between {low} ({duration(low)}) and {high} ({duration(high)})"
            f" for a {kind.value} on the {tier_name} plan; got {ttl_seconds}."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    return now + timedelta(seconds=ttl_seconds)


def ttl_seconds_param(request: Request[Any, Any, Any]) -> int | None:
    """``?ttl_seconds=N`` of a create whose body is not JSON (a stack's upload)."""
    raw = request.query_params.get("ttl_seconds")
    if raw is None:
        return None
    if not raw.isdigit():
        msg = f"ttl_seconds must be a whole number of seconds; got {raw!r}."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    return int(raw)


def notify_secret(token_key: bytes, resource_id: uuid.UUID, generation: int) -> str:
    """The ``whsec_`` secret of one notify target: derived, never stored (ADR 0027).

    Each ``PUT /resources/{token}/notify`` is a new generation, so a new secret; a retried
    create (same Idempotency-Key) derives the same one again.
    """
    mac = hmac.new(
        token_key, b"notify-secret|" + resource_id.bytes + generation.to_bytes(4, "big"), "sha256"
    ).digest()
    return "whsec_" + base64.b64encode(mac).decode()


async def load_state(ctx: GatewayContext, resource_id: uuid.UUID) -> ResourceState:
    """The resource folded from its stream: newer than the read model, what appends decide on."""
    recorded = await ctx.store.load(resource_stream(resource_id))
    return ResourceState.fold(
        resource_id, ((entry.event, entry.command_id, entry.recorded_at) for entry in recorded)
    )


def _require_active(state: ResourceState) -> None:
    if state.status is ResourceStatus.ACTIVE:
        return
    if state.status is ResourceStatus.PROVISIONING:
        msg = "The resource is still being created; try again in a moment."
        raise SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True)
    msg = "The resource is being deleted or has failed; create a new one."
    raise SpinupError(ErrorCode.RESOURCE_GONE, msg)


async def append_decided(
    ctx: GatewayContext,
    resource_id: uuid.UUID,
    decide: Callable[[ResourceState], ResourceEvent],
    correlation_id: str,
) -> ResourceEvent:
    """Fold the stream, let ``decide`` make the event, append it there; again on a conflict."""
    for _ in range(_APPEND_ATTEMPTS):
        state = await load_state(ctx, resource_id)
        _require_active(state)
        event: ResourceEvent = decide(state)
        try:
            await ctx.store.append(
                resource_stream(resource_id),
                state.version,
                [event],
                command_id=uuid.uuid4(),
                correlation_id=correlation_id,
            )
        except ConcurrencyConflictError:
            continue
        return event
    msg = "The resource changed while this request ran; try again."
    raise SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True)


async def set_notify_target(
    ctx: GatewayContext, resource_id: uuid.UUID, url: str | None, correlation_id: str
) -> tuple[NotifyTargetSet, str | None]:
    """Record ``url`` as the notify target (checked first); the event and its secret."""
    if url is not None:
        await check_url(url, ctx.settings.notify_allowed_networks)

    def decide(state: ResourceState) -> NotifyTargetSet:
        tier = ctx.plans.tiers.get(state.tier or "")
        lifetime = tier.lifetime if tier else None
        return NotifyTargetSet(
            resource_id=resource_id,
            url=url,
            secret_generation=state.version + 1,
            lead_seconds=sorted(lifetime.notify_lead_seconds, reverse=True) if lifetime else [],
        )

    event = await append_decided(ctx, resource_id, decide, correlation_id)
    if not isinstance(event, NotifyTargetSet):  # pragma: no cover  (decide makes one)
        raise TypeError(type(event).__name__)
    secret = (
        notify_secret(ctx.settings.token_key, resource_id, event.secret_generation)
        if url is not None
        else None
    )
    return event, secret


async def notify_target_at_create(
    ctx: GatewayContext, resource_id: uuid.UUID, url: str, correlation_id: str
) -> str:
    """Set the target a create asked for; its secret (the same again for a retried create)."""
    recorded = await ctx.store.load(resource_stream(resource_id))
    already = [entry.event for entry in recorded if isinstance(entry.event, NotifyTargetSet)]
    if already and already[-1].url == url:
        return notify_secret(ctx.settings.token_key, resource_id, already[-1].secret_generation)
    _, secret = await set_notify_target(ctx, resource_id, url, correlation_id)
    if secret is None:  # pragma: no cover  (a url was given)
        raise TypeError(url)
    return secret
