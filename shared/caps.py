"""A plan's caps refused, in the words a person or an agent can act on.

The holder is the account when the caller authenticated, else the client network. Two places
count: the append that records a create's intent (docs/adr/0040), and the gateway for a stack,
which checks its backing resources' kinds before it uploads anything. Both refuse with these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.contracts.errors import ErrorCode, SpinupError

if TYPE_CHECKING:
    from shared.contracts.kinds import ResourceKind


class OverCapsError(SpinupError):
    """PLAN_LIMIT_REACHED: the holder is at one of its plan's caps."""

    def __init__(self, message: str, *, agent_action: str) -> None:
        super().__init__(ErrorCode.PLAN_LIMIT_REACHED, message, agent_action=agent_action)


def over_active_cap(
    tier_name: str, cap: int, kind: ResourceKind, live: int, *, anonymous: bool
) -> OverCapsError:
    """The holder already has ``live`` (at least ``cap``) live resources of ``kind``."""
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
    return OverCapsError(message, agent_action=action)


def over_daily_cap(tier_name: str, cap: int, today: int, *, anonymous: bool) -> OverCapsError:
    """The holder made ``today`` resources in the last 24 hours, and may make ``cap``."""
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
    return OverCapsError(message, agent_action=action)
