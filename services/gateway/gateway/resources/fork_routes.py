"""``POST /resources/{token}/fork``: a new resource starting with a copy of another's data.

Admitted and provisioned exactly like ``POST /<kind>/new`` for the caller (anonymous caps and
rate limits, or the Bearer account's plan); the worker copies the source's data into the new
resource (docs/adr/0028-fork.md). Postgres only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, post

from gateway.accounts.auth import Scope
from gateway.context import GatewayContext
from gateway.http.schemas import ForkResource, ResourceCreated
from gateway.resources.routes import (
    KIND_ROUTES,
    TokenOrIdParam,
    _command_ids,
    created_response,
    creating_caller,
    provision,
    resource_for,
)
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import ResourceKind

#: Kinds whose worker can copy a resource's data into a new one.
FORKABLE = (ResourceKind.POSTGRES,)
_NOUNS = {route.kind: route.noun for route in KIND_ROUTES}


@post(
    "/resources/{token:str}/fork",
    status_code=201,
    summary="Fork a Postgres database",
    description="A new Postgres database holding a copy of this one's data (tables, sequences,"
    " indexes, functions), with its own credentials: the answer is that of POST /db/new plus"
    " `forked_from`. The source is only read; its sessions go on. The fork is a create for the"
    " caller: anonymous caps and rate limits, or the plan of the account in Authorization:"
    " Bearer. Optional body: `name`, `ttl_seconds`. Send an Idempotency-Key header to make"
    " retries safe. Only Postgres databases can be forked (400 otherwise).",
    tags=["provisioning"],
    operation_id="fork_resource",
)
async def fork_resource(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    data: ForkResource | None = None,
    token: str = TokenOrIdParam,
) -> Response[ResourceCreated]:
    """``POST /resources/{token}/fork``."""
    principal, client, account_id, holder = await creating_caller(request, ctx)
    source = await resource_for(request, ctx, token, Scope.READ)
    if source.expires_at is not None and source.expires_at <= datetime.now(UTC):
        # Past its expiry, waiting for the reaper: its data is no longer the caller's to copy.
        msg = f"This resource expired at {source.expires_at.isoformat()}; it cannot be forked."
        raise SpinupError(ErrorCode.RESOURCE_GONE, msg)
    if source.kind not in FORKABLE:
        kind = source.kind.value if source.kind else "unknown"
        supported = ", ".join(f"{k.value} (POST /{_path(k)}/new)" for k in FORKABLE)
        msg = f"Only these kinds can be forked: {supported}; this resource is {kind}."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    # The key is scoped to the source: one key forks each source once.
    route_key = f"POST /resources/{source.resource_id}/fork"
    reply, new_token = await provision(
        request,
        ctx,
        kind=source.kind,
        principal=principal,
        client=client,
        ids=_command_ids(request, route_key, holder, data),
        name=data.name if data else None,
        ttl_seconds=data.ttl_seconds if data else None,
        fork_of=source.resource_id,
    )
    return created_response(
        ctx,
        reply,
        new_token,
        noun=_NOUNS[source.kind],
        name=data.name if data else None,
        client=client,
        account_id=account_id,
        forked_from=source.resource_id,
    )


def _path(kind: ResourceKind) -> str:
    return next(route.path for route in KIND_ROUTES if route.kind is kind)


FORK_ROUTES = [fork_resource]
