"""Who the caller is: session JWTs and personal access tokens, and what they may do.

``Authorization: Bearer <credential>`` carries either
- a session JWT (from register or login): HS256 under ``SPINUP_JWT_KEY``, the algorithm pinned
  on decode, with ``exp``/``iat``/``jti``/``sub`` required and fixed ``iss``/``aud``; every scope;
  refused after logout (its ``jti`` is in ``revoked_sessions``); or
- a personal access token ``spp_…``: 256 random bits, stored only as SHA-256 (a fast hash is
  right for a random secret, unlike a password), carrying only the scopes it was made with.
Every refusal is a 401 ``unauthorized`` saying what to do next.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

import jwt

from shared.contracts.errors import ErrorCode, SpinupError
from shared.crypto.tokens import TOKEN_PREFIX, hash_token

if TYPE_CHECKING:
    from litestar import Request

    from gateway.context import GatewayContext

SESSION_ALGORITHM = "HS256"
SESSION_ISSUER = "spinup"
SESSION_AUDIENCE = "spinup-session"
_REQUIRED_CLAIMS = ["exp", "iat", "jti", "sub", "iss", "aud"]

ACCESS_TOKEN_PREFIX = "spp_"  # noqa: S105  (a public prefix, not a secret)
_ACCESS_TOKEN_BYTES = 32  # 43 base64url characters
_ACCESS_TOKEN_RE = re.compile(r"^spp_[A-Za-z0-9_-]{43}$")

_LOG_IN_AGAIN = "Log in again (POST /auth/login) and send the new token."
_NEW_PAT_ADVICE = "Create a new access token (POST /auth/tokens, with a session) and use it."


class Scope(StrEnum):
    """What a personal access token may do; a session may do everything."""

    PROVISION = "provision"
    READ = "read"
    DELETE = "delete"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated account, and how it authenticated."""

    account_id: UUID
    tier: str
    scopes: frozenset[Scope]
    #: The session JWT it authenticated with; None for an access token.
    session: Session | None

    def require(self, scope: Scope) -> None:
        """Refuse with 403 unless the credential carries ``scope``."""
        if scope not in self.scopes:
            msg = f"This access token lacks the {scope.value!r} scope. Create one that has it."
            raise SpinupError(ErrorCode.INSUFFICIENT_SCOPE, msg, agent_action=_NEW_PAT_ADVICE)

    def require_session(self, action: str) -> Session:
        """The session it authenticated with; 403 for an access token.

        Args:
            action: what was asked, for the message ("manage access tokens").
        """
        if self.session is None:
            msg = f"Only a logged-in session may {action}, not an access token."
            raise SpinupError(
                ErrorCode.FORBIDDEN,
                msg,
                agent_action="Log in (POST /auth/login) and send the session token instead.",
            )
        return self.session


# -- session JWTs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """A session JWT and what identifies it."""

    token: str
    account_id: UUID
    jti: str
    expires_at: datetime


