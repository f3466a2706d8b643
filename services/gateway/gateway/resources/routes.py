"""HTTP routes: provisioning, resource management, health."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from gateway.accounts.auth import Principal, Scope, authenticate
from gateway.admission.clients import client_ip
from gateway.admission.policy import forget_refusals, remember_refusal, spend_rate
from gateway.claims.routes import claim_url
from gateway.console.links import DASHBOARD_PATH, console_url
from gateway.context import GatewayContext
from gateway.http.middleware import request_id_of
from gateway.http.schemas import (
    BackingResourceInfo,
    Health,
    LimitValue,
    NewResource,
    PlansInfo,
    ResourceCreated,
    ResourceDeleted,
    ResourceInfo,
    StackDetails,
    StackServiceInfo,
    Usage,
)
from gateway.resources.lifetime import expires_at_for, notify_target_at_create
from gateway.resources.outbound import check_url
from shared.contracts.commands import DeprovisionResource, ProvisionResource
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import (
    EXPORT_FORMATS,
    Credentials,
    DeprovisionReason,
    Limits,
    ResourceKind,
    ResourceStatus,
    StackCredentials,
    connection_url_of,
    quota_bytes,
)
from shared.contracts.replies import ResourceProvisioned
from shared.contracts.subjects import DEPROVISION_ENDPOINTS, PROVISION_ENDPOINTS
from shared.crypto.tokens import fingerprint, hash_token, looks_like_token, mint_token
from shared.naming import resource_stream
from shared.observability import metrics
from shared.plans import Tier
from shared.resources import ResourceState
from shared.stacks.state import StackView

# Fixed namespace: ids derived from an Idempotency-Key are stable across restarts and replicas.
IDEMPOTENCY_NAMESPACE = uuid.UUID("8a6f1f8e-3c0e-4d55-9a57-2f6f3b1c9d21")
_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_credentials_decoder: msgspec.json.Decoder[Credentials] = msgspec.json.Decoder(Credentials)


def provide_context(state: State) -> GatewayContext:
    """Dependency: the context built by the lifespan."""
    context: GatewayContext = state.context
    return context


dependencies = {"ctx": Provide(provide_context, sync_to_thread=False)}


def _command_ids(
    request: Request[Any, Any, Any], route: str, holder: str, body: msgspec.Struct | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    """(command id, resource id): derived from the Idempotency-Key when one is given.

    The key is scoped to the holder (the account, or the client address) and the route, so two
    clients who pick the same key never share a resource. The command id (and so the token) also
    derives from the decoded ``body``: the same key with another body yields another token than
    the resource's, which ``provision`` answers with 422 (ADR 0026). An empty body counts as none.
    """
    key = request.headers.get("idempotency-key")
    if key is None:
        return uuid.uuid4(), uuid.uuid4()
    if not _IDEMPOTENCY_KEY_RE.match(key):
        msg = "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is ideal)."
        raise SpinupError(ErrorCode.INVALID_IDEMPOTENCY_KEY, msg)
    scope = f"{holder}|{route}|{key}"
    sent = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None} if body else {}
    # Fields left out do not count, so a field added to the body later changes no digest.
    digest = hashlib.sha256(msgspec.json.encode(sent, order="sorted")).hexdigest() if sent else ""
    return (
        uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"command|{scope}" + (f"|{digest}" if digest else "")),
        uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"resource|{scope}"),
    )


def _ensure_same_request(state: ResourceState | None, token: str) -> None:
    """Refuse a reused Idempotency-Key whose first request had another body (422).

    The resource's token derives from its first request's body (``_command_ids``): another
    body, another token. Handing it back would give the caller a token that is not this
    resource's; silently making a second resource would break the key's promise.
    """
    if state is None or state.token_hash is None or state.token_hash == hash_token(token):
        return
    msg = (
        "This Idempotency-Key was first used with a different request body; a retry must send"
        " the same body."
    )
    action = "Resend the first request's body with this key, or use a new key for a new resource."
    raise SpinupError(ErrorCode.IDEMPOTENCY_KEY_MISMATCH, msg, agent_action=action)


def _seconds_left(expires_at: datetime | None) -> int | None:
    if expires_at is None:
        return None
    return max(0, int((expires_at - datetime.now(UTC)).total_seconds()))


def _limits_view(limits: Limits | None, expires_at: datetime | None) -> dict[str, LimitValue]:
    """The kind's limits as plain fields, plus ``expires_in`` (seconds left; null: permanent)."""
    fields: dict[str, LimitValue] = {} if limits is None else msgspec.structs.asdict(limits)
    fields["expires_in"] = _seconds_left(expires_at)
    return fields


