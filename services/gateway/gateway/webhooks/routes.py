"""Webhook receivers over HTTP, and the provisioning commands the gateway itself serves for them.

``POST /webhook/new`` is the generic create route (``resources/routes.py``); it reaches the
lifecycle below over NATS like every other kind. Here: the receive URL (any method), reading the
captured requests back, following them live as Server-Sent Events, and the receiver's settings:
a custom response (answered on the receive path, read in the same Redis round trip that stores
the request) and a signature check (applied when requests are read: ADR 0020).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Request, Response, delete, get, put, route
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.params import HeaderParameter, Parameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from gateway.admission.clients import client_ip
from gateway.context import GatewayContext
from gateway.http.cleanup import StreamEnd
from gateway.resources.routes import TokenParam, open_credentials, resource_for_token
from gateway.webhooks.driver import (
    LiveRequests,
    RecordOutcome,
    Setting,
    StoredRequest,
    encode_body,
    parse_receive_key,
    receive_key_of_url,
)
from gateway.webhooks.history import (
    CatchUp,
    RequestFilter,
    catch_up,
    decode_cursor,
    encode_cursor,
    find,
    find_seq,
    invalid,
    page,
    requests_after,
)
from gateway.webhooks.responses import (
    SANDBOX_HEADERS,
    CustomResponse,
    ResponseSetting,
    StoredVerify,
    VerifyRequest,
    VerifySetting,
    check_response,
    verify_aad,
)
from gateway.webhooks.signatures import InvalidSecretError, check_secret, verify
from shared.bus import Bus
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import (
    ResourceKind,
    ResourceStatus,
    WebhookCredentials,
    WebhookLimits,
)
from shared.crypto.sealing import SealError
from shared.lifecycle import ResourceLifecycle
from shared.plans import Plans
from shared.resources import ResourceState
from shared.worker import serve_lifecycle

log = structlog.get_logger("gateway.webhooks")

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
    """``GET /webhook/{token}/requests``: one page of matching requests, newest first.

    ``next_cursor`` lists the older ones (null: there are none); ``latest_cursor`` follows the
    ones received from now on (``GET /webhook/{token}/stream?after=``).
    """

    ok: bool = True
    id: uuid.UUID
    count: int
    requests_kept: int
    requests: list[StoredRequest]
    next_cursor: str | None
    latest_cursor: str


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


_response_decoder = msgspec.json.Decoder(CustomResponse)
_verify_decoder = msgspec.json.Decoder(StoredVerify)


#: Statuses whose answers carry no body, and so no content type of their own.
_BODYLESS = frozenset({204, 304})


async def _custom_answer(
    custom: CustomResponse, headers: dict[str, str], *, head: bool
) -> Response[Any]:
    """The receiver's custom response, after its delay (the request is already stored)."""
    if custom.delay_ms:
        await asyncio.sleep(custom.delay_ms / 1000)
    # Set as a header, as the tenant gave it: Litestar adds "; charset=utf-8" to any text/*
    # media type, whether it names a charset already or not.
    if custom.status not in _BODYLESS:
        headers["content-type"] = "text/plain; charset=utf-8"
    for name, value in custom.headers.items():
        headers["content-type" if name.lower() == "content-type" else name] = value
    # A tenant's body is served from the API's own origin: a browser opening the receive URL
    # must not run it there (an HTML body with a script would otherwise act as the API's page).
    headers.update(SANDBOX_HEADERS)
    body = b"" if head else custom.body.encode()
    return Response(body, status_code=custom.status, headers=headers)


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
        outcome, custom = await ctx.webhooks.receive(receiver, stored)
        if outcome is RecordOutcome.NO_RECEIVER:
            await _reopen_if_active(ctx, receiver.resource_id)
            outcome, custom = await ctx.webhooks.receive(receiver, stored)
        if outcome is RecordOutcome.NO_RECEIVER:
            raise SpinupError(ErrorCode.NOT_FOUND, _NO_RECEIVER)
        if outcome is RecordOutcome.RETIRED_KEY:
            raise SpinupError(ErrorCode.NOT_FOUND, _RETIRED_KEY)
        if outcome is RecordOutcome.TOO_LARGE:
            msg = "The body is larger than this receiver's plan allows; it was not stored."
            raise SpinupError(ErrorCode.PAYLOAD_TOO_LARGE, msg)
        headers = {"X-Webhook-Request-Id": stored.id}
        if custom is not None:
            return await _custom_answer(
                _response_decoder.decode(custom), headers, head=request.method == "HEAD"
            )
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
            " are dropped) and streamed to open `GET /webhook/{token}/stream` connections. The"
            " answer is `{ok, id}`, or the receiver's custom response (`PUT"
            " /webhook/{token}/response`); HEAD gets no body.",
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