def issue_session(
    key: bytes, account_id: UUID, *, ttl_s: int, now: datetime | None = None
) -> Session:
    """A new session JWT for ``account_id``, valid ``ttl_s`` seconds from ``now``."""
    issued_at = (now or datetime.now(UTC)).replace(microsecond=0)
    expires_at = issued_at + timedelta(seconds=ttl_s)
    jti = secrets.token_urlsafe(16)
    claims = {
        "iss": SESSION_ISSUER,
        "aud": SESSION_AUDIENCE,
        "sub": str(account_id),
        "jti": jti,
        "iat": int(issued_at.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(claims, key, algorithm=SESSION_ALGORITHM)
    return Session(token=token, account_id=account_id, jti=jti, expires_at=expires_at)


def read_session(key: bytes, token: str) -> Session:
    """The session a JWT names, once its signature, algorithm and claims check out.

    Whether it was logged out is the caller's question (it needs the database).

    Raises:
        SpinupError: UNAUTHORIZED, saying whether it expired or is not ours.
    """
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[SESSION_ALGORITHM],
            audience=SESSION_AUDIENCE,
            issuer=SESSION_ISSUER,
            options={"require": _REQUIRED_CLAIMS},
        )
        account_id = UUID(claims["sub"])
    except jwt.ExpiredSignatureError:
        msg = f"This session has expired. {_LOG_IN_AGAIN}"
        raise _unauthorized(msg) from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        msg = f"This session token is not valid. {_LOG_IN_AGAIN}"
        raise _unauthorized(msg) from None
    return Session(
        token=token,
        account_id=account_id,
        jti=claims["jti"],
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


# -- personal access tokens ---------------------------------------------------------------------


def mint_access_token() -> str:
    """A new personal access token: shown to its owner once, then only its hash is kept."""
    return ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(_ACCESS_TOKEN_BYTES)


def looks_like_access_token(value: str) -> bool:
    """Cheap shape check before any lookup."""
    return bool(_ACCESS_TOKEN_RE.match(value))


# -- authenticating a request -------------------------------------------------------------------


def _unauthorized(message: str) -> SpinupError:
    return SpinupError(ErrorCode.UNAUTHORIZED, message)


def bearer_credential(authorization: str) -> str:
    """The credential of an ``Authorization: Bearer <credential>`` header.

    Raises:
        SpinupError: UNAUTHORIZED for another scheme or an empty credential.
    """
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        msg = (
            "Send Authorization: Bearer <token>, with a session token from POST /auth/login"
            " or a personal access token (spp_…)."
        )
        raise _unauthorized(msg)
    return credential


async def authenticate(request: Request[Any, Any, Any], ctx: GatewayContext) -> Principal | None:
    """The caller's account, or None when no ``Authorization`` header was sent.

    Raises:
        SpinupError: UNAUTHORIZED for a malformed, expired, revoked or unknown credential.
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    credential = bearer_credential(header)
    if looks_like_access_token(credential):
        return await _access_token_principal(ctx, credential)
    if credential.count(".") == 2:  # noqa: PLR2004  (header.payload.signature)
        return await session_principal(ctx, credential)
    if credential.startswith(TOKEN_PREFIX):
        msg = (
            "A resource token (spn_…) goes in the URL, as in GET /resources/{token}, not in"
            " Authorization. Authorization takes a session token or an access token (spp_…)."
        )
        raise _unauthorized(msg)
    msg = (
        "The bearer credential is neither a session token nor an access token (spp_…)."
        f" {_LOG_IN_AGAIN}"
    )
    raise _unauthorized(msg)


async def session_principal(ctx: GatewayContext, token: str) -> Principal:
    """The account a session JWT (from a header or the console's cookie) authenticates.

    Raises:
        SpinupError: UNAUTHORIZED for an expired, logged-out or unknown session.
    """
    session = read_session(ctx.settings.jwt_key, token)
    account = await ctx.accounts.session_account(session.account_id, session.jti)
    if account is None:
        msg = f"This session's account does not exist. {_LOG_IN_AGAIN}"
        raise _unauthorized(msg)
    if account.revoked:
        msg = f"This session was logged out. {_LOG_IN_AGAIN}"
        raise _unauthorized(msg)
    return Principal(
        account_id=session.account_id, tier=account.tier, scopes=ALL_SCOPES, session=session
    )


async def _access_token_principal(ctx: GatewayContext, token: str) -> Principal:
    found = await ctx.accounts.access_token_by_hash(hash_token(token))
    if found is None:
        msg = f"This access token is unknown. {_NEW_PAT_ADVICE}"
        raise _unauthorized(msg)
    record, tier = found
    if record.revoked_at is not None:
        msg = f"This access token was revoked. {_NEW_PAT_ADVICE}"
        raise _unauthorized(msg)
    if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
        msg = f"This access token has expired. {_NEW_PAT_ADVICE}"
        raise _unauthorized(msg)
    return Principal(
        account_id=record.account_id,
        tier=tier,
        scopes=frozenset(Scope(scope) for scope in record.scopes),
        session=None,
    )


async def require_principal(
    request: Request[Any, Any, Any], ctx: GatewayContext, what: str
) -> Principal:
    """The caller's account; 401 when the request carries no credential.

    Args:
        request: the request.
        ctx: the gateway context.
        what: the route's purpose, for the message ("list your resources").
    """
    principal = await authenticate(request, ctx)
    if principal is None:
        msg = (
            f"Log in to {what}: send Authorization: Bearer <token>, with the token from"
            " POST /auth/login or a personal access token (spp_…)."
        )
        raise _unauthorized(msg)
    return principal


async def require_session_principal(
    request: Request[Any, Any, Any], ctx: GatewayContext, what: str
) -> Principal:
    """The caller's account, logged in with a session: 401 without one, 403 for an access token.

    Args:
        request: the request.
        ctx: the gateway context.
        what: the route's purpose, for the messages ("create access tokens").
    """
    principal = await require_principal(request, ctx, what)
    principal.require_session(what)
    return principal
