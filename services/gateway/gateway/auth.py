"""Who the caller is: session JWTs and personal access tokens, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from litestar.handlers import HTTPRouteHandler

from shared.contracts.errors import ErrorCode, SpinupError

if TYPE_CHECKING:
    from uuid import UUID

    from litestar import Request

    from gateway.context import GatewayContext


class Scope(StrEnum):
    """What a personal access token may do; a session may do everything."""

    PROVISION = "provision"
    READ = "read"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated account, and how it authenticated."""

    account_id: UUID
    tier: str
    scopes: frozenset[Scope]
    #: The session's ``jti`` when authenticated by a session JWT; None for an access token.
    session_jti: str | None

    def require(self, scope: Scope) -> None:
        """Refuse with 403 unless the credential carries ``scope``."""
        if scope not in self.scopes:
            msg = f"This access token lacks the {scope.value!r} scope. Create one that has it."
            raise SpinupError(ErrorCode.INSUFFICIENT_SCOPE, msg)


async def authenticate(request: Request[Any, Any, Any], ctx: GatewayContext) -> Principal | None:
    """The caller's account, or None when no ``Authorization`` header was sent.

    Raises:
        SpinupError: UNAUTHORIZED for a malformed, expired or revoked credential.
    """
    if request.headers.get("authorization") is None:
        return None
    msg = "Accounts are not available yet."
    raise SpinupError(ErrorCode.UNAUTHORIZED, msg)


AUTH_ROUTES: list[HTTPRouteHandler] = []
