"""HTTP routes of accounts: register, log in and out, access tokens, the account's resources.

Access tokens are managed only with a session: an access token cannot mint or revoke access
tokens, so a leaked token cannot make itself a successor that outlives its revocation.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter

from gateway.accounts.auth import (
    Principal,
    Scope,
    issue_session,
    mint_access_token,
    require_principal,
    require_session_principal,
)
from gateway.accounts.store import AccessToken, Account, check_new_password, normalise_email
from gateway.context import GatewayContext
from gateway.http.middleware import request_id_of
from gateway.http.schemas import ResourceInfo
from gateway.resources.routes import open_credentials, resource_for, resource_info
from shared.contracts.commands import RotateCredentials
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import Credentials, ResourceKind, connection_url_of
from shared.contracts.subjects import ENDPOINTS
from shared.crypto.tokens import hash_token
from shared.plans import Tier
from shared.resources import ResourceState

# -- bodies -------------------------------------------------------------------------------------


class EmailPassword(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /auth/register`` and ``POST /auth/login``."""

    email: str
    password: str


class NewAccessToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /auth/tokens``: a name to recognise it by, and what it may do.

    ``expires_in_days`` null: the token works until revoked.
    """

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)]
    expires_in_days: Annotated[int, msgspec.Meta(ge=1)] | None = None


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    """An account as shown to its owner."""

    id: uuid.UUID
    email: str
    tier: str
    created_at: datetime


class SessionIssued(msgspec.Struct, frozen=True, kw_only=True):
    """A session: send ``token`` as ``Authorization: Bearer <token>`` until ``expires_at``."""

    ok: bool = True
    account: AccountView
    token: str
    expires_at: datetime


class LoggedOut(msgspec.Struct, frozen=True, kw_only=True):
    """The session token no longer authenticates."""

    ok: bool = True
    note: str


class CredentialInfo(msgspec.Struct, frozen=True, kw_only=True):
    """How the caller authenticated: a session has every scope, an access token its own."""

    type: str
    scopes: list[str]


class UserInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /auth/user``: the account, the credential used, and the account's plan."""

    ok: bool = True
    account: AccountView
    credential: CredentialInfo
    plan: Tier


class AccessTokenView(msgspec.Struct, frozen=True, kw_only=True):
    """A personal access token's record (never its secret)."""

    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class AccessTokenIssued(msgspec.Struct, frozen=True, kw_only=True):
    """A new access token. ``token`` is shown this once: only its hash is kept."""

    ok: bool = True
    token: str
    access_token: AccessTokenView
    note: str


class AccessTokenList(msgspec.Struct, frozen=True, kw_only=True):
    """The account's access tokens, revoked ones included."""

    ok: bool = True
    access_tokens: list[AccessTokenView]


class AccessTokenRevokedView(msgspec.Struct, frozen=True, kw_only=True):
    """The token no longer authenticates."""

    ok: bool = True
    access_token: AccessTokenView


class ResourceList(msgspec.Struct, frozen=True, kw_only=True):
    """The account's resources that are not gone, oldest first."""

    ok: bool = True
    resources: list[ResourceInfo]


class CredentialsIssued(msgspec.Struct, frozen=True, kw_only=True):
    """New credentials of a resource (the fields of the create response that change)."""

    ok: bool = True
    id: uuid.UUID
    kind: str
    connection_url: str | None
    credentials: Credentials
    note: str


def _account_view(account: Account) -> AccountView:
    return AccountView(
        id=account.id, email=account.email, tier=account.tier, created_at=account.created_at
    )