@dataclass(frozen=True, slots=True)
class KindRoute:
    """How one kind is offered over HTTP: ``POST /<path>/new`` and the words used about it."""

    kind: ResourceKind
    path: str
    noun: str
    summary: str
    description: str
    #: What a tenant over quota can do, shown with the usage; None for kinds without a quota.
    over_quota: str | None


KIND_ROUTES = [
    KindRoute(
        kind=ResourceKind.POSTGRES,
        path="db",
        noun="database",
        summary="Create a Postgres database",
        description="A real Postgres database and role of its own; `connection_url` is a"
        " postgresql:// URL for any driver.",
        over_quota=(
            "New sessions are read-only. To free space run `SET default_transaction_read_only = "
            "off`, then TRUNCATE or DROP what you no longer need (DELETE alone does not shrink the "
            "files); writing on instead closes the database to connections."
        ),
    ),
    KindRoute(
        kind=ResourceKind.REDIS,
        path="cache",
        noun="cache",
        summary="Create a Redis cache",
        description="An ACL user on a shared Redis that may use only keys and channels starting"
        " with `credentials.key_prefix`; `connection_url` is a redis:// URL. redis-py's Lock and"
        " MEMORY USAGE work; EVAL and SCRIPT LOAD (BullMQ, Lua rate limiters), SCAN, KEYS, INFO"
        " and DBSIZE are refused with NoPermissionError: keep a set of your keys instead of"
        " scanning.",
        over_quota=(
            "Write commands are refused; reads work. DEL, UNLINK or EXPIRE keys to free memory."
        ),
    ),
    KindRoute(
        kind=ResourceKind.MONGO,
        path="nosql",
        noun="MongoDB database",
        summary="Create a MongoDB database",
        description="A MongoDB database and a user with readWrite on it only; `connection_url`"
        " is a mongodb:// URL.",
        over_quota=(
            "Inserts and updates are refused; finds work. Delete documents or drop collections to "
            "free space."
        ),
    ),
    KindRoute(
        kind=ResourceKind.NATS,
        path="queue",
        noun="NATS account",
        summary="Create a NATS JetStream account",
        description="A NATS account of its own with JetStream limits from the plan;"
        " `credentials.creds` is the text of a standard .creds file. Streams and KV buckets need"
        " no max_bytes: together they stop at the account's storage.",
        over_quota=(
            "The server refuses new JetStream messages; purge or delete streams to free storage."
        ),
    ),
    KindRoute(
        kind=ResourceKind.S3,
        path="storage",
        noun="bucket",
        summary="Create an S3 bucket",
        description="An S3 bucket and an access key whose policy names only that bucket, with"
        " a quota from the plan.",
        over_quota="Uploads are refused; downloads work. Delete objects to free space.",
    ),
    KindRoute(
        kind=ResourceKind.WEBHOOK,
        path="webhook",
        noun="webhook receiver",
        summary="Create a webhook receiver",
        description="A URL that captures any request sent to it; read them back with"
        " GET /webhook/{token}/requests or follow them live with GET /webhook/{token}/stream.",
        over_quota=None,
    ),
]


@dataclass(frozen=True, slots=True)
class StackPart:
    """A resource made by a stack create: admitted with the whole stack, expiring with it.

    ``parent_id``: the stack, for its backing resources (None for the stack itself).
    """

    expires_at: datetime | None
    parent_id: uuid.UUID | None


