"""Claim: moving anonymous resources into an account.

Every anonymous response carries ``claim_url``: ``{public_url}/claim?t=<claim token>``. The token
is a JWT (HS256 under ``SPINUP_JWT_KEY``, the algorithm pinned on decode) with its own ``aud``
and ``typ``, so a session JWT is never accepted as a claim token nor a claim token as a session.
It names the client network (``fp``, the fingerprint), its id (``jti``: the claim id, hence the
stream ``claim-<jti>``, which makes it single-use), when it was issued (``iat``: resources made
later are not part of it) and when it expires (``exp``: the anonymous tier's TTL, after which
everything it could name is gone anyway). A token may also name exact resources (``rid``): the
Neon-compatible API hands out such tokens, one database each.

``GET /claim/preview?t=…`` (and ``GET /claim?t=…``, where the URL points) shows what would move.
``POST /claim {"token": …}`` with ``Authorization: Bearer`` moves it: ``ClaimStarted`` at version
0 of the claim's stream (the lock: one account wins), one ``ClaimResource`` per resource to its
kind's worker (limits raised in the backend, TTL lifted, ``ResourceClaimed`` recorded), then
``ClaimCompleted``. A retry by the same account resumes; the command ids are derived from the
claim id, so the workers answer a resumed claim idempotently. docs/adr/0007-claim.md explains
why the scope is the client network, and what that costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import jwt
import msgspec
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter

from gateway.accounts.auth import Principal, Scope, authenticate
from gateway.admission.policy import forget_refusals
from gateway.context import GatewayContext
from gateway.http.middleware import request_id_of
from gateway.http.schemas import LimitValue
from shared.contracts.commands import ClaimResource
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.events import ClaimCompleted, ClaimStarted, RecordedEvent
from shared.contracts.kinds import Limits
from shared.contracts.replies import ResourceClaimed
from shared.contracts.subjects import ENDPOINTS
from shared.eventlog.errors import ConcurrencyConflictError

if TYPE_CHECKING:
    from shared.resources import ResourceState

CLAIM_ALGORITHM = "HS256"
CLAIM_ISSUER = "spinup"
CLAIM_AUDIENCE = "spinup-claim"
CLAIM_TYPE = "claim"
_REQUIRED_CLAIMS = ["iss", "aud", "typ", "jti", "fp", "iat", "exp"]
# Fixed namespace: a resumed claim derives the same command ids on any replica.
CLAIM_NAMESPACE = uuid.UUID("5f0c3a2e-8d1b-4c6e-9a7f-2b4d6e8f0a13")
# What a worker answers when the resource went away or another claim took it first: nothing of
# this claim remains to move, which is not a failure of the claim.
_NOT_MOVABLE = {ErrorCode.NOT_FOUND, ErrorCode.RESOURCE_GONE, ErrorCode.FORBIDDEN}

HOW_TO_CLAIM = (
    'POST /claim with {"token": "<this claim token>"} and Authorization: Bearer <session token'
    " or access token with the provision scope>: these resources become permanent resources of"
    " your account, with its plan's limits; their connection URLs do not change."
)
_REGISTER_FIRST = (
    "Create an account with POST /auth/register (or log in with POST /auth/login), then send"
    " this request again with Authorization: Bearer <the token it returns>."
)


@dataclass(frozen=True, slots=True)
class ClaimToken:
    """A verified claim token."""

    claim_id: uuid.UUID
    fingerprint: str
    issued_at: datetime
    expires_at: datetime
    #: The only resources it may move; None: every anonymous resource of the network.
    resource_ids: frozenset[uuid.UUID] | None


def mint_claim_token(
    key: bytes,
    fingerprint: str,
    *,
    ttl_seconds: int,
    resource_ids: Collection[uuid.UUID] | None = None,
    now: float | None = None,
    claim_id: uuid.UUID | None = None,
) -> str:
    """A claim token for the anonymous resources of ``fingerprint``.

    A fresh claim id unless ``claim_id`` is given: the same inputs then give the same token.
    """
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iss": CLAIM_ISSUER,
        "aud": CLAIM_AUDIENCE,
        "typ": CLAIM_TYPE,
        "jti": str(claim_id or uuid.uuid4()),
        "fp": fingerprint,
        # Milliseconds, rounded up: a resource made a moment before its response's token (or at
        # the very instant given as ``now``) must be included.
        "iat": math.ceil(issued * 1000) / 1000,
        "exp": int(issued) + ttl_seconds,
    }
    if resource_ids is not None:
        claims["rid"] = sorted(str(resource_id) for resource_id in resource_ids)
    return jwt.encode(claims, key, algorithm=CLAIM_ALGORITHM)


def _invalid(detail: str) -> SpinupError:
    msg = (
        f"This is not a valid claim token ({detail}). Use the claim_url exactly as a create"
        " response gave it, or the token after ?t= in it."
    )
    return SpinupError(ErrorCode.INVALID_CLAIM_TOKEN, msg)


def read_claim_token(key: bytes, token: str) -> ClaimToken:
    """Verify a claim token.

    Raises:
        SpinupError: ``claim_token_expired`` (410) past its ``exp``; ``invalid_claim_token``
            (400) for a bad signature, another kind of token or anything malformed.
    """
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[CLAIM_ALGORITHM],
            audience=CLAIM_AUDIENCE,
            issuer=CLAIM_ISSUER,
            # iat is a cut-off here, not a validity start: a replica whose clock runs a little
            # behind the one that minted it must still accept it.
            options={"require": _REQUIRED_CLAIMS, "verify_iat": False},
        )
    except jwt.ExpiredSignatureError as exc:
        msg = (
            "This claim link has expired, and so have the anonymous resources it named."
            " Create new ones and use the claim_url of the newest response."
        )
        raise SpinupError(ErrorCode.CLAIM_TOKEN_EXPIRED, msg) from exc
    except jwt.InvalidTokenError as exc:
        raise _invalid("signature, audience or format") from exc
    try:
        if claims["typ"] != CLAIM_TYPE or not isinstance(claims["fp"], str):
            raise _invalid("not a claim token")
        rid = claims.get("rid")
        return ClaimToken(
            claim_id=uuid.UUID(claims["jti"]),
            fingerprint=claims["fp"],
            issued_at=datetime.fromtimestamp(float(claims["iat"]), UTC),
            expires_at=datetime.fromtimestamp(float(claims["exp"]), UTC),
            resource_ids=None if rid is None else frozenset(uuid.UUID(r) for r in rid),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise _invalid("malformed claims") from exc


def claim_url(
    ctx: GatewayContext,
    fingerprint: str,
    *,
    resource_ids: Sequence[uuid.UUID] | None = None,
    made_with: tuple[uuid.UUID, datetime] | None = None,
) -> str:
    """The URL that claims every anonymous resource of this client network made until now.

    With ``resource_ids``, the URL claims only those. ``made_with`` (resource id, created at)
    ties the token to the response that creates that resource: a replayed response (same
    Idempotency-Key) then carries the same URL.
    """
    # The anonymous tier always has a TTL (plans.py refuses a file without one).
    ttl = ctx.plans.anonymous.ttl_seconds or 0
    now, claim_id = None, None
    if made_with is not None:
        resource_id, created_at = made_with
        now, claim_id = (
            created_at.timestamp(),
            uuid.uuid5(CLAIM_NAMESPACE, f"claim-id|{resource_id}"),
        )
    token = mint_claim_token(
        ctx.settings.jwt_key,
        fingerprint,
        ttl_seconds=ttl,
        resource_ids=resource_ids,
        now=now,
        claim_id=claim_id,
    )
    return f"{ctx.settings.public_url}/claim?t={token}"


def token_text(value: str) -> str:
    """The claim token, also when given as the whole claim URL (agents often pass the URL)."""
    if "?" in value:
        return parse_qs(urlsplit(value.strip()).query).get("t", [""])[0]
    return value.strip()


def claim_stream(claim_id: uuid.UUID) -> str:
    """The event stream of one claim (one claim token)."""
    return f"claim-{claim_id}"


async def claimable(ctx: GatewayContext, token: ClaimToken) -> list[ResourceState]:
    """The live, unclaimed, anonymous resources the token names, oldest first."""
    return [
        state
        for state in await ctx.resources.unclaimed_of_fingerprint(token.fingerprint)
        if state.created_at is not None
        and state.created_at <= token.issued_at
        and (token.resource_ids is None or state.resource_id in token.resource_ids)
    ]


# -- HTTP bodies --------------------------------------------------------------------------------


class ClaimableResource(msgspec.Struct, frozen=True, kw_only=True):
    """One resource a claim would move: its limits now and after the claim."""

    id: uuid.UUID
    kind: str
    name: str | None
    created_at: datetime | None
    expires_at: datetime | None
    tier: str
    limits: dict[str, LimitValue]
    tier_after_claim: str
    limits_after_claim: dict[str, LimitValue]


class ClaimPreview(msgspec.Struct, frozen=True, kw_only=True):
    """What ``POST /claim`` with this token would move (credentials are never shown here)."""

    ok: bool = True
    claim_id: uuid.UUID
    token_expires_at: datetime
    #: True once a claim with this token has started: it works only to finish that claim.
    used: bool
    resources: list[ClaimableResource]
    how_to_claim: str


class ClaimRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /claim``."""

    token: str


