"""The console's content negotiation, CSRF tokens and redirect guard, without a server."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from litestar.testing import RequestFactory

from gateway.console.routes import _safe_next
from gateway.console.security import CSRF_COOKIE, Csrf, wants_html
from shared.contracts.errors import ErrorCode, SpinupError

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def _request(headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None) -> Any:
    cookie_header = "; ".join(f"{name}={value}" for name, value in (cookies or {}).items())
    return RequestFactory().get("/", headers=headers or {}, cookies=cookie_header or None)


def _ctx(url: str = "http://127.0.0.1:8080") -> Any:
    return SimpleNamespace(settings=SimpleNamespace(jwt_key=b"k" * 32, public_url=url))


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("*/*", False),
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        (None, False),
    ],
)
def test_only_a_client_preferring_html_gets_a_page(accept: str | None, html: bool) -> None:
    headers = {"Accept": accept} if accept else {}
    assert wants_html(_request(headers)) is html


def _principal(jti: str) -> Any:
    return SimpleNamespace(session=SimpleNamespace(jti=jti))


def test_a_csrf_token_works_with_its_own_cookie_and_session_only() -> None:
    ctx = _ctx()
    browser = _request(cookies={CSRF_COOKIE: "nonce-a"})
    token = Csrf(ctx, browser).token(_principal("session-1"))
    Csrf(ctx, browser).check(token, _principal("session-1"))
    for request, principal in (
        (_request(cookies={CSRF_COOKIE: "nonce-b"}), _principal("session-1")),  # other browser
        (browser, _principal("session-2")),  # after signing in again
        (browser, None),  # signed out
    ):
        with pytest.raises(SpinupError) as refused:
            Csrf(ctx, request).check(token, principal)
        assert refused.value.code is ErrorCode.CSRF_FAILED


def test_a_browser_without_the_csrf_cookie_is_refused_and_given_one() -> None:
    csrf = Csrf(_ctx(), _request())
    with pytest.raises(SpinupError):
        csrf.check(csrf.token(None), None)
    (cookie,) = csrf.cookies()
    assert cookie.httponly
    assert cookie.samesite == "lax"
    assert not cookie.secure


def test_cookies_are_secure_when_the_console_is_served_over_https() -> None:
    (cookie,) = Csrf(_ctx("https://spinup.example"), _request()).cookies()
    assert cookie.secure


@pytest.mark.parametrize(
    ("wanted", "went"),
    [
        ("/claim?t=abc", "/claim?t=abc"),
        ("/console", "/console"),
        ("https://evil.example/", "/console"),
        ("//evil.example/", "/console"),
        ("/\\evil.example", "/console"),
        ("", "/console"),
    ],
)
def test_after_sign_in_only_a_path_of_this_site_is_followed(wanted: str, went: str) -> None:
    assert _safe_next(wanted) == went