def _token_view(token: AccessToken) -> AccessTokenView:
    return AccessTokenView(
        id=token.id,
        name=token.name,
        scopes=list(token.scopes),
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


def _session_issued(ctx: GatewayContext, account: Account) -> SessionIssued:
    session = issue_session(ctx.settings.jwt_key, account.id, ttl_s=ctx.settings.session_ttl_s)
    return SessionIssued(
        account=_account_view(account), token=session.token, expires_at=session.expires_at
    )


# -- register, log in, log out, who am I --------------------------------------------------------


@post(
    "/auth/register",
    status_code=201,
    summary="Create an account",
    description="A new account on the plan new accounts get, and a session token for it."
    " Passwords are 10 to 256 characters; they are kept only as an argon2id hash.",
    tags=["accounts"],
)
async def register(
    request: Request[Any, Any, Any], ctx: GatewayContext, data: EmailPassword
) -> SessionIssued:
    """``POST /auth/register``."""
    account = await register_account(ctx, data, request_id_of(request.scope))
    return _session_issued(ctx, account)


async def register_account(
    ctx: GatewayContext, data: EmailPassword, correlation_id: str
) -> Account:
    """A new account on the plan new accounts get (the email and password checked first)."""
    email = normalise_email(data.email)
    check_new_password(data.password)
    return await ctx.accounts.register(
        email, data.password, tier=ctx.plans.account_tier, correlation_id=correlation_id
    )


@post(
    "/auth/login",
    status_code=200,
    summary="Log in",
    description="A session token for the account with this email and password.",
    tags=["accounts"],
)
async def log_in(ctx: GatewayContext, data: EmailPassword) -> SessionIssued:
    """``POST /auth/login``: one answer for an unknown email and a wrong password."""
    account = await ctx.accounts.log_in(data.email, data.password)
    return _session_issued(ctx, account)


@post(
    "/auth/logout",
    status_code=200,
    summary="Log out",
    description="The session token used for this request stops working.",
    tags=["accounts"],
)
async def log_out(request: Request[Any, Any, Any], ctx: GatewayContext) -> LoggedOut:
    """``POST /auth/logout`` (a session only: access tokens are revoked by id)."""
    principal = await require_principal(request, ctx, "log out")
    if principal.session is None:
        msg = (
            "Logging out ends a session; an access token is revoked with DELETE /auth/tokens/{id}."
        )
        raise SpinupError(ErrorCode.FORBIDDEN, msg)
    await ctx.accounts.revoke_session(
        principal.account_id,
        jti=principal.session.jti,
        expires_at=principal.session.expires_at,
        correlation_id=request_id_of(request.scope),
    )
    return LoggedOut(note="This session token no longer works. Log in again to get a new one.")


@get(
    "/auth/user",
    summary="The account",
    description="The account, how this request authenticated, and the limits of its plan.",
    tags=["accounts"],
)
async def show_user(request: Request[Any, Any, Any], ctx: GatewayContext) -> UserInfo:
    """``GET /auth/user``: any valid credential may ask."""
    principal = await require_principal(request, ctx, "see your account")
    account = await _account_of(ctx, principal)
    return UserInfo(
        account=_account_view(account),
        credential=CredentialInfo(
            type="access_token" if principal.session is None else "session",
            scopes=sorted(scope.value for scope in principal.scopes),
        ),
        plan=ctx.plans.tiers[account.tier],
    )


async def _account_of(ctx: GatewayContext, principal: Principal) -> Account:
    account = await ctx.accounts.get(principal.account_id)
    if account is None:  # pragma: no cover  (authenticate found it a moment ago)
        msg = "This account no longer exists. Register again (POST /auth/register)."
        raise SpinupError(ErrorCode.UNAUTHORIZED, msg)
    return account


# -- personal access tokens ---------------------------------------------------------------------


@post(
    "/auth/tokens",
    status_code=201,
    summary="Create a personal access token",
    description="For the CLI and agents: `Authorization: Bearer spp_…` with only these scopes"
    " (provision, read, delete). The token is shown once. Needs a session.",
    tags=["accounts"],
)
async def create_access_token(
    request: Request[Any, Any, Any], ctx: GatewayContext, data: NewAccessToken
) -> AccessTokenIssued:
    """``POST /auth/tokens``."""
    principal = await require_session_principal(request, ctx, "create access tokens")
    return await issue_access_token(ctx, principal, data, request_id_of(request.scope))


async def issue_access_token(
    ctx: GatewayContext, principal: Principal, data: NewAccessToken, correlation_id: str
) -> AccessTokenIssued:
    """A new personal access token of ``principal``'s account (its secret shown this once)."""
    token = mint_access_token()
    expires_at = (
        datetime.now(UTC).replace(microsecond=0) + timedelta(days=data.expires_in_days)
        if data.expires_in_days
        else None
    )
    record = await ctx.accounts.create_access_token(
        principal.account_id,
        name=data.name,
        # Stored in a fixed order, once each, whatever order the request named them in.
        scopes=[scope.value for scope in Scope if scope in data.scopes],
        token_hash=hash_token(token),
        expires_at=expires_at,
        correlation_id=correlation_id,
    )
    return AccessTokenIssued(
        token=token,
        access_token=_token_view(record),
        note="Copy the token now: it is not shown again. Send it as Authorization: Bearer.",
    )


@get(
    "/auth/tokens",
    summary="List personal access tokens",
    description="Every access token of the account, without secrets. Needs a session.",
    tags=["accounts"],
)
async def list_access_tokens(
    request: Request[Any, Any, Any], ctx: GatewayContext
) -> AccessTokenList:
    """``GET /auth/tokens``."""
    principal = await require_session_principal(request, ctx, "list access tokens")
    tokens = await ctx.accounts.access_tokens(principal.account_id)
    return AccessTokenList(access_tokens=[_token_view(token) for token in tokens])


@delete(
    "/auth/tokens/{token_id:uuid}",
    status_code=200,
    summary="Revoke a personal access token",
    description="The token stops working at once. Needs a session.",
    tags=["accounts"],
)
async def revoke_access_token(
    request: Request[Any, Any, Any], ctx: GatewayContext, token_id: uuid.UUID
) -> AccessTokenRevokedView:
    """``DELETE /auth/tokens/{id}``: revoking twice is harmless."""
    principal = await require_session_principal(request, ctx, "revoke access tokens")
    revoked = await revoke_access_token_of(ctx, principal, token_id, request_id_of(request.scope))
    return AccessTokenRevokedView(access_token=_token_view(revoked))


async def revoke_access_token_of(
    ctx: GatewayContext, principal: Principal, token_id: uuid.UUID, correlation_id: str
) -> AccessToken:
    """Revoke one of ``principal``'s access tokens (revoking twice is harmless)."""
    token = await ctx.accounts.access_token(principal.account_id, token_id)
    if token is None:
        msg = "This account has no access token with this id. GET /auth/tokens lists them."
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    return await ctx.accounts.revoke_access_token(token, correlation_id=correlation_id)


# -- the account's resources --------------------------------------------------------------------

KindParam = Parameter(
    description="Only resources of this kind: " + ", ".join(kind.value for kind in ResourceKind),
)


@get(
    "/resources",
    summary="List the account's resources",
    description="Every resource of the account that is not deleted, oldest first, with status,"
    " limits, usage and credentials. Needs the read scope.",
    tags=["resources"],
)
async def list_resources(
    request: Request[Any, Any, Any], ctx: GatewayContext, kind: str | None = KindParam
) -> ResourceList:
    """``GET /resources?kind=…``."""
    principal = await require_principal(request, ctx, "list your resources")
    principal.require(Scope.READ)
    try:
        only = ResourceKind(kind) if kind is not None else None
    except ValueError:
        kinds = ", ".join(k.value for k in ResourceKind)
        msg = f"kind must be one of {kinds}; got {kind!r}."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg) from None
    states = await ctx.resources.of_account(principal.account_id, only)
    usage = await ctx.resources.usage_of([state.resource_id for state in states])
    return ResourceList(
        resources=[
            resource_info(state, open_credentials(ctx, state), usage.get(state.resource_id))
            for state in states
        ]
    )


