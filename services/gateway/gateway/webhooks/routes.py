"""Webhook receivers over HTTP, and the provisioning commands the gateway itself serves for them.

``POST /webhook/new`` is the generic create route (``resources/routes.py``); it reaches the
lifecycle below over NATS like every other kind. Here: the receive URL (any method), reading the
captured requests back, and following them live as Server-Sent Events.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, route
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from gateway.admission.clients import client_ip
from gateway.context import GatewayContext
from gateway.resources.routes import TokenParam, open_credentials, resource_for_token
from gateway.webhooks.driver import (
    LiveRequests,
    RecordOutcome,
    StoredRequest,
    encode_body,
    parse_receive_key,
    receive_key_of_url,
)
from shared.bus import Bus
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import (
    ResourceKind,
    ResourceStatus,
    WebhookCredentials,
    WebhookLimits,
)
from shared.lifecycle import ResourceLifecycle
from shared.plans import Plans
from shared.resources import ResourceState
from shared.worker import serve_lifecycle

# Handlers waiting for a slot; beyond this, commands wait in NATS.
MAX_IN_FLIGHT = 256
# Proxies and browsers drop an idle stream after 30-60 s; a comment every 15 s keeps it open.
KEEPALIVE_S = 15.0
RECEIVE_METHODS = [
    HttpMethod.GET,
    HttpMethod.POST,
    HttpMethod.PUT,
    HttpMethod.PATCH,
    HttpMethod.DELETE,
    HttpMethod.HEAD,
    HttpMethod.OPTIONS,
]
# Per-hop headers describe the connection to the gateway, not the sender's request (RFC 9110 7.6.1).
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NO_RECEIVER = "No webhook receiver has this URL (or it was deleted)."
_RETIRED_KEY = "This receive URL was replaced by a new one (rotated); nothing was stored."


async def serve_webhook_commands(bus: Bus, lifecycle: ResourceLifecycle) -> None:
    """Subscribe the gateway in the ``gateway-webhooks`` queue group: any replica may answer.

    The server has the subscriptions once this returns: /readyz cannot pass before they work.
    """
    await serve_lifecycle(bus, lifecycle, ResourceKind.WEBHOOK, max_in_flight=MAX_IN_FLIGHT)


class RequestReceived(msgspec.Struct, frozen=True, kw_only=True):
    """What a sender gets back: the id under which its request was stored."""

    ok: bool = True
    id: str


class ReceivedRequests(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /webhook/{token}/requests``: the newest requests first."""

    ok: bool = True
    id: uuid.UUID
    count: int
    requests_kept: int
    requests: list[StoredRequest]


def _stored_request(
    request: Request[Any, Any, Any], body: bytes, subpath: str, sender: str
) -> StoredRequest:
    text, encoding = encode_body(body)
    query: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        query.setdefault(name, []).append(value)
    raw_query: bytes = request.scope.get("query_string", b"")
    return StoredRequest(
        id=uuid.uuid4().hex,
        method=request.method,
        path="/" + subpath.lstrip("/"),
        query=raw_query.decode("latin-1"),
        query_params=query,
        headers=[
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.scope["headers"]
            if name.decode("latin-1").lower() not in HOP_BY_HOP_HEADERS
        ],
        body=text,
        body_encoding=encoding,
        size=len(body),
        received_at=datetime.now(UTC),
        client_ip=sender,
    )


async def _reopen_if_active(ctx: GatewayContext, resource_id: uuid.UUID) -> None:
    """The receiver has no limits hash: say why, or restore it if the log says it is active.

    Active with no hash means the platform Redis lost its data (a restart without persistence):
    the log is the source of truth, so the receiver opens again with its recorded limits and
    the URL generation of its latest recorded credentials (a rotated-away URL stays retired).
    """
    state = await ctx.resources.by_id(resource_id)
    if state is None or state.kind is not ResourceKind.WEBHOOK:
        raise SpinupError(ErrorCode.NOT_FOUND, _NO_RECEIVER)
    if state.status is ResourceStatus.EXPIRED:
        msg = "This webhook receiver expired and was deleted. Create a new one."
        raise SpinupError(ErrorCode.RESOURCE_GONE, msg)
    credentials = open_credentials(ctx, state)  # None unless active
    if not isinstance(credentials, WebhookCredentials) or not isinstance(
        state.limits, WebhookLimits
    ):
        raise SpinupError(ErrorCode.NOT_FOUND, _NO_RECEIVER)
    recorded = receive_key_of_url(ctx.settings.token_key, credentials.receive_url)
    if recorded is None or recorded.resource_id != resource_id:
        raise SpinupError(ErrorCode.NOT_FOUND, _NO_RECEIVER)
    await ctx.webhooks.reopen(recorded, state.limits)


