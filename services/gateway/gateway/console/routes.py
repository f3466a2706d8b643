"""The console's pages: server-rendered, calling the same functions as the JSON routes (ADR 0021).

Pages reached with a resource's token (a resource's page, the webhook inspector) get the token
from the URL's fragment and call the JSON API from the page's script; pages of an account use
the session cookie and post forms carrying a CSRF token. ``GET /claim`` answers browsers with
the claim page and everyone else with the JSON preview, unchanged.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import structlog
from litestar import Request, Response, Router, get, post
from litestar.datastructures import FormMultiDict
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from gateway.accounts.auth import Principal, Scope, authenticate, issue_session
from gateway.accounts.routes import (
    AccessTokenIssued,
    EmailPassword,
    NewAccessToken,
    issue_access_token,
    register_account,
    revoke_access_token_of,
    rotate,
)
from gateway.claims.routes import (
    PREVIEW_DESCRIPTION,
    PREVIEW_SUMMARY,
    ClaimPreview,
    TokenQuery,
    claim_preview,
    claim_resources,
    token_text,
)
from gateway.console.links import (
    DASHBOARD_PATH,
    RESOURCE_PAGE_PATH,
    STACK_PAGE_PATH,
    WEBHOOK_PAGE_PATH,
)
from gateway.console.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    PAGE_HEADERS,
    Csrf,
    cleared_session_cookie,
    console_principal,
    session_cookie,
    wants_html,
    with_page_headers,
)
from gateway.context import GatewayContext
from gateway.errors import HTTP_STATUS, error_response, to_error
from gateway.http.middleware import request_id_of
from gateway.http.schemas import ResourceInfo
from gateway.resources.routes import (
    KIND_ROUTES,
    delete_with_backing,
    live,
    open_credentials,
    owned_by,
    resource_info,
)
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import ResourceKind

log = structlog.get_logger("gateway.console")

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
LOGIN_PATH = "/console/login"
# What each kind is called on the start page and in the dashboard.
KIND_LABELS = {
    ResourceKind.POSTGRES: "Postgres",
    ResourceKind.REDIS: "Redis",
    ResourceKind.MONGO: "MongoDB",
    ResourceKind.NATS: "NATS JetStream",
    ResourceKind.S3: "S3 bucket",
    ResourceKind.WEBHOOK: "Webhook receiver",
    ResourceKind.STACK: "App stack",
}
# Errors a page explains in words of its own, with what to do next.
_CLAIM_TROUBLE = {
    ErrorCode.CLAIM_TOKEN_EXPIRED: "This claim link has expired",
    ErrorCode.INVALID_CLAIM_TOKEN: "This is not a valid claim link",
    ErrorCode.CLAIM_ALREADY_USED: "This claim link was already used",
    ErrorCode.NOTHING_TO_CLAIM: "Nothing left to claim",
}


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja over the console's templates (the engine escapes every value by default)."""
    return TemplateConfig(directory=TEMPLATES_DIR, engine=JinjaTemplateEngine)


# -- helpers ------------------------------------------------------------------------------------


def _page(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    name: str,
    principal: Principal | None,
    *,
    status_code: int = 200,
    **context: Any,  # noqa: ANN401  (template values are anything)
) -> Template:
    csrf = Csrf(ctx, request)
    return Template(
        template_name=name,
        context={
            "signed_in": principal is not None,
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf.token(principal),
            "kind_labels": {kind.value: label for kind, label in KIND_LABELS.items()},
            **context,
        },
        status_code=status_code,
        cookies=csrf.cookies(),
    )


