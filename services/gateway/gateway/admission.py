"""Abuse controls before anything is provisioned: rate limits (429) and plan caps (402)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID

    from gateway.context import GatewayContext
    from shared.contracts.kinds import ResourceKind
    from shared.plans import Tier


async def admit(
    ctx: GatewayContext,
    *,
    kind: ResourceKind,
    tier: Tier,
    account_id: UUID | None,
    fingerprint: str,
) -> None:
    """Let a provisioning request through, or refuse it with 429 or 402.

    The holder is the account when ``account_id`` is given, else the client network.
    """