def _note(noun: str, tier: str, expires_at: datetime | None) -> str:
    keep = f"Keep the token: GET or DELETE /resources/{{token}} manages this {noun}."
    if expires_at is None:
        return f"Permanent {noun} on the {tier} plan. {keep}"
    when = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"Temporary {noun}: it is deleted at {when}. {keep}"


class Caller(NamedTuple):
    """Who asks for a create (or a fork, or a stack)."""

    #: None: anonymous.
    principal: Principal | None
    #: The client address's fingerprint (caps and rate limits of anonymous creates).
    client: str
    account_id: uuid.UUID | None
    #: What an Idempotency-Key is scoped to: the account, else the client address.
    holder: str


async def creating_caller(request: Request[Any, Any, Any], ctx: GatewayContext) -> Caller:
    """The caller of a create, refused unless anonymous or allowed to provision.

    Raises:
        SpinupError: a Bearer token that is not valid or lacks the ``provision`` scope.
    """
    principal = await authenticate(request, ctx)
    if principal is not None:
        principal.require(Scope.PROVISION)
    address = client_ip(request, ctx.settings.trusted_proxies)
    account_id = principal.account_id if principal else None
    holder = f"account:{account_id}" if account_id else address
    return Caller(principal, fingerprint(ctx.settings.token_key, address), account_id, holder)


async def provision(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    *,
    kind: ResourceKind,
    principal: Principal | None,
    client: str,
    ids: tuple[uuid.UUID, uuid.UUID],
    name: str | None,
    part_of_stack: StackPart | None = None,
    ttl_seconds: int | None = None,
    fork_of: uuid.UUID | None = None,
    new_ids: bool = False,
) -> tuple[ResourceProvisioned, str]:
    """Admit and provision one resource: the recipe every create route follows.

    ``principal`` None: anonymous, from the client network ``client``. ``ids`` are the
    (command id, resource id). Returns the worker's reply and the resource's token.

    ``part_of_stack``: the stack route admitted this resource with its whole stack and fixed its
    expiry (a stack and its backing resources expire together). ``ttl_seconds``: the lifetime
    asked for, within the tier's ``lifetime`` bounds (checked before admission: a 400 costs
    nothing). ``fork_of``: the live resource whose data the new one starts with (ADR 0028).
    ``new_ids``: ``ids`` were made for this request alone (``ProvisionResource.new_ids``).
    """
    endpoint = PROVISION_ENDPOINTS[kind]
    account_id = principal.account_id if principal else None
    tier_name = principal.tier if principal else ctx.plans.anonymous_tier
    tier = ctx.plans.tiers[tier_name]
    asked_expiry = expires_at_for(tier_name, tier, kind, ttl_seconds, datetime.now(UTC))
    command_id, resource_id = ids
    # A retry of a create already made (same Idempotency-Key) gets that resource again: the rate
    # limit counted it the first time. Without a key the ids are new: nothing to look up.
    retried = "idempotency-key" in request.headers and await ctx.resources.by_id(resource_id)
    if retried:
        _ensure_same_request(retried, mint_token(ctx.settings.token_key, command_id))
    if not retried and part_of_stack is None:
        try:
            await spend_rate(ctx, tier=tier, account_id=account_id, fingerprint=client, kind=kind)
        except SpinupError as exc:
            # Refused before any command: counted here, the worker's outcomes by the bus.
            metrics.PROVISIONS.labels(kind=kind.value, outcome=exc.code.value).inc()
            raise
    token = mint_token(ctx.settings.token_key, command_id)
    expires_at = part_of_stack.expires_at if part_of_stack is not None else asked_expiry
    command = ProvisionResource(
        command_id=command_id,
        correlation_id=request_id_of(request.scope),
        deadline=time.time() + endpoint.timeout,
        resource_id=resource_id,
        kind=kind,
        tier=tier_name,
        limits=tier.limits(kind),
        token_hash=hash_token(token),
        fingerprint=client,
        name=name,
        expires_at=expires_at,
        account_id=account_id,
        parent_id=part_of_stack.parent_id if part_of_stack else None,
        fork_of=fork_of,
        export_grace_seconds=_export_grace(tier, kind, expires_at, part_of_stack),
        new_ids=new_ids,
        # Counted by the append that records the intent (ADR 0040); a stack counted its own.
        caps=tier.caps if part_of_stack is None else None,
    )
    try:
        reply = await ctx.bus.request(endpoint, command)
    except SpinupError as exc:
        if exc.code is ErrorCode.PLAN_LIMIT_REACHED and command.caps is not None:
            # Recalled by the next create's rate limit, which refuses it without a command.
            await remember_refusal(
                ctx, exc, kind=kind, tier=tier, account_id=account_id, fingerprint=client
            )
        raise
    if reply.replayed and not retried:
        # Two first tries with one key raced and this one lost: is it the same request?
        _ensure_same_request(await ctx.resources.by_id(resource_id), token)
    return reply, token