def _field(form: FormMultiDict, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _safe_next(value: str) -> str:
    """A path on this site to go to after signing in (never another site: no open redirect)."""
    if value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return DASHBOARD_PATH


async def _checked_form(
    request: Request[Any, Any, Any], ctx: GatewayContext, principal: Principal | None
) -> FormMultiDict:
    form = await request.form()
    Csrf(ctx, request).check(_field(form, CSRF_FIELD) or None, principal)
    return form


async def _signed_in(request: Request[Any, Any, Any], ctx: GatewayContext) -> Principal:
    principal = await console_principal(request, ctx)
    if principal is None:
        msg = "Your session has ended. Sign in again."
        raise SpinupError(ErrorCode.UNAUTHORIZED, msg)
    return principal


async def _owned(ctx: GatewayContext, principal: Principal, resource_id: uuid.UUID) -> Any:  # noqa: ANN401
    return live(await owned_by(ctx, principal, resource_id))


# -- errors -------------------------------------------------------------------------------------


def console_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A page for a browser; the API's JSON error for everyone else (scripts, API clients)."""
    if not wants_html(request):
        return error_response(request, exc)
    error = to_error(exc)
    status = HTTP_STATUS[error.code]
    if status >= 500 and not isinstance(exc, SpinupError):  # noqa: PLR2004
        log.error("gateway.console.crashed", path=request.url.path, exc_info=exc)
    if error.code is ErrorCode.UNAUTHORIZED:
        return Redirect(f"{LOGIN_PATH}?next={DASHBOARD_PATH}", status_code=303)
    return Template(
        template_name="error.html",
        context={
            "title": "Something went wrong",
            "status": status,
            "code": error.code.value,
            "message": error.message,
            "request_id": request_id_of(request.scope),
            "signed_in": False,
            "kind_labels": {},
        },
        status_code=status,
        headers=PAGE_HEADERS,
    )


# -- start page ---------------------------------------------------------------------------------


class ServiceIndex(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /`` for an API client: where to start."""

    ok: bool = True
    name: str = "Spinup"
    docs_url: str
    llms_txt_url: str
    console_url: str


@get("/", include_in_schema=False)
async def start_page(request: Request[Any, Any, Any], ctx: GatewayContext) -> Response[Any]:
    """What Spinup is, and a button per kind that makes one anonymously."""
    base = ctx.settings.public_url
    if not wants_html(request):
        return Response(
            ServiceIndex(
                docs_url=f"{base}/schema", llms_txt_url=f"{base}/llms.txt", console_url=base
            )
        )
    principal = await console_principal(request, ctx)
    kinds = [
        {"path": route.path, "kind": route.kind.value, "label": KIND_LABELS[route.kind]}
        for route in KIND_ROUTES
    ]
    return _page(
        request, ctx, "start.html", principal, kinds=kinds, public_url=base, title="Start here"
    )


# -- claim --------------------------------------------------------------------------------------


@get(
    "/claim",
    summary=PREVIEW_SUMMARY,
    description=PREVIEW_DESCRIPTION + " A browser (Accept: text/html) gets the claim page instead.",
    tags=["claim"],
    # Registered beside POST /claim (one route per path), with the console's page manners.
    after_request=with_page_headers,
    exception_handlers={Exception: console_error},
    responses={
        200: ResponseSpec(
            data_container=ClaimPreview,
            description="The preview (JSON); a browser gets the claim page (HTML).",
        )
    },
)
async def claim_link(
    request: Request[Any, Any, Any], ctx: GatewayContext, t: str = TokenQuery
) -> Response[Any]:
    """``GET /claim?t=…``, where every ``claim_url`` points."""
    if not wants_html(request):
        return Response(await claim_preview(ctx, await authenticate(request, ctx), t))
    principal = await console_principal(request, ctx)
    try:
        preview = await claim_preview(ctx, principal, t)
    except SpinupError as exc:
        return _claim_trouble(request, ctx, principal, exc)
    if preview.used:
        trouble = SpinupError(
            ErrorCode.CLAIM_ALREADY_USED,
            "Claim links work once, and this one has been used. If it was you, your resources"
            " are on your dashboard. Otherwise use the claim_url of a newer create response.",
        )
        return _claim_trouble(request, ctx, principal, trouble)
    if not preview.resources:
        trouble = SpinupError(
            ErrorCode.NOTHING_TO_CLAIM,
            "The resources this link names were claimed, deleted or have expired.",
        )
        return _claim_trouble(request, ctx, principal, trouble)
    return _page(
        request,
        ctx,
        "claim.html",
        principal,
        title="Claim your resources",
        preview=preview,
        claim_token=token_text(t),
        here=f"/claim?t={quote(token_text(t))}",
    )


def _claim_trouble(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    principal: Principal | None,
    exc: SpinupError,
) -> Template:
    if exc.code not in _CLAIM_TROUBLE:
        raise exc
    return _page(
        request,
        ctx,
        "claim_trouble.html",
        principal,
        status_code=HTTP_STATUS[exc.code],
        title=_CLAIM_TROUBLE[exc.code],
        headline=_CLAIM_TROUBLE[exc.code],
        message=exc.message,
        code=exc.code.value,
    )


@post("/console/claim", include_in_schema=False, status_code=200)
async def claim_submit(request: Request[Any, Any, Any], ctx: GatewayContext) -> Template:
    """The Claim button: ``POST /claim``'s function, with the signed-in account."""
    principal = await _signed_in(request, ctx)
    form = await _checked_form(request, ctx, principal)
    try:
        principal.require(Scope.PROVISION)
        result = await claim_resources(
            ctx, principal, _field(form, "t"), request_id_of(request.scope)
        )
    except SpinupError as exc:
        return _claim_trouble(request, ctx, principal, exc)
    return _page(request, ctx, "claimed.html", principal, title="Claimed", result=result)


# -- sign in, sign up, sign out -----------------------------------------------------------------


@get(LOGIN_PATH, include_in_schema=False)
async def login_page(request: Request[Any, Any, Any], ctx: GatewayContext) -> Response[Any]:
    """Sign in or create an account; ``?next=`` is where to go after."""
    next_path = request.query_params.get("next", DASHBOARD_PATH)
    if await console_principal(request, ctx) is not None:
        return Redirect(_safe_next(next_path), status_code=303)
    return _page(request, ctx, "login.html", None, title="Sign in", next=_safe_next(next_path))


def _signed_in_response(ctx: GatewayContext, account_id: uuid.UUID, next_path: str) -> Redirect:
    session = issue_session(ctx.settings.jwt_key, account_id, ttl_s=ctx.settings.session_ttl_s)
    return Redirect(
        _safe_next(next_path),
        status_code=303,
        cookies=[session_cookie(ctx, session.token, ctx.settings.session_ttl_s)],
    )


async def _account_form(
    request: Request[Any, Any, Any], ctx: GatewayContext
) -> tuple[EmailPassword, str]:
    form = await _checked_form(request, ctx, await console_principal(request, ctx))
    data = EmailPassword(email=_field(form, "email"), password=_field(form, "password"))
    return data, _field(form, "next")


@post("/console/login", include_in_schema=False, status_code=303)
async def login_submit(request: Request[Any, Any, Any], ctx: GatewayContext) -> Response[Any]:
    """Sign in: ``POST /auth/login``'s function; the session goes in the cookie."""
    data, next_path = await _account_form(request, ctx)
    try:
        account = await ctx.accounts.log_in(data.email, data.password)
    except SpinupError as exc:
        return _login_again(request, ctx, exc, next_path, data.email, mode="login")
    return _signed_in_response(ctx, account.id, next_path)


@post("/console/register", include_in_schema=False, status_code=303)
async def register_submit(request: Request[Any, Any, Any], ctx: GatewayContext) -> Response[Any]:
    """Create an account: ``POST /auth/register``'s function; the session goes in the cookie."""
    data, next_path = await _account_form(request, ctx)
    try:
        account = await register_account(ctx, data, request_id_of(request.scope))
    except SpinupError as exc:
        return _login_again(request, ctx, exc, next_path, data.email, mode="register")
    return _signed_in_response(ctx, account.id, next_path)


def _login_again(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    exc: SpinupError,
    next_path: str,
    email: str,
    *,
    mode: str,
) -> Template:
    """The form again, with what was wrong (4xx errors only; the rest is the error page)."""
    status = HTTP_STATUS[exc.code]
    if status >= 500:  # noqa: PLR2004
        raise exc
    return _page(
        request,
        ctx,
        "login.html",
        None,
        status_code=status,
        title="Sign in",
        next=_safe_next(next_path),
        error=exc.message,
        error_for=mode,
        email=email,
    )


@post("/console/logout", include_in_schema=False, status_code=303)
async def logout_submit(request: Request[Any, Any, Any], ctx: GatewayContext) -> Redirect:
    """Sign out: the session JWT stops working everywhere, and the cookie is dropped."""
    principal = await console_principal(request, ctx)
    await _checked_form(request, ctx, principal)
    if principal is not None and principal.session is not None:
        await ctx.accounts.revoke_session(
            principal.account_id,
            jti=principal.session.jti,
            expires_at=principal.session.expires_at,
            correlation_id=request_id_of(request.scope),
        )
    return Redirect("/", status_code=303, cookies=[cleared_session_cookie(ctx)])


# -- dashboard ----------------------------------------------------------------------------------


async def _dashboard(
    request: Request[Any, Any, Any],
    ctx: GatewayContext,
    principal: Principal,
    **notice: Any,  # noqa: ANN401  (template values are anything)
) -> Template:
    account = await ctx.accounts.get(principal.account_id)
    states = await ctx.resources.of_account(principal.account_id, None)
    usage = await ctx.resources.usage_of([state.resource_id for state in states])
    # Without credentials: they are revealed one resource at a time, on request.
    resources = [resource_info(state, None, usage.get(state.resource_id)) for state in states]
    tokens = await ctx.accounts.access_tokens(principal.account_id)
    return _page(
        request,
        ctx,
        "dashboard.html",
        principal,
        title="Dashboard",
        account=account,
        resources=resources,
        tokens=tokens,
        scopes=[scope.value for scope in Scope],
        **notice,
    )


@get(DASHBOARD_PATH, include_in_schema=False)
async def dashboard(request: Request[Any, Any, Any], ctx: GatewayContext) -> Response[Any]:
    """The account's resources and access tokens."""
    principal = await console_principal(request, ctx)
    if principal is None:
        return Redirect(f"{LOGIN_PATH}?next={DASHBOARD_PATH}", status_code=303)
    return await _dashboard(request, ctx, principal)


@post("/console/resources/{resource_id:uuid}/credentials", include_in_schema=False, status_code=200)
async def reveal_credentials(
    request: Request[Any, Any, Any], ctx: GatewayContext, resource_id: uuid.UUID
) -> ResourceInfo:
    """A resource's credentials, for the page's "reveal" (the CSRF token in a header)."""
    principal = await _signed_in(request, ctx)
    Csrf(ctx, request).check(request.headers.get(CSRF_HEADER), principal)
    state = await _owned(ctx, principal, resource_id)
    return resource_info(state, open_credentials(ctx, state), None)


@post("/console/resources/{resource_id:uuid}/rotate", include_in_schema=False, status_code=200)
async def rotate_submit(
    request: Request[Any, Any, Any], ctx: GatewayContext, resource_id: uuid.UUID
) -> Template:
    """Rotate: ``POST /resources/{token}/rotate``'s function; the new URL is shown."""
    principal = await _signed_in(request, ctx)
    await _checked_form(request, ctx, principal)
    state = await _owned(ctx, principal, resource_id)
    issued = await rotate(ctx, state, request_id_of(request.scope))
    return await _dashboard(request, ctx, principal, rotated=issued, rotated_name=state.name)


@get("/console/resources/{resource_id:uuid}", include_in_schema=False)
async def resource_detail(
    request: Request[Any, Any, Any], ctx: GatewayContext, resource_id: uuid.UUID
) -> Template:
    """One of the account's resources: details, usage, limits; reveal, rotate, delete."""
    principal = await _signed_in(request, ctx)
    state = await _owned(ctx, principal, resource_id)
    measured = (await ctx.resources.usage_of([state.resource_id])).get(state.resource_id)
    info = resource_info(state, None, measured)
    return _page(request, ctx, "resource_detail.html", principal, title="Resource", resource=info)


@get("/console/resources/{resource_id:uuid}/delete", include_in_schema=False)
async def delete_confirm(
    request: Request[Any, Any, Any], ctx: GatewayContext, resource_id: uuid.UUID
) -> Template:
    """The confirmation before a delete: a page of its own, usable without script or mouse."""
    principal = await _signed_in(request, ctx)
    state = await _owned(ctx, principal, resource_id)
    info = resource_info(state, None, None)
    return _page(request, ctx, "delete.html", principal, title="Delete", resource=info)


@post("/console/resources/{resource_id:uuid}/delete", include_in_schema=False, status_code=200)
async def delete_submit(
    request: Request[Any, Any, Any], ctx: GatewayContext, resource_id: uuid.UUID
) -> Template:
    """Delete: ``DELETE /resources/{token}``'s function."""
    principal = await _signed_in(request, ctx)
    await _checked_form(request, ctx, principal)
    state = await _owned(ctx, principal, resource_id)
    await delete_with_backing(ctx, state, request_id_of(request.scope))
    return await _dashboard(request, ctx, principal, deleted=state.name or str(state.resource_id))


@post("/console/tokens", include_in_schema=False, status_code=200)
async def token_create(request: Request[Any, Any, Any], ctx: GatewayContext) -> Template:
    """New access token: ``POST /auth/tokens``'s function; the secret is shown this once."""
    principal = await _signed_in(request, ctx)
    form = await _checked_form(request, ctx, principal)
    days = _field(form, "expires_in_days")
    try:
        data = msgspec.convert(
            {
                "name": _field(form, "name").strip(),
                "scopes": [value for value in form.getall("scopes", []) if isinstance(value, str)],
                "expires_in_days": int(days) if days.isdigit() else None,
            },
            NewAccessToken,
        )
    except msgspec.ValidationError as exc:
        msg = f"The token needs a name (1 to 64 characters) and at least one scope ({exc})."
        return await _dashboard(request, ctx, principal, token_error=msg)
    issued: AccessTokenIssued = await issue_access_token(
        ctx, principal, data, request_id_of(request.scope)
    )
    return await _dashboard(request, ctx, principal, new_token=issued)


@post("/console/tokens/{token_id:uuid}/revoke", include_in_schema=False, status_code=200)
async def token_revoke(
    request: Request[Any, Any, Any], ctx: GatewayContext, token_id: uuid.UUID
) -> Template:
    """Revoke: ``DELETE /auth/tokens/{id}``'s function."""
    principal = await _signed_in(request, ctx)
    await _checked_form(request, ctx, principal)
    revoked = await revoke_access_token_of(ctx, principal, token_id, request_id_of(request.scope))
    return await _dashboard(request, ctx, principal, revoked=revoked.name)


# -- pages reached with a resource's token (in the fragment) ------------------------------------


@get(RESOURCE_PAGE_PATH, include_in_schema=False)
async def resource_page(request: Request[Any, Any, Any], ctx: GatewayContext) -> Template:
    """A resource's credentials, usage and expiry; rotate and delete (its script calls the API)."""
    principal = await console_principal(request, ctx)
    return _page(request, ctx, "resource.html", principal, title="Resource")


@get(WEBHOOK_PAGE_PATH, include_in_schema=False)
async def webhook_page(request: Request[Any, Any, Any], ctx: GatewayContext) -> Template:
    """The webhook inspector: captured requests, live (its script follows the SSE stream)."""
    principal = await console_principal(request, ctx)
    return _page(request, ctx, "webhook.html", principal, title="Webhook inspector")


@get(STACK_PAGE_PATH, include_in_schema=False)
async def stack_page(request: Request[Any, Any, Any], ctx: GatewayContext) -> Template:
    """A stack's services, backing resources and live logs; stop, start, restart, delete."""
    principal = await console_principal(request, ctx)
    return _page(request, ctx, "stack.html", principal, title="App stack")


def console_router() -> Router:
    """Every console route but ``GET /claim``, its assets, security headers and error pages.

    ``GET /claim`` (``claim_link``) is registered with the app's routes: a path takes its
    handlers from one place.
    """
    return Router(
        path="/",
        route_handlers=[
            start_page,
            claim_submit,
            login_page,
            login_submit,
            register_submit,
            logout_submit,
            dashboard,
            reveal_credentials,
            rotate_submit,
            resource_detail,
            delete_confirm,
            delete_submit,
            token_create,
            token_revoke,
            resource_page,
            webhook_page,
            stack_page,
            create_static_files_router(
                path="/console/static", directories=[STATIC_DIR], include_in_schema=False
            ),
        ],
        after_request=with_page_headers,
        exception_handlers={Exception: console_error},
    )
