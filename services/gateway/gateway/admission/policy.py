"""Abuse controls before anything is provisioned: rate limits (429) and plan caps (402).

Every number comes from the caller's tier in ``plans.yaml``; the holder is the account when the
caller authenticated, else the fingerprint of the client's network.

Order: the rate limit first, then the caps. The rate limit costs one Redis round trip, the caps
a Postgres count; checking the cheap one first means a client hammering the API is stopped
before each attempt costs a database query, and every attempt, including one refused for a cap,
spends from the rate budget as any request should.

The rate limit itself (the sliding log in Redis, failing open) is ``ratelimit.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.contracts.errors import ErrorCode, SpinupError

if TYPE_CHECKING:
    from uuid import UUID

    from gateway.context import GatewayContext
    from shared.contracts.kinds import ResourceKind
    from shared.plans import Tier


async def admit(
    ctx: GatewayContext,
    *,
    kind: ResourceKind,
    tier_name: str,
    tier: Tier,
    account_id: UUID | None,
    fingerprint: str,
    with_children: Sequence[ResourceKind] = (),
) -> None:
    """Let a provisioning request through, or refuse it with 429 or 402.

    The holder is the account when ``account_id`` is given, else the client network;
    ``tier_name`` names ``tier`` in the errors. ``with_children``: the kinds of the resources
    the same request makes along with it (a stack's backing resources); each counts against its
    kind's cap too, and the whole request spends one unit of the rate limit.

    Raises:
        SpinupError: RATE_LIMITED (with ``retry_after_s``) or PLAN_LIMIT_REACHED, each with an
            ``agent_action`` saying what to do.
    """
    holder = f"account:{account_id}" if account_id else f"client:{fingerprint}"
    wait_ms = await ctx.rate_limiter.spend(holder, tier.rate_limit.provisions_per_minute)
    if wait_ms:
        raise _rate_limited(tier, wait_ms, anonymous=account_id is None)
    # Two concurrent requests can both see the holder one below a cap and both pass: the caps
    # are soft by the holder's requests in flight at once, one or two in practice and never
    # more than the (atomic) rate limit lets through. Exact caps would need a lock per holder
    # around the whole provision; a cap exists to stop abuse at scale, which one or two extra
    # resources do not threaten.
    made = Counter([kind, *with_children])
    caps = tier.caps
    for each_kind, adding in made.items():
        live, today = await ctx.resources.count_held(
            each_kind,
            account_id=account_id,
            fingerprint=fingerprint,
            live_up_to=caps.active_per_kind,
            today_up_to=caps.provisions_per_day,
        )
        if live + adding > caps.active_per_kind:
            raise _over_active_cap(tier_name, tier, each_kind, live, anonymous=account_id is None)
        if today + made.total() > caps.provisions_per_day:
            raise _over_daily_cap(tier_name, tier, today, anonymous=account_id is None)


def _rate_limited(tier: Tier, wait_ms: int, *, anonymous: bool) -> SpinupError:
    wait_s = max(1, math.ceil(wait_ms / 1000))
    per_minute = tier.rate_limit.provisions_per_minute
    who = "this network" if anonymous else "this account"
    message = (
        f"Too many provisioning requests: {who} may make {per_minute} per minute"
        f" (rate_limit.provisions_per_minute). The next one is allowed in {wait_s} s."
    )
    raises = (
        "an account (POST /auth/register) raises the limit"
        if anonymous
        else "a bigger plan (GET /plans lists them) raises the limit"
    )
    return SpinupError(
        ErrorCode.RATE_LIMITED,
        message,
        retryable=True,
        agent_action=f"Wait {wait_s} seconds and retry; {raises}.",
        retry_after_s=wait_s,
    )


def _over_active_cap(
    tier_name: str, tier: Tier, kind: ResourceKind, live: int, *, anonymous: bool
) -> SpinupError:
    cap = tier.caps.active_per_kind
    if anonymous:
        message = (
            f"Plan limit reached: without an account, a network may hold {cap} live {kind.value}"
            f" resources at once (caps.active_per_kind) and this one holds {live}."
        )
        action = (
            "Claim the resources into an account (POST /auth/register, then open the claim_url"
            " field of an earlier response), which raises the limit, or delete one you no longer"
            " need with DELETE /resources/{token}, then retry."
        )
    else:
        message = (
            f"Plan limit reached: the {tier_name} plan allows {cap} live {kind.value}"
            f" resources at once (caps.active_per_kind) and this account holds {live}."
        )
        action = (
            f"Delete a {kind.value} resource you no longer need (GET /resources?kind={kind.value}"
            " lists them, DELETE /resources/{token} deletes one) or move to a bigger plan"
            " (GET /plans lists them), then retry."
        )
    return SpinupError(ErrorCode.PLAN_LIMIT_REACHED, message, agent_action=action)


def _over_daily_cap(tier_name: str, tier: Tier, today: int, *, anonymous: bool) -> SpinupError:
    cap = tier.caps.provisions_per_day
    # Deleting does not help here: the cap counts what was made, deleted or not.
    if anonymous:
        message = (
            f"Plan limit reached: without an account, a network may make {cap} resources in 24"
            f" hours (caps.provisions_per_day) and this one made {today}."
        )
        action = (
            "Claim the resources into an account (POST /auth/register, then open the claim_url"
            " field of an earlier response), which raises the limit, or retry once the oldest of"
            " today's resources is more than 24 hours old."
        )
    else:
        message = (
            f"Plan limit reached: the {tier_name} plan allows {cap} new resources in"
            f" 24 hours (caps.provisions_per_day) and this account made {today}."
        )
        action = (
            "Move to a bigger plan (GET /plans lists them), or retry once the oldest of today's"
            " resources is more than 24 hours old."
        )
    return SpinupError(ErrorCode.PLAN_LIMIT_REACHED, message, agent_action=action)