_REQUESTS_PATH = "/webhook/{token:str}/requests"


async def _with_signatures(
    ctx: GatewayContext, resource_id: uuid.UUID, requests: list[StoredRequest]
) -> list[StoredRequest]:
    """The requests with their ``signature`` verdicts, when the receiver checks signatures."""
    check = await _signature_checker(ctx, resource_id)
    if check is None:
        return requests
    if sum(request.size for request in requests) > _HASH_INLINE_BYTES:
        # hashlib lets go of the GIL on large inputs: a thread keeps the loop serving.
        return await asyncio.to_thread(lambda: [check(r) for r in requests])
    return [check(request) for request in requests]


@get(
    _REQUESTS_PATH,
    summary="Find captured requests",
    description="Newest first, one page at a time: pass `next_cursor` back as `cursor` for the"
    " next (older) page until it is null. A page may be shorter than `limit` while"
    " `next_cursor` is set (a filter that matches little stops after 8 MB of bodies scanned)."
    " Filters, all optional, all must hold: `method` (one or several, comma-separated),"
    " `path_prefix` (of the path after the receive URL), `header` (a substring of some"
    " `name: value` line, any case), `body` (a substring of the raw body), `since` (inclusive)"
    " and `until` (exclusive), ISO 8601 times. `latest_cursor` is where"
    " `GET /webhook/{token}/stream?after=` picks up.",
    tags=["webhooks"],
)
async def list_requests(  # noqa: PLR0917  (one argument per query parameter)
    ctx: GatewayContext,
    token: str = TokenParam,
    limit: int | None = Parameter(
        ge=1, required=False, description="At most this many (default and cap: requests_kept)."
    ),
    cursor: str | None = Parameter(
        required=False, description="A `next_cursor`: the page of older requests."
    ),
    method: str | None = Parameter(required=False, description="e.g. `POST` or `POST,PUT`."),
    path_prefix: str | None = Parameter(required=False, description="e.g. `/stripe`."),
    header: str | None = Parameter(
        required=False, description="e.g. `x-github-event: push` or `stripe-signature`."
    ),
    # Named apart from its query parameter: `body` is the framework's raw request body.
    body_contains: Annotated[
        str | None,
        QueryParameter(name="body", required=False, description="e.g. `invoice.paid`."),
    ] = None,
    since: str | None = Parameter(required=False, description="e.g. `2026-12-04T08:00:00Z`."),
    until: str | None = Parameter(required=False, description="e.g. `2026-12-04T09:00:00Z`."),
) -> ReceivedRequests:
    """``GET /webhook/{token}/requests``."""
    wanted = RequestFilter.parse(
        method=method,
        path_prefix=path_prefix,
        header=header,
        body=body_contains,
        since=since,
        until=until,
        known_methods=[m.value for m in RECEIVE_METHODS],
    )
    before = None if cursor is None else decode_cursor("cursor", cursor)
    state, limits = await _receiver_for(ctx, token)
    found = await page(
        ctx.webhooks,
        state.resource_id,
        before=before,
        limit=min(limit or limits.requests_kept, limits.requests_kept),
        wanted=wanted,
    )
    requests = await _with_signatures(ctx, state.resource_id, found.requests)
    return ReceivedRequests(
        id=state.resource_id,
        count=len(requests),
        requests_kept=limits.requests_kept,
        requests=requests,
        next_cursor=None if found.next_seq is None else encode_cursor(found.next_seq),
        latest_cursor=encode_cursor(found.latest),
    )


@get(
    _REQUESTS_PATH + "/{request_id:str}",
    summary="Read one captured request",
    description="By the `id` its sender got back (`X-Webhook-Request-Id`), while it is kept.",
    tags=["webhooks"],
)
async def show_request(
    ctx: GatewayContext, request_id: str, token: str = TokenParam
) -> StoredRequest:
    """``GET /webhook/{token}/requests/{request_id}``: what ``spinup webhook replay`` sends."""
    state, limits = await _receiver_for(ctx, token)
    found = await find(ctx.webhooks, state.resource_id, request_id)
    if found is None:
        msg = (
            f"This receiver keeps no request with id {request_id!r}: it keeps only its newest"
            f" {limits.requests_kept}. List them with GET /webhook/{{token}}/requests."
        )
        raise SpinupError(ErrorCode.NOT_FOUND, msg)
    (shown,) = await _with_signatures(ctx, state.resource_id, [found])
    return shown


