"""Claim: moving anonymous resources into an account."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.handlers import HTTPRouteHandler

if TYPE_CHECKING:
    from gateway.context import GatewayContext


def claim_url(ctx: GatewayContext, fingerprint: str) -> str | None:
    """The URL that claims every anonymous resource of this client network."""
    return None


CLAIM_ROUTES: list[HTTPRouteHandler] = []
