"""The web console in a real browser: start page, claim page, dashboard, webhook inspector.

Each test drives headless chromium against the running stack and proves the result with the
API or a real client library (asyncpg), never by the page's word alone.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from devstack.stack import Stack
from gateway.claims.routes import mint_claim_token
from shared.config import Env
from tests.browser.conftest import DESKTOP, PASSWORD, PHONE, screenshot

pytestmark = pytest.mark.e2e


async def _query_one(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        value: int = await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return value


async def _refused(url: str) -> bool:
    try:
        await _query_one(url)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return True
    except asyncpg.InvalidCatalogNameError:  # the database itself is gone
        return True
    return False


async def _register(http_api: httpx.AsyncClient) -> tuple[str, str]:
    """A new account over the API: (email, session token)."""
    email = f"console-{uuid.uuid4().hex[:10]}@example.com"
    response = await http_api.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return email, response.json()["token"]


async def _sign_in(page: Page, email: str) -> None:
    await page.goto("/console/login")
    await page.get_by_label("Email").first.fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


# -- start page ---------------------------------------------------------------------------------


async def test_start_page_creates_a_database_whose_shown_url_connects(page: Page) -> None:
    response = await page.goto("/")
    assert response is not None
    assert response.status == 200
    await expect(
        page.get_by_role("heading", name="Real infrastructure in one HTTP call.")
    ).to_be_visible()
    await page.get_by_role("button", name=re.compile("^Postgres")).click()
    result = page.locator("#result")
    await expect(result).to_be_visible()
    url = (await page.locator("#result-url").text_content() or "").strip()
    assert url.startswith("postgresql://")
    env_lines = await page.locator("#result-env").text_content()
    assert env_lines == f"DATABASE_URL={url}"
    assert (await page.locator("#result-claim").text_content() or "").startswith("http")
    await expect(page.locator("#result-expiry")).to_contain_text(re.compile(r"\d+ h"))
    # The copy button puts exactly the shown URL on the clipboard.
    await page.get_by_role("button", name="Copy the connection URL").click()
    assert await page.evaluate("navigator.clipboard.readText()") == url
    await screenshot(page, "start")
    assert await _query_one(url) == 1


async def test_start_page_works_from_the_keyboard_at_phone_width(
    context: BrowserContext, page: Page
) -> None:
    await page.set_viewport_size(PHONE)
    await page.goto("/")
    # No sideways scrolling on a phone.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    first_kind = page.locator("[data-create]").first
    await first_kind.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#result")).to_be_visible()
    # The result's heading takes the focus, so a keyboard or screen-reader user lands on it.
    assert await page.evaluate("document.activeElement.id") == "result-h"
    await screenshot(page, "start-phone")


async def test_pages_follow_the_systems_dark_theme(browser: Browser, stack: Stack) -> None:
    context = await browser.new_context(
        base_url=stack.gateway_url, viewport=DESKTOP, color_scheme="dark"
    )
    try:
        page = await context.new_page()
        await page.goto("/console/login")
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(14, 17, 22)"
        await screenshot(page, "login-dark")
    finally:
        await context.close()


# Controls a screen reader could not name: no text, no aria-label, no <label>, no title.
UNLABELLED_JS = """() => [...document.querySelectorAll(
        'button, a[href], input:not([type=hidden]), select, textarea')]
    .filter(el => !(el.getAttribute('aria-label') || el.textContent.trim()
                    || (el.labels && el.labels.length) || el.title))
    .map(el => el.outerHTML)"""


async def test_every_control_has_a_label(page: Page, http_api: httpx.AsyncClient) -> None:
    email, _ = await _register(http_api)
    unlabelled_js = UNLABELLED_JS
    await page.goto("/")
    assert await page.evaluate(unlabelled_js) == []
    await page.goto("/console/login")
    assert await page.evaluate(unlabelled_js) == []
    await _sign_in(page, email)
    assert await page.evaluate(unlabelled_js) == []


# -- claim --------------------------------------------------------------------------------------


async def test_claim_link_page_registers_claims_and_dashboard_shows_them_permanent(
    context: BrowserContext, page: Page, http_api: httpx.AsyncClient
) -> None:
    db = (await http_api.post("/db/new", json={"name": "claim-me"})).json()
    cache = (await http_api.post("/cache/new")).json()
    claim_url = cache["claim_url"]  # the newer response: it names both

    # An API client still gets the JSON preview at the same URL.
    api_preview = await http_api.get(claim_url)
    assert api_preview.headers["content-type"].startswith("application/json")
    assert {r["id"] for r in api_preview.json()["resources"]} >= {db["id"], cache["id"]}

    await page.goto(claim_url)
    await expect(page.get_by_role("heading", name="Claim your resources")).to_be_visible()
    await expect(page.get_by_role("cell", name=re.compile("claim-me"))).to_be_visible()
    await screenshot(page, "claim")
    assert await page.evaluate(UNLABELLED_JS) == []
    email = f"claimer-{uuid.uuid4().hex[:10]}@example.com"
    signup = page.locator("form[action='/console/register']")
    await signup.get_by_label("Email").fill(email)
    await signup.get_by_label(re.compile("^Password")).fill(PASSWORD)
    await signup.get_by_role("button", name="Create account").click()

    # Back on the claim page, signed in: one button.
    claim_button = page.get_by_role("button", name=re.compile(r"^Claim \d+ resources?$"))
    await expect(claim_button).to_be_visible()
    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["spinup_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["secure"] is False  # plain http here; Secure whenever the console is HTTPS
    assert cookies["spinup_csrf"]["httpOnly"] is True

    await claim_button.click()
    await expect(page.get_by_role("heading", name="Claimed")).to_be_visible()
    await page.get_by_role("link", name="Go to your dashboard").click()
    for resource in (db, cache):
        row = page.locator(f"tr[data-resource='{resource['id']}']")
        await expect(row).to_contain_text("never")
    await screenshot(page, "dashboard")

    for resource in (db, cache):
        shown = (await http_api.get(f"/resources/{resource['token']}")).json()
        assert shown["claimed"] is True
        assert shown["expires_at"] is None
    assert await _query_one(db["connection_url"]) == 1  # same URL, still working

    # The link works once: opened again it says so, with what to do.
    response = await page.goto(claim_url)
    assert response is not None
    assert response.status == 409
    await expect(
        page.get_by_role("heading", name="This claim link was already used")
    ).to_be_visible()


async def test_forged_and_expired_claim_links_get_a_page_saying_so(
    page: Page, env: dict[str, str]
) -> None:
    response = await page.goto("/claim?t=not-a-claim-token")
    assert response is not None
    assert response.status == 400
    await expect(page.get_by_role("heading", name="This is not a valid claim link")).to_be_visible()
    await screenshot(page, "claim-invalid")

    expired = mint_claim_token(
        Env(env).key("SPINUP_JWT_KEY"), "fp", ttl_seconds=60, now=time.time() - 3600
    )
    response = await page.goto(f"/claim?t={expired}")
    assert response is not None
    assert response.status == 410
    await expect(page.get_by_role("heading", name="This claim link has expired")).to_be_visible()
    await expect(page.get_by_role("link", name="start page")).to_be_visible()


# -- dashboard ----------------------------------------------------------------------------------


async def test_dashboard_reveals_rotates_and_deletes_and_old_credentials_are_refused(
    page: Page, http_api: httpx.AsyncClient
) -> None:
    email, session = await _register(http_api)
    created = await http_api.post(
        "/db/new", json={"name": "dash-db"}, headers={"Authorization": f"Bearer {session}"}
    )
    assert created.status_code == 201, created.text
    db = created.json()
    first_url = db["connection_url"]
    await _sign_in(page, email)

    # Its detail page: facts and limits; the URL only when asked for.
    await page.get_by_role("link", name="dash-db", exact=True).click()
    await expect(page.get_by_role("heading", name="Postgres dash-db")).to_be_visible()
    await expect(page.locator("[data-secret]")).to_be_hidden()
    await page.get_by_role("button", name="Show URL").click()
    await expect(page.locator("[data-secret]")).to_have_text(first_url)
    await screenshot(page, "resource-detail")
    await page.get_by_role("link", name="← Dashboard").click()

    row = page.locator(f"tr[data-resource='{db['id']}']")
    secret = row.locator("[data-secret]")
    assert (await secret.text_content() or "") == ""  # not in the page until asked for
    await row.get_by_role("button", name="Show URL").click()
    await expect(secret).to_have_text(first_url)

    await row.get_by_role("button", name="Rotate credentials of dash-db").click()
    rotated = page.locator("#rotated-url")
    await expect(rotated).to_be_visible()
    second_url = (await rotated.text_content() or "").strip()
    assert second_url != first_url
    assert await _refused(first_url)
    assert await _query_one(second_url) == 1

    await (
        page.locator(f"tr[data-resource='{db['id']}']")
        .get_by_role("link", name="Delete dash-db")
        .click()
    )
    await expect(page.get_by_role("heading", name="Delete dash-db?")).to_be_visible()
    await page.get_by_role("button", name="Delete for good").click()
    await expect(page.get_by_role("status").filter(has_text="Deleted dash-db")).to_be_visible()
    await expect(page.locator(f"tr[data-resource='{db['id']}']")).to_have_count(0)
    assert await _refused(second_url)
    gone = await http_api.get(f"/resources/{db['token']}")
    assert gone.status_code == 404


async def test_dashboard_access_tokens_are_shown_once_and_revoked(
    page: Page, http_api: httpx.AsyncClient
) -> None:
    email, _ = await _register(http_api)
    await _sign_in(page, email)
    await page.get_by_label("Name").fill("ci")
    await page.get_by_role("button", name="Create token").click()
    token = (await page.locator("#new-token").text_content() or "").strip()
    assert token.startswith("spp_")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await http_api.get("/auth/user", headers=headers)).status_code == 200

    await page.get_by_role("button", name="Revoke token ci").click()
    await expect(page.get_by_role("status").filter(has_text="Revoked")).to_be_visible()
    await expect(page.locator("#new-token")).to_have_count(0)  # never shown again
    assert (await http_api.get("/auth/user", headers=headers)).status_code == 401

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    response = await page.goto("/console")
    assert response is not None
    assert urlsplit(page.url).path == "/console/login"


# -- security -----------------------------------------------------------------------------------


async def test_state_changing_forms_refuse_a_missing_or_wrong_csrf_token(
    context: BrowserContext, page: Page, http_api: httpx.AsyncClient
) -> None:
    email, _ = await _register(http_api)
    await _sign_in(page, email)
    good = await page.locator("form[action='/console/tokens'] input[name=csrf_token]").input_value()
    json_accept = {"Accept": "application/json"}
    for form in ({"name": "x", "scopes": "read"}, {"name": "x", "csrf_token": "0" * 64}):
        refused = await page.request.post("/console/tokens", form=form, headers=json_accept)
        assert refused.status == 403
        assert (await refused.json())["error"] == "csrf_failed"
    # A browser (Accept: text/html) gets a page saying what to do.
    refused_page = await page.request.post("/console/tokens", form={"name": "x", "scopes": "read"})
    assert refused_page.status == 403
    assert "Reload the page" in await refused_page.text()
    # The token is bound to this browser: without its cookie the same token is refused.
    async with httpx.AsyncClient(base_url=http_api.base_url) as stranger:
        session = next(c for c in await context.cookies() if c["name"] == "spinup_session")
        stranger.cookies.set("spinup_session", session["value"])
        forged = await stranger.post(
            "/console/tokens",
            data={"name": "x", "scopes": "read", "csrf_token": good},
            headers=json_accept,
        )
        assert forged.status_code == 403
    accepted = await page.request.post(
        "/console/tokens", form={"name": "ok", "scopes": "read", "csrf_token": good}
    )
    assert accepted.status == 200
    assert "spp_" in await accepted.text()


@pytest.mark.parametrize("path", ["/", "/console/login", "/console/webhook", "/console/resource"])
async def test_pages_forbid_inline_script_and_framing(
    http_api: httpx.AsyncClient, path: str
) -> None:
    response = await http_api.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    # Every script is a file of the gateway's own: none inline, none from elsewhere.
    scripts = re.findall(r"<script\b[^>]*>", response.text)
    assert all(re.search(r'src="/console/static/[\w.-]+\.js"', tag) for tag in scripts), scripts
    assert "http://" not in re.sub(r"http://127\.0\.0\.1:\d+", "", response.text)


async def test_api_answers_stay_json_and_carry_console_url(http_api: httpx.AsyncClient) -> None:
    created = (await http_api.post("/cache/new")).json()
    assert created["console_url"].endswith(f"/console/resource#{created['token']}")
    shown = (await http_api.get(f"/resources/{created['token']}")).json()
    assert shown["console_url"] == created["console_url"]
    hook = (await http_api.post("/webhook/new")).json()
    assert hook["console_url"].endswith(f"/console/webhook#{hook['token']}")
    # The token is in the fragment: a browser never sends it, so no log or Referer holds it.
    assert "#" in hook["console_url"]
    assert urlsplit(hook["console_url"]).path == "/console/webhook"
    not_found = await http_api.get("/console/nowhere")
    assert not_found.headers["content-type"].startswith("application/json")


# -- resource page and webhook inspector --------------------------------------------------------


async def test_resource_page_reveals_rotates_and_deletes_by_token(
    page: Page, http_api: httpx.AsyncClient
) -> None:
    db = (await http_api.post("/db/new", json={"name": "page-db"})).json()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(db["console_url"])
    await expect(page.get_by_role("heading", name="Postgres database page-db")).to_be_visible()
    await expect(page.locator("#res-url")).to_be_hidden()
    await page.get_by_role("button", name="Reveal").click()
    await expect(page.locator("#res-url")).to_have_text(db["connection_url"])
    await screenshot(page, "resource")
    before = (await http_api.get(f"/resources/{db['token']}")).json()["expires_at"]
    await page.get_by_role("button", name="Extend by 24 h").click()
    await expect(page.locator("#action-status")).to_contain_text("Extended")
    after = (await http_api.get(f"/resources/{db['token']}")).json()["expires_at"]
    assert after > before
    await page.get_by_role("button", name="Rotate credentials").click()
    await expect(page.locator("#action-status")).to_contain_text("no longer work")
    new_url = (await page.locator("#res-url").text_content() or "").strip()
    assert new_url != db["connection_url"]
    assert await _refused(db["connection_url"])
    assert await _query_one(new_url) == 1
    await page.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("alert")).to_contain_text("Deleted")
    assert await _refused(new_url)


async def _curl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        *args,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert out == b"200", out


async def test_webhook_inspector_shows_curl_requests_live_and_clears(
    page: Page, http_api: httpx.AsyncClient
) -> None:
    hook: dict[str, Any] = (await http_api.post("/webhook/new")).json()
    receive_url = hook["credentials"]["receive_url"]
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(hook["console_url"])
    await expect(page.locator("#receive-url")).to_have_text(receive_url)
    await expect(page.locator("#live-state")).to_contain_text("Live")

    await _curl(
        "-X",
        "POST",
        f"{receive_url}/orders?source=shop",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"order": 42, "items": ["a", "b"]}',
    )
    await _curl(f"{receive_url}/ping?x=1")
    await _curl(
        "-X",
        "PUT",
        f"{receive_url}/blob",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        "@/usr/bin/true",
    )

    items = page.locator("#request-list li")
    await expect(items).to_have_count(3)  # live, without a reload
    await expect(page.locator("#request-count")).to_have_text("3")
    await items.filter(has_text="/orders").get_by_role("button").click()
    detail = page.locator("#request-detail")
    await expect(detail).to_contain_text('"order": 42')  # pretty-printed JSON
    await expect(detail).to_contain_text("source=shop")
    await expect(detail).to_contain_text("content-type")
    await expect(detail).to_contain_text("127.0.0.1")
    await screenshot(page, "webhook")
    assert await page.evaluate(UNLABELLED_JS) == []
    await detail.get_by_role("button", name="Copy as curl").click()
    curl = await page.evaluate("navigator.clipboard.readText()")
    assert curl.startswith("curl -X POST")
    assert "/orders?source=shop" in curl

    await items.filter(has_text="/blob").get_by_role("button").click()
    await expect(detail).to_contain_text("binary")
    await expect(detail).to_contain_text("7f 45 4c 46")  # an ELF file's first bytes, as hex

    await page.get_by_role("button", name="Clear history").click()
    await expect(items).to_have_count(0)
    stored = (await http_api.get(f"/webhook/{hook['token']}/requests")).json()
    assert stored["count"] == 0
    await _curl(f"{receive_url}/after-clear")
    await expect(items).to_have_count(1)


async def test_a_signed_in_visitor_sends_no_console_cookie_to_a_receiver(
    page: Page, http_api: httpx.AsyncClient, stack: Stack
) -> None:
    # An attacker's link to its own receiver, on the console's host or its own (ADR 0067).
    email, _ = await _register(http_api)
    await _sign_in(page, email)
    hook: dict[str, Any] = (await http_api.post("/webhook/new")).json()
    receive_url = hook["credentials"]["receive_url"]
    lure = f"{stack.gateway_url}{urlsplit(receive_url).path}/lure"
    answer = await page.goto(lure)
    assert answer is not None
    assert answer.status == 200
    assert page.url == f"{receive_url}/lure"
    await page.goto(f"{receive_url}/direct")
    stored = (await http_api.get(f"/webhook/{hook['token']}/requests")).json()["requests"]
    assert sorted(request["path"] for request in stored) == ["/direct", "/lure"]
    sent_cookies = [value for r in stored for name, value in r["headers"] if name == "cookie"]
    assert not [cookie for cookie in sent_cookies if "spinup_" in cookie], sent_cookies
    # The visitor is still signed in on the console.
    await page.goto("/console")
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


# -- stack page ---------------------------------------------------------------------------------


@pytest.mark.timeout(420)
async def test_stack_page_streams_logs_and_stops_starts_and_deletes(
    page: Page, http_api: httpx.AsyncClient
) -> None:
    dockerfile = (
        b"FROM spinup/base:bookworm\nWORKDIR /srv\n"
        b'CMD ["sh", "-c", "echo hello-from-the-console-test; exec python3 -m http.server 8000"]\n'
    )
    response = await http_api.post(
        "/deploy/new", files={"Dockerfile": ("Dockerfile", dockerfile)}, data={"port": "8000"}
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["console_url"].endswith(f"/console/stack#{created['token']}")
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(created["console_url"])
    await expect(page.locator("#live-state")).to_have_text("Live")
    status = page.locator("#stack-status")
    await expect(status).to_have_text("running", timeout=300_000)
    # The container's own output arrives in the open log stream, without a reload.
    await expect(page.locator("#logs")).to_contain_text("hello-from-the-console-test")
    await expect(page.get_by_role("link", name=created["urls"]["app"])).to_be_visible()
    await screenshot(page, "stack")
    assert await page.evaluate(UNLABELLED_JS) == []

    await page.get_by_role("button", name="Stop", exact=True).click()
    await expect(status).to_have_text("stopped", timeout=60_000)
    await page.get_by_role("button", name="Start", exact=True).click()
    await expect(status).to_have_text("running", timeout=60_000)
    await page.get_by_role("button", name="Delete stack").click()
    await expect(page.get_by_role("alert")).to_contain_text("Deleted")
    gone = await http_api.get(f"/resources/{created['token']}")
    assert gone.status_code == 404