def _request_event(request: StoredRequest) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        event="request",
        # Its cursor: a client that reconnects with it as Last-Event-ID misses nothing.
        id=encode_cursor(request.seq) if request.seq else None,
        data=msgspec.json.encode(request).decode(),
    )


class RequestsCleared(msgspec.Struct, frozen=True, kw_only=True):
    """The receiver's stored requests are gone; it keeps capturing new ones."""

    ok: bool = True
    id: uuid.UUID


@delete(
    "/webhook/{token:str}/requests",
    status_code=200,
    summary="Clear captured requests",
    description="Forgets every stored request; the receive URL keeps working.",
    tags=["webhooks"],
)
async def clear_requests(ctx: GatewayContext, token: str = TokenParam) -> RequestsCleared:
    """``DELETE /webhook/{token}/requests``: the console's "clear history"."""
    state, _ = await _receiver_for(ctx, token)
    await ctx.webhooks.clear(state.resource_id)
    return RequestsCleared(id=state.resource_id)


async def _sse_messages(
    ctx: GatewayContext,
    resource_id: uuid.UUID,
    live: LiveRequests,
    end: StreamEnd,
    *,
    after: int,
    catch: CatchUp | None,
) -> AsyncIterator[ServerSentEventMessage]:
    """The catch-up (when resumed), then each live request not already sent, in ``seq`` order.

    The subscription is open before the catch-up is read, so a request stored meanwhile is in
    both: the ``seq`` already sent tells which to skip. ``end`` closes ``live``.
    """
    sent = after
    try:
        if catch is not None:
            sent = catch.after
            if catch.lost:
                note = (
                    f"{catch.lost} requests after the cursor were dropped (beyond requests_kept)"
                    " before this stream resumed; the rest follow."
                )
                yield ServerSentEventMessage(
                    event="lost",
                    data=msgspec.json.encode({"missed": catch.lost, "message": note}).decode(),
                )
            try:
                check = await _signature_checker(ctx, resource_id)
                async for kept in requests_after(ctx.webhooks, resource_id, sent):
                    yield _request_event(kept if check is None else check(kept))
                    sent = kept.seq
            except SpinupError:
                return  # a started stream cannot become an error page: the client resumes
        async for request in live.events(KEEPALIVE_S):
            if request is None:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            if request.seq and request.seq <= sent:
                continue
            # Read per request, so a check set or removed while the stream is open applies.
            try:
                check = await _signature_checker(ctx, resource_id)
            except SpinupError:
                check = None  # a started stream cannot turn into an error page: shown unchecked
            yield _request_event(request if check is None else check(request))
            sent = max(sent, request.seq)
        if live.receiver_gone:
            yield ServerSentEventMessage(event="closed", data="The receiver was deleted.")
    finally:
        # The feed's pooled connection goes back even when the client hung up (StreamEnd).
        await end.run()


@get(
    "/webhook/{token:str}/stream",
    summary="Follow captured requests live",
    description="Server-Sent Events: one `request` event per request received from now on,"
    " a comment every 15 s to keep the connection open, and a final `closed` event when the"
    " receiver is deleted or expires. Each event's `id` is a cursor: reconnect with it as"
    " `Last-Event-ID` (or `?after=`) and the stream first sends every kept request after it,"
    " oldest first, then goes on live, so none is missed or sent twice; a `lost` event says"
    " how many were dropped meanwhile (beyond `requests_kept`). `?from_id=` starts with that"
    " kept request instead. `?after=` takes `latest_cursor` of `GET /webhook/{token}/requests`.",
    media_type="text/event-stream",
    tags=["webhooks"],
)
async def stream_requests(
    ctx: GatewayContext,
    token: str = TokenParam,
    after: str | None = Parameter(
        required=False, description="A cursor: send the kept requests after it first."
    ),
    from_id: str | None = Parameter(
        required=False, description="A kept request's id: send it and those after it first."
    ),
    last_event_id: Annotated[
        str | None,
        HeaderParameter(
            name="Last-Event-ID",
            required=False,
            description="Set by an SSE client when it reconnects; wins over `after` and `from_id`.",
        ),
    ] = None,
) -> ServerSentEvent:
    """``GET /webhook/{token}/stream``."""
    resume: int | None = None
    if last_event_id:
        resume = decode_cursor("Last-Event-ID", last_event_id)
    elif after is not None and from_id is not None:
        raise invalid("from_id", "give `from_id` or `after`, not both.")
    elif after is not None:
        resume = decode_cursor("after", after)
    state, limits = await _receiver_for(ctx, token)
    if resume is None and from_id is not None and not last_event_id:
        seq = await find_seq(ctx.webhooks, state.resource_id, from_id)
        if seq is None:
            problem = (
                f"this receiver keeps no request with id {from_id!r} (it keeps only its newest"
                f" {limits.requests_kept})."
            )
            raise invalid("from_id", problem)
        resume = seq - 1
    # Subscribed before the response starts, so an unreachable Redis is still an honest 503; and
    # before the history is read, so nothing stored in between is missed.
    live = await ctx.webhooks.subscribe(state.resource_id)
    try:
        if resume is None:
            after_seq, catch = await ctx.webhooks.latest_seq(state.resource_id), None
        else:
            catch = await catch_up(ctx.webhooks, state.resource_id, resume)
            after_seq = catch.after
    except BaseException:
        await live.close()
        raise
    end = StreamEnd(live.close)
    return ServerSentEvent(
        _sse_messages(ctx, state.resource_id, live, end, after=after_seq, catch=catch),
        background=end.background,
    )