class ClaimedResource(msgspec.Struct, frozen=True, kw_only=True):
    """A resource now in the account: permanent, with the account's limits in its backend."""

    id: uuid.UUID
    kind: str
    name: str | None
    tier: str
    limits: dict[str, LimitValue]
    expires_at: datetime | None


class ClaimResult(msgspec.Struct, frozen=True, kw_only=True):
    """The resources the claim moved into the account."""

    ok: bool = True
    claim_id: uuid.UUID
    account_id: uuid.UUID
    resources: list[ClaimedResource]
    note: str


def _limits_fields(limits: Limits | None) -> dict[str, LimitValue]:
    return {} if limits is None else msgspec.structs.asdict(limits)


# -- routes -------------------------------------------------------------------------------------

TokenQuery = Parameter(
    description="The claim token: the part after ?t= in a create response's claim_url."
)


PREVIEW_SUMMARY = "Preview a claim"
PREVIEW_DESCRIPTION = (
    "Which anonymous resources a claim token would move into an account, with their"
    " limits now and after the claim. Nothing changes; no credentials are shown."
)


@get("/claim/preview", summary=PREVIEW_SUMMARY, description=PREVIEW_DESCRIPTION, tags=["claim"])
async def preview_claim(
    request: Request[Any, Any, Any], ctx: GatewayContext, t: str = TokenQuery
) -> ClaimPreview:
    """``GET /claim/preview?t=…``.

    ``GET /claim?t=…``, where claim URLs point, is the console's: this same preview for API
    clients, the claim page for browsers.
    """
    return await claim_preview(ctx, await authenticate(request, ctx), t)


