"""HTTP routes: provisioning, resource management, health."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter

from gateway.context import GatewayContext
from gateway.middleware import request_id_of
from gateway.schemas import (
    DatabaseCreated,
    Health,
    Limits,
    NewDatabase,
    ResourceDeleted,
    ResourceInfo,
)
from shared.contracts.commands import DeprovisionResource, ProvisionResource
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import Credentials, DeprovisionReason, ResourceKind, ResourceStatus
from shared.contracts.subjects import DEPROVISION_ENDPOINTS, PROVISION_POSTGRES
from shared.crypto.tokens import fingerprint, hash_token, looks_like_token, mint_token
from shared.resources import ResourceState

# Fixed namespace: ids derived from an Idempotency-Key are stable across restarts and replicas.
IDEMPOTENCY_NAMESPACE = uuid.UUID("8a6f1f8e-3c0e-4d55-9a57-2f6f3b1c9d21")
_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_credentials_decoder: msgspec.json.Decoder[Credentials] = msgspec.json.Decoder(Credentials)


def provide_context(state: State) -> GatewayContext:
    """Dependency: the context built by the lifespan."""
    context: GatewayContext = state.context
    return context


dependencies = {"ctx": Provide(provide_context, sync_to_thread=False)}


def _client_ip(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def _command_ids(request: Request[Any, Any, Any], route: str) -> tuple[uuid.UUID, uuid.UUID]:
    """(command id, resource id): derived from the Idempotency-Key when one is given.

    The key is scoped to the client address and the route, so two clients who pick the same key
    never share a resource.
    """
    key = request.headers.get("idempotency-key")
    if key is None:
        return uuid.uuid4(), uuid.uuid4()
    if not _IDEMPOTENCY_KEY_RE.match(key):
        msg = "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is ideal)."
        raise SpinupError(ErrorCode.INVALID_IDEMPOTENCY_KEY, msg)
    scope = f"{_client_ip(request)}|{route}|{key}"
    return (
        uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"command|{scope}"),
        uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"resource|{scope}"),
    )


def _seconds_left(expires_at: datetime | None) -> int | None:
    if expires_at is None:
        return None
    return max(0, int((expires_at - datetime.now(UTC)).total_seconds()))


def _note(tier: str, expires_at: datetime | None) -> str:
    keep = "Keep the token: GET or DELETE /resources/{token} manages this database."
    if expires_at is None:
        return f"Permanent database on the {tier} plan. {keep}"
    when = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"Temporary database: it is deleted at {when}. {keep}"


@post(
    "/db/new",
    status_code=201,
    summary="Create a Postgres database",
    description=(
        "Creates a real, isolated Postgres database and returns its connection URL. Without an"
        " account it lives for the anonymous tier's TTL. Send an Idempotency-Key header to make"
        " retries safe: the same key returns the same database."
    ),
    tags=["provisioning"],
)
async def create_database(
    request: Request[Any, Any, Any], ctx: GatewayContext, data: NewDatabase | None = None
) -> Response[DatabaseCreated]:
    """``POST /db/new``."""
    command_id, resource_id = _command_ids(request, "POST /db/new")
    tier_name, tier = ctx.plans.anonymous_tier, ctx.plans.anonymous
    token = mint_token(ctx.settings.token_key, command_id)
    now = datetime.now(UTC)
    command = ProvisionResource(
        command_id=command_id,
        correlation_id=request_id_of(request.scope),
        deadline=time.time() + PROVISION_POSTGRES.timeout,
        resource_id=resource_id,
        kind=ResourceKind.POSTGRES,
        tier=tier_name,
        limits=tier.postgres.limits(),
        token_hash=hash_token(token),
        fingerprint=fingerprint(ctx.settings.token_key, _client_ip(request)),
        name=data.name if data else None,
        expires_at=now + timedelta(seconds=tier.ttl_seconds) if tier.ttl_seconds else None,
    )
    reply = await ctx.bus.request(PROVISION_POSTGRES, command)
    body = DatabaseCreated(
        id=reply.resource_id,
        token=token,
        connection_url=reply.credentials.connection_url,
        tier=reply.tier,
        limits=Limits(
            storage_mb=reply.limits.storage_mb,
            connections=reply.limits.connections,
            expires_in=_seconds_left(reply.expires_at),
        ),
        expires_at=reply.expires_at,
        claim_url=None,
        note=_note(reply.tier, reply.expires_at),
    )
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else {}
    return Response(body, status_code=201, headers=headers)


async def _resource_for(ctx: GatewayContext, token: str) -> ResourceState:
    """The live resource a token names, or the right 404/410."""
    state = (
        await ctx.resources.by_token_hash(hash_token(token)) if looks_like_token(token) else None
    )
    if state is None or state.status in {ResourceStatus.DELETED, ResourceStatus.NONE}:
        msg = "No resource has this token (or it was deleted). Tokens start with spn_."
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    if state.status is ResourceStatus.EXPIRED:
        when = state.expires_at.isoformat() if state.expires_at else "its expiry"
        msg = f"This resource expired at {when} and was deleted. Create a new one."
        raise SpinupError(ErrorCode.RESOURCE_GONE, msg)
    return state


TokenParam = Parameter(description="The token returned when the resource was created.")


@get("/resources/{token:str}", summary="Show a resource", tags=["resources"])
async def show_resource(ctx: GatewayContext, token: str = TokenParam) -> ResourceInfo:
    """``GET /resources/{token}``."""
    state = await _resource_for(ctx, token)
    connection_url = None
    if state.credentials_sealed is not None:
        raw = ctx.keyring.open(state.credentials_sealed, aad=state.resource_id.bytes)
        connection_url = _credentials_decoder.decode(raw).connection_url
    limits = state.limits
    return ResourceInfo(
        id=state.resource_id,
        kind=state.kind.value if state.kind else "unknown",
        status=state.status.value,
        tier=state.tier or "",
        name=state.name,
        limits=Limits(
            storage_mb=limits.storage_mb if limits else 0,
            connections=limits.connections if limits else 0,
            expires_in=_seconds_left(state.expires_at),
        ),
        created_at=state.created_at,
        expires_at=state.expires_at,
        connection_url=connection_url,
    )


@delete("/resources/{token:str}", status_code=200, summary="Delete a resource", tags=["resources"])
async def delete_resource(
    request: Request[Any, Any, Any], ctx: GatewayContext, token: str = TokenParam
) -> ResourceDeleted:
    """``DELETE /resources/{token}``: the credentials stop working at once."""
    state = await _resource_for(ctx, token)
    if state.kind is None:
        msg = "This resource was never created."
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    endpoint = DEPROVISION_ENDPOINTS[state.kind]
    command = DeprovisionResource(
        command_id=uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"delete|{state.resource_id}"),
        correlation_id=request_id_of(request.scope),
        deadline=time.time() + endpoint.timeout,
        resource_id=state.resource_id,
        reason=DeprovisionReason.DELETED,
    )
    reply = await ctx.bus.request(endpoint, command)
    return ResourceDeleted(id=reply.resource_id, status=ResourceStatus.DELETED.value)


@get("/healthz", summary="Liveness", tags=["health"])
async def healthz() -> Health:
    """The process is up and serving."""
    return Health(ok=True, checks={"process": "ok"})


@get("/readyz", summary="Readiness: NATS and the platform database", tags=["health"])
async def readyz(ctx: GatewayContext) -> Response[Health]:
    """Ready when NATS is connected and the platform database answers.

    Redis is reported but optional: rate limits fail open without it.
    """
    checks: dict[str, str] = {"nats": "ok" if ctx.bus.nc.is_connected else "unavailable"}
    try:
        await asyncio.wait_for(ctx.pool.fetchval("SELECT 1"), timeout=1.0)
        checks["postgres"] = "ok"
    except Exception:  # noqa: BLE001  (any failure means not ready)
        checks["postgres"] = "unavailable"
    try:
        await asyncio.wait_for(ctx.redis.ping(), timeout=0.5)
        checks["redis"] = "ok"
    except Exception:  # noqa: BLE001
        checks["redis"] = "unavailable (optional)"
    ready = checks["nats"] == "ok" and checks["postgres"] == "ok"
    return Response(Health(ok=ready, checks=checks), status_code=200 if ready else 503)


ROUTES = [create_database, show_resource, delete_resource, healthz, readyz]