def _receive_handlers(max_body_bytes: int) -> list[HTTPRouteHandler]:
    """The receive URL and every path below it: one handler each, so both are documented.

    (One handler with both paths is documented under whichever path its set yields first, which
    changes with the interpreter's hash seed.)
    """

    async def receive_webhook(
        request: Request[Any, Any, Any], ctx: GatewayContext, key: str, subpath: str = "/"
    ) -> Response[RequestReceived | None]:
        receiver = parse_receive_key(ctx.settings.token_key, key)
        if receiver is None:
            raise SpinupError(ErrorCode.NOT_FOUND, _NO_RECEIVER)
        sender = client_ip(request, ctx.settings.trusted_proxies)
        stored = _stored_request(request, await request.body(), subpath, sender)
        outcome = await ctx.webhooks.record(receiver, stored)
        if outcome is RecordOutcome.NO_RECEIVER:
            await _reopen_if_active(ctx, receiver.resource_id)
            outcome = await ctx.webhooks.record(receiver, stored)
        if outcome is RecordOutcome.NO_RECEIVER:
            raise SpinupError(ErrorCode.NOT_FOUND, _NO_RECEIVER)
        if outcome is RecordOutcome.RETIRED_KEY:
            raise SpinupError(ErrorCode.NOT_FOUND, _RETIRED_KEY)
        if outcome is RecordOutcome.TOO_LARGE:
            msg = "The body is larger than this receiver's plan allows; it was not stored."
            raise SpinupError(ErrorCode.PAYLOAD_TOO_LARGE, msg)
        headers = {"X-Webhook-Request-Id": stored.id}
        if request.method == "HEAD":
            return Response(None, status_code=200, headers=headers)
        return Response(RequestReceived(id=stored.id), status_code=200, headers=headers)

    return [
        route(
            path,
            http_method=RECEIVE_METHODS,
            status_code=200,
            # The app-wide cap is smaller than a webhook body may be; each receiver's own plan
            # limit is checked again before anything is stored.
            request_max_body_size=max_body_bytes,
            summary="Send a request to a webhook receiver",
            description="Any method, any path below the receive URL, any body up to the"
            " receiver's `max_body_kb`. The request is stored (the oldest beyond `requests_kept`"
            " are dropped) and streamed to open `GET /webhook/{token}/stream` connections.",
            tags=["webhooks"],
        )(receive_webhook)
        for path in ("/webhook/receive/{key:str}", "/webhook/receive/{key:str}/{subpath:path}")
    ]


async def _receiver_for(ctx: GatewayContext, token: str) -> tuple[ResourceState, WebhookLimits]:
    state = await resource_for_token(ctx, token)
    if state.kind is not ResourceKind.WEBHOOK or not isinstance(state.limits, WebhookLimits):
        msg = "This token is not a webhook receiver's."
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    return state, state.limits


@get("/webhook/{token:str}/requests", summary="Read captured requests", tags=["webhooks"])
async def list_requests(
    ctx: GatewayContext,
    token: str = TokenParam,
    limit: int | None = Parameter(
        ge=1, required=False, description="At most this many (newest first)."
    ),
) -> ReceivedRequests:
    """``GET /webhook/{token}/requests``: newest first, at most the plan's ``requests_kept``."""
    state, limits = await _receiver_for(ctx, token)
    wanted = min(limit or limits.requests_kept, limits.requests_kept)
    requests = await ctx.webhooks.recent(state.resource_id, wanted)
    return ReceivedRequests(
        id=state.resource_id,
        count=len(requests),
        requests_kept=limits.requests_kept,
        requests=requests,
    )


async def _sse_messages(live: LiveRequests) -> AsyncIterator[ServerSentEventMessage]:
    async for request in live.events(KEEPALIVE_S):
        if request is None:
            yield ServerSentEventMessage(data=None, comment="keep-alive")
        else:
            yield ServerSentEventMessage(
                event="request", id=request.id, data=msgspec.json.encode(request).decode()
            )
    if live.receiver_gone:
        yield ServerSentEventMessage(event="closed", data="The receiver was deleted.")


@get(
    "/webhook/{token:str}/stream",
    summary="Follow captured requests live",
    description="Server-Sent Events: one `request` event per request received from now on,"
    " a comment every 15 s to keep the connection open, and a final `closed` event when the"
    " receiver is deleted or expires.",
    media_type="text/event-stream",
    tags=["webhooks"],
)
async def stream_requests(ctx: GatewayContext, token: str = TokenParam) -> ServerSentEvent:
    """``GET /webhook/{token}/stream``."""
    state, _ = await _receiver_for(ctx, token)
    # Subscribed before the response starts, so an unreachable Redis is still an honest 503.
    live = await ctx.webhooks.subscribe(state.resource_id)
    return ServerSentEvent(_sse_messages(live))


def largest_webhook_body(plans: Plans) -> int:
    """The largest body any tier's receiver accepts, in bytes: the receive route's hard cap."""
    return max(tier.webhook.max_body_kb for tier in plans.tiers.values()) * 1024


def webhook_routes(plans: Plans) -> list[HTTPRouteHandler]:
    """The webhook routes; the receive route's body cap comes from the plans."""
    return [*_receive_handlers(largest_webhook_body(plans)), list_requests, stream_requests]