def _raw_body(request: StoredRequest) -> bytes:
    if request.body_encoding == "base64":
        return base64.b64decode(request.body)
    return request.body.encode()


async def _signature_checker(
    ctx: GatewayContext, resource_id: uuid.UUID
) -> Callable[[StoredRequest], StoredRequest] | None:
    """What adds ``signature`` to a request read back, or None when no check is set.

    Verifying on read keeps the receive path as it was (no secret to open, no HMAC per
    request) and judges each timestamp against the time the request arrived (ADR 0020).
    """
    raw = await ctx.webhooks.setting(resource_id, Setting.VERIFY)
    if raw is None:
        return None
    stored = _verify_decoder.decode(raw)
    try:
        secret = ctx.keyring.open(stored.secret_sealed, aad=verify_aad(resource_id)).decode()
    except SealError:
        # Its key left the keyring: reading must still work; the owner sets the check again.
        log.warning("webhooks.verify.unsealable", resource_id=str(resource_id))
        return None

    def check(request: StoredRequest) -> StoredRequest:
        if request.received_at < stored.since:
            return request
        verdict = verify(
            stored.scheme,
            secret,
            request.headers,
            _raw_body(request),
            received_at=request.received_at.timestamp(),
            tolerance_s=stored.tolerance_s,
        )
        return msgspec.structs.replace(request, signature=verdict)

    return check


async def _set_setting(
    ctx: GatewayContext, resource_id: uuid.UUID, setting: Setting, value: bytes
) -> None:
    """Write a setting; a receiver whose hash Redis lost is opened again from the log first."""
    if await ctx.webhooks.set_setting(resource_id, setting, value):
        return
    await _reopen_if_active(ctx, resource_id)
    if not await ctx.webhooks.set_setting(resource_id, setting, value):
        raise SpinupError(ErrorCode.NOT_FOUND, _NO_RECEIVER)


# Up to this many body bytes are verified on the event loop (well under a millisecond).
_HASH_INLINE_BYTES = 1024 * 1024
_RESPONSE_PATH = "/webhook/{token:str}/response"
# Room for the status, headers and delay beside the body.
_RESPONSE_OVERHEAD = 64 * 1024
_VERIFY_PATH = "/webhook/{token:str}/verify"


async def _response_setting(ctx: GatewayContext, resource_id: uuid.UUID) -> ResponseSetting:
    raw = await ctx.webhooks.setting(resource_id, Setting.RESPONSE)
    response = None if raw is None else _response_decoder.decode(raw)
    return ResponseSetting(id=resource_id, custom=response is not None, response=response)


@get(_RESPONSE_PATH, summary="Show a receiver's custom response", tags=["webhooks"])
async def show_response(ctx: GatewayContext, token: str = TokenParam) -> ResponseSetting:
    """``GET /webhook/{token}/response``: the custom response, or ``custom`` false."""
    state, _ = await _receiver_for(ctx, token)
    return await _response_setting(ctx, state.resource_id)


async def set_response(
    ctx: GatewayContext, data: CustomResponse, token: str = TokenParam
) -> ResponseSetting:
    """``PUT /webhook/{token}/response``."""
    state, limits = await _receiver_for(ctx, token)
    check_response(data, limits)
    await _set_setting(ctx, state.resource_id, Setting.RESPONSE, msgspec.json.encode(data))
    return ResponseSetting(id=state.resource_id, custom=True, response=data)


