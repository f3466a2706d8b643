"""Abuse controls before anything is provisioned: rate limits (429) and plan caps (402).

Every number comes from the caller's tier in ``plans.yaml``; the holder is the account when the
caller authenticated, else the fingerprint of the client's network.

Every create spends from the rate limit here first, one Redis round trip, so a client
hammering the API is stopped before an attempt costs anything more. The caps of a single
resource are then counted by the append that records it (the command carries them, docs/adr/
0040): no query of its own. A stack counts here (``admit_several``), since it checks its
backing resources' kinds before anything is uploaded or made.

The rate limit itself (the sliding log in Redis, failing open) is ``ratelimit.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.caps import over_active_cap, over_daily_cap
from shared.contracts.errors import ErrorCode, SpinupError

if TYPE_CHECKING:
    from uuid import UUID

    from gateway.context import GatewayContext
    from shared.contracts.kinds import ResourceKind
    from shared.plans import Tier


async def spend_rate(
    ctx: GatewayContext, *, tier: Tier, account_id: UUID | None, fingerprint: str
) -> None:
    """Spend one provisioning request from the holder's rate limit, or refuse it with 429.

    The holder is the account when ``account_id`` is given, else the client network.

    Raises:
        SpinupError: RATE_LIMITED, with ``retry_after_s`` and an ``agent_action``.
    """
    holder = f"account:{account_id}" if account_id else f"client:{fingerprint}"
    wait_ms = await ctx.rate_limiter.spend(holder, tier.rate_limit.provisions_per_minute)
    if wait_ms:
        raise _rate_limited(tier, wait_ms, anonymous=account_id is None)


async def admit_several(
    ctx: GatewayContext,
    *,
    kinds: Sequence[ResourceKind],
    tier_name: str,
    tier: Tier,
    account_id: UUID | None,
    fingerprint: str,
) -> None:
    """Let a request that makes several resources at once (a stack) through, or refuse it.

    ``kinds``: one per resource the request makes; each counts against its kind's cap, and
    the whole request spends one unit of the rate limit. ``tier_name`` names ``tier`` in the
    errors.

    Raises:
        SpinupError: RATE_LIMITED (with ``retry_after_s``) or PLAN_LIMIT_REACHED, each with an
            ``agent_action`` saying what to do.
    """
    await spend_rate(ctx, tier=tier, account_id=account_id, fingerprint=fingerprint)
    # Two concurrent requests can both see the holder one below a cap and both pass: the caps
    # are soft by the holder's requests in flight at once, one or two in practice and never
    # more than the (atomic) rate limit lets through. Exact caps would need a lock per holder
    # around the whole provision; a cap exists to stop abuse at scale, which one or two extra
    # resources do not threaten.
    made = Counter(kinds)
    caps = tier.caps
    for each_kind, adding in made.items():
        live, today = await ctx.resources.count_held(
            each_kind,
            account_id=account_id,
            fingerprint=fingerprint,
            live_up_to=caps.active_per_kind,
            today_up_to=caps.provisions_per_day,
        )
        anonymous = account_id is None
        if live + adding > caps.active_per_kind:
            raise over_active_cap(
                tier_name, caps.active_per_kind, each_kind, live, anonymous=anonymous
            )
        if today + made.total() > caps.provisions_per_day:
            raise over_daily_cap(tier_name, caps.provisions_per_day, today, anonymous=anonymous)


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