async def claim_preview(ctx: GatewayContext, principal: Principal | None, t: str) -> ClaimPreview:
    """What a claim token would move, with the limits ``principal``'s plan would give them."""
    token = read_claim_token(ctx.settings.jwt_key, token_text(t))
    tier_name = principal.tier if principal else ctx.plans.account_tier
    tier = ctx.plans.tiers[tier_name]
    resources = [
        ClaimableResource(
            id=state.resource_id,
            kind=state.kind.value,
            name=state.name,
            created_at=state.created_at,
            expires_at=state.expires_at,
            tier=state.tier or "",
            limits=_limits_fields(state.limits),
            tier_after_claim=tier_name,
            limits_after_claim=_limits_fields(tier.limits(state.kind)),
        )
        for state in await claimable(ctx, token)
        if state.kind is not None
    ]
    return ClaimPreview(
        claim_id=token.claim_id,
        token_expires_at=token.expires_at,
        used=bool(await ctx.store.load(claim_stream(token.claim_id))),
        resources=resources,
        how_to_claim=HOW_TO_CLAIM,
    )


@post(
    "/claim",
    status_code=200,
    summary="Claim anonymous resources",
    description="Moves the resources a claim token names into the caller's account: their TTL"
    " is lifted, the account plan's limits are applied in each backend, and their connection"
    " URLs and credentials stay as they are. A claim token works once; sending it again after"
    " a failure resumes the same claim.",
    tags=["claim"],
)
async def claim(
    request: Request[Any, Any, Any], ctx: GatewayContext, data: ClaimRequest
) -> ClaimResult:
    """``POST /claim {"token": …}`` with ``Authorization: Bearer``."""
    principal = await authenticate(request, ctx)
    if principal is None:
        msg = "Claiming needs an account: this request carries no Authorization header."
        raise SpinupError(ErrorCode.UNAUTHORIZED, msg, agent_action=_REGISTER_FIRST)
    principal.require(Scope.PROVISION)
    return await claim_resources(ctx, principal, data.token, request_id_of(request.scope))