def _export_grace(
    tier: Tier, kind: ResourceKind, expires_at: datetime | None, part_of_stack: StackPart | None
) -> int:
    """How long the data outlives expiry for an export (ADR 0030).

    The plan's grace, for a kind that exports; none for a stack and its backing resources,
    which go at expiry together.
    """
    if expires_at is None or part_of_stack is not None or kind not in EXPORT_FORMATS:
        return 0
    return tier.lifetime.export_grace_seconds if tier.lifetime else 0


def _create_handler(route: KindRoute) -> HTTPRouteHandler:
    route_key = f"POST /{route.path}/new"

    async def create_resource(
        request: Request[Any, Any, Any], ctx: GatewayContext, data: NewResource | None = None
    ) -> Response[ResourceCreated]:
        principal, client, account_id, holder = await creating_caller(request, ctx)
        notify_url = data.notify_url if data else None
        if notify_url is not None:
            await check_url(notify_url, ctx.settings.notify_allowed_networks)
        reply, token = await provision(
            request,
            ctx,
            kind=route.kind,
            principal=principal,
            client=client,
            ids=_command_ids(request, route_key, holder, data),
            name=data.name if data else None,
            ttl_seconds=data.ttl_seconds if data else None,
            # Without a key the ids were made just now: no other request names this resource.
            new_ids="idempotency-key" not in request.headers,
        )
        notify_secret = (
            await notify_target_at_create(
                ctx, reply.resource_id, notify_url, request_id_of(request.scope)
            )
            if notify_url is not None
            else None
        )
        return created_response(
            ctx,
            reply,
            token,
            noun=route.noun,
            # The same key returns the same resource, so the name asked for is its name.
            name=data.name if data else None,
            client=client,
            account_id=account_id,
            notify_secret=notify_secret,
        )

    create_resource.__name__ = f"create_{route.kind.value}"
    return post(
        f"/{route.path}/new",
        status_code=201,
        summary=route.summary,
        description=(
            f"{route.description} Without an account it lives for the anonymous tier's TTL,"
            " or `ttl_seconds` within the plan's lifetime bounds (GET /plans); `notify_url`"
            " receives signed notifications before it expires (the answer's notify_secret)."
            " Send an Idempotency-Key header to make retries safe: the same key returns the"
            f" same {route.noun}."
        ),
        tags=["provisioning"],
        operation_id=f"create_{route.kind.value}",
    )(create_resource)


def created_response(
    ctx: GatewayContext,
    reply: ResourceProvisioned,
    token: str,
    *,
    noun: str,
    name: str | None,
    client: str,
    account_id: uuid.UUID | None,
    notify_secret: str | None = None,
    forked_from: uuid.UUID | None = None,
) -> Response[ResourceCreated]:
    """The 201 of a create (or a fork): the new resource, its token and credentials."""
    body = ResourceCreated(
        id=reply.resource_id,
        kind=reply.kind.value,
        name=name,
        token=token,
        connection_url=connection_url_of(reply.credentials),
        credentials=reply.credentials,
        tier=reply.tier,
        limits=_limits_view(reply.limits, reply.expires_at),
        expires_at=reply.expires_at,
        claim_url=(
            claim_url(ctx, client, made_with=(reply.resource_id, reply.created_at))
            if account_id is None
            else None
        ),
        note=_note(noun, reply.tier, reply.expires_at),
        console_url=console_url(ctx.settings.public_url, reply.kind, token),
        notify_secret=notify_secret,
        forked_from=forked_from,
    )
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else {}
    return Response(body, status_code=201, headers=headers)


