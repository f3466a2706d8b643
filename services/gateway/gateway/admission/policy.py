"""Abuse controls before anything is provisioned: rate limits (429) and plan caps (402).

Every number comes from the caller's tier in ``plans.yaml``; the holder is the account when the
caller authenticated, else the fingerprint of the client's network.

Every create spends from the rate limit here first, one Redis round trip, so a client
hammering the API is stopped before an attempt costs anything more. The caps of a single
resource are then counted by the append that records it (the command carries them, docs/adr/
0040): no query of its own. A stack counts here (``admit_several``), since it checks its
backing resources' kinds before anything is uploaded or made.

A refusal of the caps is remembered for a minute (``remember_refusal``, docs/adr/0041), and the
rate limit's round trip recalls it: a holder at its cap is refused again here, without a command
and without a backend object made and deleted. A delete through the API and a claim forget it,
since they make room; an expiry makes room that the holder finds within the minute.

The rate limit itself (the sliding log in Redis, failing open) is ``ratelimit.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from shared.caps import OverCapsError, over_active_cap, over_daily_cap
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import ResourceKind

if TYPE_CHECKING:
    from uuid import UUID

    from gateway.context import GatewayContext
    from shared.contracts.kinds import Caps
    from shared.plans import Tier

#: How long a refusal of the caps is recalled: at most one create a minute per kind costs a
#: backend object made and deleted for a holder at its cap, and room made by an expiry is found
#: at most this late.
REFUSAL_MEMORY_S = 60


class _Refusal(msgspec.Struct):
    """A remembered refusal: what the worker's 402 said."""

    message: str
    agent_action: str


async def spend_rate(
    ctx: GatewayContext,
    *,
    tier: Tier,
    account_id: UUID | None,
    fingerprint: str,
    kind: ResourceKind | None = None,
) -> None:
    """Spend one provisioning request from the holder's rate limit, or refuse it with 429.

    The holder is the account when ``account_id`` is given, else the client network. With
    ``kind``, a refusal of the holder's caps for that kind remembered within the last minute
    refuses the request again (after it was spent from the rate, as any other).

    Raises:
        SpinupError: RATE_LIMITED, with ``retry_after_s`` and an ``agent_action``.
        OverCapsError: a refusal of the caps is remembered (PLAN_LIMIT_REACHED).
    """
    holder = _holder(account_id, fingerprint)
    per_minute = tier.rate_limit.provisions_per_minute
    if kind is None:
        wait_ms = await ctx.rate_limiter.spend(holder, per_minute)
    else:
        scope = _caps_scope(tier.caps)
        wait_ms, refusal = await ctx.rate_limiter.spend_unless_refused(
            holder, per_minute, refusal_key=_refusal_key(holder, kind), refusal_scope=scope
        )
        if refusal is not None:
            said = msgspec.json.decode(refusal.removeprefix(scope), type=_Refusal)
            raise OverCapsError(said.message, agent_action=said.agent_action)
    if wait_ms:
        raise _rate_limited(tier, wait_ms, anonymous=account_id is None)


async def remember_refusal(
    ctx: GatewayContext,
    refused: SpinupError,
    *,
    kind: ResourceKind,
    tier: Tier,
    account_id: UUID | None,
    fingerprint: str,
) -> None:
    """Recall ``refused``, a worker's refusal of the caps, for ``REFUSAL_MEMORY_S``."""
    said = _Refusal(message=refused.message, agent_action=refused.agent_action or "")
    await ctx.rate_limiter.remember(
        _refusal_key(_holder(account_id, fingerprint), kind),
        _caps_scope(tier.caps) + msgspec.json.encode(said).decode(),
        for_s=REFUSAL_MEMORY_S,
    )


async def forget_refusals(
    ctx: GatewayContext,
    *,
    account_id: UUID | None,
    fingerprint: str | None,
    kinds: Sequence[ResourceKind] = tuple(ResourceKind),
) -> None:
    """A delete or a claim made room: the holder's remembered refusals of ``kinds`` go."""
    if account_id is None and fingerprint is None:
        return
    holder = _holder(account_id, fingerprint or "")
    await ctx.rate_limiter.forget(*(_refusal_key(holder, kind) for kind in kinds))


def _holder(account_id: UUID | None, fingerprint: str) -> str:
    return f"account:{account_id}" if account_id else f"client:{fingerprint}"


def _refusal_key(holder: str, kind: ResourceKind) -> str:
    return f"caps:refused:{holder}:{kind.value}"


def _caps_scope(caps: Caps) -> str:
    """What a remembered refusal starts with: it counts only under the same caps."""
    return f"{caps.active_per_kind}/{caps.provisions_per_day}\n"


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
