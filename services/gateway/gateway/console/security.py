"""The console's browser session, CSRF tokens and response headers (ADR 0021).

Why this module is careful: the session cookie carries the same JWT as ``Authorization: Bearer``,
so a cross-site request that rides on it could act as the account. Three things stop that: the
cookie is ``SameSite=Lax`` (no cookie on a cross-site POST), every state-changing console route
checks a CSRF token, and pages forbid inline scripts (CSP), so injected markup cannot run.

The CSRF token is a signed double-submit token: a random value in its own HttpOnly cookie, and
in each form ``HMAC(jwt key, value | session id)``. A page of another site can neither read the
cookie nor compute the HMAC; binding the session id makes a token from before a sign-in useless
after it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.response.file import ASGIFileResponse

from gateway.accounts.auth import Principal, session_principal
from gateway.context import GatewayContext
from shared.contracts.errors import ErrorCode, SpinupError

SESSION_COOKIE = "spinup_session"
CSRF_COOKIE = "spinup_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_CSRF_NONCE_BYTES = 32

# No inline script anywhere, and nothing from another origin: every asset is the gateway's.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # A claim page's URL holds its claim token: never hand it to the next site.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Pages can show credentials: no shared or back-button cache keeps them.
    "Cache-Control": "no-store",
    # A page of another origin that opened this one (window.open) gets no handle on it.
    "Cross-Origin-Opener-Policy": "same-origin",
}


def wants_html(request: Request[Any, Any, Any]) -> bool:
    """Whether the client prefers a page to JSON (a browser navigating, not an API client).

    ``*/*`` (curl, httpx, every SDK) picks JSON: only an explicit ``text/html`` gets a page.
    """
    return request.accept.best_match(["application/json", "text/html"]) == "text/html"


def secure_cookies(ctx: GatewayContext) -> bool:
    """Cookies are ``Secure`` whenever the console is served over HTTPS."""
    return ctx.settings.public_url.startswith("https://")


def session_cookie(ctx: GatewayContext, token: str, max_age: int) -> Cookie:
    """The browser session: the session JWT, out of reach of scripts."""
    return Cookie(
        key=SESSION_COOKIE,
        value=token,
        path="/",
        max_age=max_age,
        httponly=True,
        secure=secure_cookies(ctx),
        samesite="lax",
    )


def cleared_session_cookie(ctx: GatewayContext) -> Cookie:
    """A cookie that makes the browser forget the session."""
    return Cookie(
        key=SESSION_COOKIE,
        value="",
        path="/",
        max_age=0,
        httponly=True,
        secure=secure_cookies(ctx),
        samesite="lax",
    )


async def console_principal(
    request: Request[Any, Any, Any], ctx: GatewayContext
) -> Principal | None:
    """The account signed in through the session cookie; None when absent, expired or ended."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return await session_principal(ctx, token)
    except SpinupError:
        return None


class Csrf:
    """The CSRF nonce of one request: the value its forms carry, and the check of a submission."""

    def __init__(self, ctx: GatewayContext, request: Request[Any, Any, Any]) -> None:
        self._ctx = ctx
        existing = request.cookies.get(CSRF_COOKIE, "")
        #: Set when this response must give the browser its nonce cookie.
        self.new_nonce = None if existing else secrets.token_urlsafe(_CSRF_NONCE_BYTES)
        self._nonce = existing or self.new_nonce or ""

    def token(self, principal: Principal | None) -> str:
        """The token forms of this page carry (bound to the session, when signed in)."""
        session_id = principal.session.jti if principal and principal.session else ""
        message = f"csrf|{self._nonce}|{session_id}".encode()
        return hmac.new(self._ctx.settings.jwt_key, message, hashlib.sha256).hexdigest()

    def check(self, submitted: str | None, principal: Principal | None) -> None:
        """Refuse (403 ``csrf_failed``) a state-changing request without this browser's token."""
        if self.new_nonce is not None or not submitted:
            raise _csrf_failed()
        if not hmac.compare_digest(submitted, self.token(principal)):
            raise _csrf_failed()

    def cookies(self) -> list[Cookie]:
        """The nonce cookie, when this browser has none yet."""
        if self.new_nonce is None:
            return []
        return [
            Cookie(
                key=CSRF_COOKIE,
                value=self.new_nonce,
                path="/",
                httponly=True,
                secure=secure_cookies(self._ctx),
                samesite="lax",
            )
        ]


def _csrf_failed() -> SpinupError:
    msg = (
        "This form expired or did not come from a Spinup page (CSRF check failed)."
        " Reload the page and submit it again."
    )
    return SpinupError(ErrorCode.CSRF_FAILED, msg)


def with_page_headers(response: Response[Any]) -> Response[Any]:
    """The console's security headers on a page (after_request hook of its router).

    Its own stylesheet and scripts (files) may be cached a little; nothing else may.
    """
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    # (The static files router hands this hook its ASGI file response.)
    if isinstance(response, ASGIFileResponse):
        response.headers["Cache-Control"] = "public, max-age=300"
    return response