async def resource_for_token(ctx: GatewayContext, token: str) -> ResourceState:
    """The live resource a token names, or the right 404/410."""
    state = (
        await ctx.resources.by_token_hash(hash_token(token)) if looks_like_token(token) else None
    )
    return _live(state)


async def resource_for(
    request: Request[Any, Any, Any], ctx: GatewayContext, token: str, scope: Scope
) -> ResourceState:
    """The live resource named by its ``spn_`` token, or by its id for its account.

    An id needs the caller's Bearer credential, with ``scope``, to belong to the owning
    account; another account's id is a 404, as if it did not exist.
    """
    if looks_like_token(token):
        return await resource_for_token(ctx, token)
    return _live(await _owned_resource(request, ctx, token, scope))


async def resource_or_suspended(
    request: Request[Any, Any, Any], ctx: GatewayContext, token: str, scope: Scope
) -> ResourceState:
    """As ``resource_for``, and also an expired one kept for its export grace (ADR 0030)."""
    if looks_like_token(token):
        state = await ctx.resources.by_token_hash(hash_token(token))
    else:
        state = await _owned_resource(request, ctx, token, scope)
    if state is not None and state.status is ResourceStatus.SUSPENDED:
        return state
    return _live(state)


def _live(state: ResourceState | None) -> ResourceState:
    if state is None or state.status in {ResourceStatus.DELETED, ResourceStatus.NONE}:
        msg = (
            "No resource has this token or id (or it was deleted). Tokens start with spn_;"
            " an id works with Authorization: Bearer of the account that owns it."
        )
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    if state.status is ResourceStatus.EXPIRED:
        when = state.expires_at.isoformat() if state.expires_at else "its expiry"
        msg = f"This resource expired at {when} and was deleted. Create a new one."
        raise SpinupError(ErrorCode.RESOURCE_GONE, msg)
    if state.status is ResourceStatus.SUSPENDED:
        raise suspended_error(state)
    return state


def suspended_error(state: ResourceState) -> SpinupError:
    """410 for an expired resource whose data is kept for an export (ADR 0030)."""
    when = state.expires_at.isoformat() if state.expires_at else "its expiry"
    until = state.grace_ends_at or state.expires_at
    deadline = until.isoformat() if until else "the end of its grace period"
    msg = (
        f"This resource expired at {when}: its credentials no longer work. Its data is kept"
        f" until {deadline}, then deleted."
    )
    action = (
        f"Export it with GET /resources/{{token}}/export before {deadline}, then it is deleted"
        " (restore it into a new resource with the kind's own tools)."
    )
    return SpinupError(ErrorCode.RESOURCE_GONE, msg, agent_action=action)


async def _owned_resource(
    request: Request[Any, Any, Any], ctx: GatewayContext, resource_id: str, scope: Scope
) -> ResourceState | None:
    """The resource with this id if the authenticated caller's account owns it."""
    try:
        parsed = uuid.UUID(resource_id)
    except ValueError:
        return None
    principal = await authenticate(request, ctx)
    if principal is None:
        msg = "A resource id needs Authorization: Bearer of its account; or use its spn_ token."
        raise SpinupError(ErrorCode.UNAUTHORIZED, msg)
    principal.require(scope)
    return await owned_by(ctx, principal, parsed)


async def owned_by(
    ctx: GatewayContext, principal: Principal, resource_id: uuid.UUID
) -> ResourceState | None:
    """The resource with this id if ``principal``'s account owns it (else None, as if absent)."""
    state = await ctx.resources.by_id(resource_id)
    return state if state is not None and state.account_id == principal.account_id else None