@delete(
    _RESPONSE_PATH,
    status_code=200,
    summary="Answer with the default response again",
    tags=["webhooks"],
)
async def reset_response(ctx: GatewayContext, token: str = TokenParam) -> ResponseSetting:
    """``DELETE /webhook/{token}/response``: back to ``{ok, id}``."""
    state, _ = await _receiver_for(ctx, token)
    await ctx.webhooks.clear_setting(state.resource_id, Setting.RESPONSE)
    return ResponseSetting(id=state.resource_id, custom=False, response=None)


@get(_VERIFY_PATH, summary="Show a receiver's signature check", tags=["webhooks"])
async def show_verify(ctx: GatewayContext, token: str = TokenParam) -> VerifySetting:
    """``GET /webhook/{token}/verify``: the scheme and tolerance, never the secret."""
    state, _ = await _receiver_for(ctx, token)
    raw = await ctx.webhooks.setting(state.resource_id, Setting.VERIFY)
    if raw is None:
        return VerifySetting(id=state.resource_id, scheme=None)
    stored = _verify_decoder.decode(raw)
    return VerifySetting(
        id=state.resource_id,
        scheme=stored.scheme,
        tolerance_s=stored.tolerance_s,
        since=stored.since,
    )


@put(
    _VERIFY_PATH,
    summary="Check the signature of every request received from now on",
    description="`scheme`: `stripe`, `github`, `slack`, `shopify` or `standard-webhooks`;"
    " `secret`: the provider's signing secret (stored sealed, never shown again);"
    " `tolerance_s`: optional, the provider's default otherwise. Requests read back then"
    " carry `signature: {status: valid|invalid|missing, reason}`.",
    tags=["webhooks"],
)
async def set_verify(
    ctx: GatewayContext, data: VerifyRequest, token: str = TokenParam
) -> VerifySetting:
    """``PUT /webhook/{token}/verify``."""
    state, _ = await _receiver_for(ctx, token)
    try:
        check_secret(data.scheme, data.secret)
    except InvalidSecretError as exc:
        raise SpinupError(ErrorCode.INVALID_REQUEST, f"`secret`: {exc}.") from None
    stored = StoredVerify(
        scheme=data.scheme,
        secret_sealed=ctx.keyring.seal(data.secret.encode(), aad=verify_aad(state.resource_id)),
        tolerance_s=data.tolerance_s,
        since=datetime.now(UTC),
    )
    await _set_setting(ctx, state.resource_id, Setting.VERIFY, msgspec.json.encode(stored))
    return VerifySetting(
        id=state.resource_id,
        scheme=stored.scheme,
        tolerance_s=stored.tolerance_s,
        since=stored.since,
    )


@delete(_VERIFY_PATH, status_code=200, summary="Stop checking signatures", tags=["webhooks"])
async def stop_verify(ctx: GatewayContext, token: str = TokenParam) -> VerifySetting:
    """``DELETE /webhook/{token}/verify``: requests read back carry no ``signature`` again."""
    state, _ = await _receiver_for(ctx, token)
    await ctx.webhooks.clear_setting(state.resource_id, Setting.VERIFY)
    return VerifySetting(id=state.resource_id, scheme=None)


def largest_webhook_body(plans: Plans) -> int:
    """The largest body any tier's receiver accepts, in bytes: the receive route's hard cap."""
    return max(tier.webhook.max_body_kb for tier in plans.tiers.values()) * 1024


def webhook_routes(plans: Plans) -> list[HTTPRouteHandler]:
    """The webhook routes; the receive route's body cap comes from the plans."""
    return [
        *_receive_handlers(largest_webhook_body(plans)),
        list_requests,
        show_request,
        clear_requests,
        stream_requests,
        show_response,
        put(
            _RESPONSE_PATH,
            # A custom body may be as large as the receiver's plan allows a request body to be,
            # above the app-wide cap; JSON escaping may double it. The plan limit is checked again.
            request_max_body_size=2 * largest_webhook_body(plans) + _RESPONSE_OVERHEAD,
            summary="Set what the receive URL answers",
            description="From the next request on, the receive URL answers with this `status`,"
            " `headers` and `body` (HEAD: no body) after `delay_ms` (at most the plan's"
            " `response_delay_ms_max`); the request is stored as before."
            " `X-Webhook-Request-Id` is always added.",
            tags=["webhooks"],
        )(set_response),
        reset_response,
        show_verify,
        set_verify,
        stop_verify,
    ]