@post(
    "/resources/{token:str}/rotate",
    status_code=200,
    summary="Rotate a resource's credentials",
    description="New credentials; the old ones stop working before this answers. The path takes"
    " the resource's token, or its id with Authorization: Bearer of its account (provision"
    " scope). Connection details other than the secret may change too: use the new ones.",
    tags=["resources"],
)
async def rotate_credentials(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    token: str = Parameter(
        description="The resource's token, or its id with Authorization: Bearer of its account."
    ),
) -> CredentialsIssued:
    """``POST /resources/{token}/rotate``."""
    state = await resource_for(request, ctx, token, Scope.PROVISION)
    return await rotate(ctx, state, request_id_of(request.scope))


async def rotate(
    ctx: GatewayContext, state: ResourceState, correlation_id: str
) -> CredentialsIssued:
    """New credentials for a live resource; the old ones stop working before this returns."""
    if state.kind is None:  # pragma: no cover  (a live resource has a kind)
        msg = "This resource was never created."
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    if state.kind is ResourceKind.STACK or state.parent_id is not None:
        # A stack's containers read their backing credentials when they start: rotating one
        # alone would break the running app.
        msg = (
            "A stack and its backing resources have no credentials to rotate on their own;"
            " POST /stacks/{token}/redeploy restarts the app."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    endpoint = ENDPOINTS[state.kind].rotate
    command = RotateCredentials(
        command_id=uuid.uuid4(),
        correlation_id=correlation_id,
        deadline=time.time() + endpoint.timeout,
        resource_id=state.resource_id,
    )
    reply = await ctx.bus.request(endpoint, command)
    return CredentialsIssued(
        id=reply.resource_id,
        kind=state.kind.value,
        connection_url=connection_url_of(reply.credentials),
        credentials=reply.credentials,
        note="The previous credentials no longer work. The resource's token is unchanged.",
    )


AUTH_ROUTES: list[HTTPRouteHandler] = [
    register,
    log_in,
    log_out,
    show_user,
    create_access_token,
    list_access_tokens,
    revoke_access_token,
    list_resources,
    rotate_credentials,
]