def live(state: ResourceState | None) -> ResourceState:
    """The resource if it is live, else the right 404 (absent, deleted) or 410 (expired)."""
    return _live(state)


TokenParam = Parameter(description="The token returned when the resource was created.")
TokenOrIdParam = Parameter(
    description="The token returned when the resource was created, or (with Authorization:"
    " Bearer of the account that owns it) the resource's id."
)


@get("/resources/{token:str}", summary="Show a resource", tags=["resources"])
async def show_resource(
    request: Request[Any, Any, Any], ctx: GatewayContext, token: str = TokenOrIdParam
) -> ResourceInfo:
    """``GET /resources/{token}``."""
    if looks_like_token(token):
        found = await ctx.resources.measured_by_token_hash(hash_token(token))
        state, measured = _live(found[0] if found else None), found[1] if found else None
    else:
        state = await resource_for(request, ctx, token, Scope.READ)
        measured = (await ctx.resources.usage_of([state.resource_id])).get(state.resource_id)
    info = resource_info(state, open_credentials(ctx, state), measured)
    info = msgspec.structs.replace(
        info,
        console_url=(
            console_url(ctx.settings.public_url, state.kind, token)
            if looks_like_token(token)
            # Asked by id, for its account: the account's console lists it.
            else f"{ctx.settings.public_url}{DASHBOARD_PATH}"
        ),
    )
    if state.kind is ResourceKind.STACK:
        details = await stack_details(ctx, state, token)
        info = msgspec.structs.replace(info, stack=details)
    return info


def backing_info(ctx: GatewayContext, state: ResourceState) -> BackingResourceInfo:
    """How a stack shows one of its backing resources."""
    credentials = open_credentials(ctx, state)
    return BackingResourceInfo(
        kind=state.kind.value if state.kind else "unknown",
        id=state.resource_id,
        status=state.status.value,
        connection_url=connection_url_of(credentials) if credentials else None,
        credentials=credentials,
    )


async def stack_details(ctx: GatewayContext, state: ResourceState, token: str) -> StackDetails:
    """A stack's latest deploy (folded from its stream) and its backing resources.

    ``token`` is how the caller named the stack (its token, or its id): the logs URL uses it.
    """
    recorded = await ctx.store.load(resource_stream(state.resource_id))
    view = StackView.fold(entry.event for entry in recorded)
    credentials = open_credentials(ctx, state)
    urls = credentials.urls if isinstance(credentials, StackCredentials) else {}
    # Before the first deploy starts, the services are known only by their public URLs.
    names = sorted(set(view.services) | set(urls))
    services = {
        name: StackServiceInfo(
            status=view.services[name].status.value if name in view.services else "waiting",
            url=urls.get(name),
            image=view.services[name].image if name in view.services else None,
        )
        for name in names
    }
    children = await ctx.resources.children_of(state.resource_id)
    return StackDetails(
        status=view.status.value,
        revision=view.revision,
        services=services,
        resources={
            child.name or str(child.resource_id): backing_info(ctx, child) for child in children
        },
        failed_service=view.failed_service,
        failure=view.failure,
        logs_tail=view.logs_tail,
        logs_url=f"{ctx.settings.public_url}/resources/{token}/logs",
    )


def open_credentials(ctx: GatewayContext, state: ResourceState) -> Credentials | None:
    """The resource's current credentials while it is active (None otherwise)."""
    if state.credentials_sealed is None or state.status is not ResourceStatus.ACTIVE:
        return None
    raw = ctx.keyring.open(state.credentials_sealed, aad=state.resource_id.bytes)
    return _credentials_decoder.decode(raw)


_OVER_QUOTA_NOTES = {route.kind: route.over_quota for route in KIND_ROUTES}