async def claim_resources(
    ctx: GatewayContext, principal: Principal, raw_token: str, correlation_id: str
) -> ClaimResult:
    """Move what the claim token (or the claim URL) names into ``principal``'s account."""
    token = read_claim_token(ctx.settings.jwt_key, token_text(raw_token))
    store = ctx.store
    stream = claim_stream(token.claim_id)

    recorded = await store.load(stream)
    if not recorded:
        states = await claimable(ctx, token)
        if not states:
            msg = (
                "This claim token names no live anonymous resource: they were claimed, deleted"
                " or have expired."
            )
            raise SpinupError(ErrorCode.NOTHING_TO_CLAIM, msg)
        started = ClaimStarted(
            claim_id=token.claim_id,
            account_id=principal.account_id,
            fingerprint=token.fingerprint,
            resource_ids=[state.resource_id for state in states],
        )
        try:
            recorded = await store.append(
                stream,
                0,
                [started],
                command_id=uuid.uuid5(CLAIM_NAMESPACE, f"started|{token.claim_id}"),
                correlation_id=correlation_id,
            )
        except ConcurrencyConflictError:
            recorded = await store.load(stream)  # a concurrent request won: decide on its start
    resource_ids = _resumable(recorded, principal)

    moved = await _move(ctx, principal, token.claim_id, resource_ids, correlation_id)
    completed = ClaimCompleted(
        claim_id=token.claim_id,
        account_id=principal.account_id,
        resource_ids=[resource.id for resource in moved],
    )
    # A concurrent resume by the same account may have completed it first: the same outcome.
    with contextlib.suppress(ConcurrencyConflictError):
        await store.append(
            stream,
            len(recorded),
            [completed],
            command_id=uuid.uuid5(CLAIM_NAMESPACE, f"completed|{token.claim_id}"),
            correlation_id=correlation_id,
        )
    # The network no longer holds what moved: refusals of its caps no longer hold.
    await forget_refusals(ctx, account_id=None, fingerprint=token.fingerprint)
    if not moved:
        msg = "Nothing was left to claim: the resources were deleted, expired or claimed meanwhile."
        raise SpinupError(ErrorCode.NOTHING_TO_CLAIM, msg)
    return ClaimResult(
        claim_id=token.claim_id,
        account_id=principal.account_id,
        resources=moved,
        note=(
            f"{len(moved)} resource(s) now belong to your account on the {principal.tier}"
            " plan: no expiry, the plan's limits, the same connection URLs and tokens."
        ),
    )


def _resumable(recorded: list[RecordedEvent], principal: Principal) -> list[uuid.UUID]:
    """The resources of a started claim this account may (still) move, or the right 409."""
    started = recorded[0].event
    if not isinstance(started, ClaimStarted):  # pragma: no cover  (claim streams start so)
        msg = "This claim's record is unreadable."
        raise SpinupError(ErrorCode.INTERNAL_ERROR, msg)
    if started.account_id != principal.account_id:
        msg = (
            "This claim token was already used by another account. Claim links work once:"
            " use the claim_url of a newer create response, which names what is still unclaimed."
        )
        raise SpinupError(ErrorCode.CLAIM_ALREADY_USED, msg)
    if any(isinstance(event.event, ClaimCompleted) for event in recorded):
        msg = (
            "You already claimed these resources with this token; GET /resources lists them in"
            " your account."
        )
        raise SpinupError(ErrorCode.CLAIM_ALREADY_USED, msg)
    return list(started.resource_ids)


async def _move(
    ctx: GatewayContext,
    principal: Principal,
    claim_id: uuid.UUID,
    resource_ids: list[uuid.UUID],
    correlation_id: str,
) -> list[ClaimedResource]:
    """Send every resource's ClaimResource at once; the ones that went away are left out.

    Raises:
        SpinupError: the first failure other than "gone" or "taken", after every command has
            been answered (sending the same token again resumes the claim).
    """
    tier = ctx.plans.tiers[principal.tier]

    async def move(resource_id: uuid.UUID) -> ClaimedResource | None:
        state = await ctx.resources.by_id(resource_id)
        if state is None or state.kind is None:
            return None
        endpoint = ENDPOINTS[state.kind].claim
        command = ClaimResource(
            command_id=uuid.uuid5(CLAIM_NAMESPACE, f"resource|{claim_id}|{resource_id}"),
            correlation_id=correlation_id,
            deadline=time.time() + endpoint.timeout,
            resource_id=resource_id,
            account_id=principal.account_id,
            claim_id=claim_id,
            tier=principal.tier,
            limits=tier.limits(state.kind),
        )
        try:
            reply: ResourceClaimed = await ctx.bus.request(endpoint, command)
        except SpinupError as exc:
            if exc.code in _NOT_MOVABLE:
                return None
            raise
        return ClaimedResource(
            id=reply.resource_id,
            kind=state.kind.value,
            name=state.name,
            tier=reply.tier,
            limits=_limits_fields(reply.limits),
            expires_at=None,  # a claim lifts the TTL (ResourceClaimed)
        )

    outcomes = await asyncio.gather(*(move(rid) for rid in resource_ids), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            if isinstance(outcome, SpinupError):
                msg = f"{outcome.message} Send the same claim token again to finish the claim."
                raise SpinupError(
                    outcome.code,
                    msg,
                    retryable=outcome.retryable,
                    retry_after_s=outcome.retry_after_s,
                ) from outcome
            raise outcome
    return [outcome for outcome in outcomes if isinstance(outcome, ClaimedResource)]


CLAIM_ROUTES: list[HTTPRouteHandler] = [preview_claim, claim]