def resource_info(
    state: ResourceState,
    credentials: Credentials | None,
    measured: tuple[int, datetime] | None,
) -> ResourceInfo:
    """How a resource is shown, with its credentials when the caller may see them."""
    over_quota_note = None
    if state.quota_exceeded and state.kind is not None:
        over_quota_note = _OVER_QUOTA_NOTES[state.kind]
    return ResourceInfo(
        id=state.resource_id,
        kind=state.kind.value if state.kind else "unknown",
        status=state.status.value,
        tier=state.tier or "",
        name=state.name,
        limits=_limits_view(state.limits, state.expires_at),
        usage=Usage(
            bytes=measured[0] if measured else None,
            quota_bytes=quota_bytes(state.limits) if state.limits else None,
            measured_at=measured[1] if measured else None,
            over_quota=state.quota_exceeded,
            note=over_quota_note,
        ),
        created_at=state.created_at,
        expires_at=state.expires_at,
        claimed=state.claimed_at is not None,
        connection_url=connection_url_of(credentials) if credentials else None,
        credentials=credentials,
        parent_id=state.parent_id,
    )


@delete("/resources/{token:str}", status_code=200, summary="Delete a resource", tags=["resources"])
async def delete_resource(
    request: Request[Any, Any, Any], ctx: GatewayContext, token: str = TokenOrIdParam
) -> ResourceDeleted:
    """``DELETE /resources/{token}``: the credentials stop working at once."""
    # One kept for its export grace may be deleted sooner by its holder.
    state = await resource_or_suspended(request, ctx, token, Scope.DELETE)
    return await delete_with_backing(ctx, state, request_id_of(request.scope))


async def delete_with_backing(
    ctx: GatewayContext, state: ResourceState, correlation_id: str
) -> ResourceDeleted:
    """Delete a resource and, for a stack, its backing resources: the credentials stop working."""
    deleted = await deprovision(ctx, state, correlation_id)
    # A stack's backing resources go with it: after its containers, which use them, are gone.
    children = await ctx.resources.children_of(state.resource_id)
    await asyncio.gather(*(deprovision(ctx, child, correlation_id) for child in children))
    return ResourceDeleted(id=deleted, status=ResourceStatus.DELETED.value)


async def deprovision(
    ctx: GatewayContext,
    state: ResourceState,
    correlation_id: str,
    reason: DeprovisionReason = DeprovisionReason.DELETED,
) -> uuid.UUID:
    """Delete one resource through its worker (idempotent: a second delete is the same)."""
    if state.kind is None:
        msg = "This resource was never created."
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    endpoint = DEPROVISION_ENDPOINTS[state.kind]
    command = DeprovisionResource(
        command_id=uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"delete|{state.resource_id}"),
        correlation_id=correlation_id,
        deadline=time.time() + endpoint.timeout,
        resource_id=state.resource_id,
        reason=reason,
    )
    reply = await ctx.bus.request(endpoint, command)
    # Room for one more of its kind: a refusal its holder's caps remember no longer holds.
    await forget_refusals(
        ctx, account_id=state.account_id, fingerprint=state.fingerprint, kinds=[state.kind]
    )
    return reply.resource_id


@get(
    "/plans",
    summary="Tiers and their limits",
    description="Every tier of plans.yaml: its TTL (null: permanent) and each kind's limits.",
    tags=["plans"],
)
async def show_plans(ctx: GatewayContext) -> PlansInfo:
    """``GET /plans``: the single source of truth, as loaded at start."""
    return PlansInfo(anonymous_tier=ctx.plans.anonymous_tier, tiers=ctx.plans.tiers)


@get("/healthz", summary="Liveness", tags=["health"])
async def healthz() -> Health:
    """The process is up and serving."""
    return Health(ok=True, checks={"process": "ok"})


@get(
    "/readyz",
    summary="Readiness: NATS and the platform database",
    tags=["health"],
    responses={503: ResponseSpec(Health, description="Not ready: `checks` says what is down.")},
)
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


ROUTES = [
    *(_create_handler(route) for route in KIND_ROUTES),
    show_resource,
    delete_resource,
    show_plans,
    healthz,
    readyz,
]
