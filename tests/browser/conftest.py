"""Fixtures for the console's tests: Debian's chromium driven by Playwright, against the stack.

No browser is downloaded: Playwright launches ``/usr/bin/chromium`` (installed by the project's
setup). Every page a test opens fails the test if a script throws or the browser reports a
Content-Security-Policy violation, so a page that works only with inline script cannot pass.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

from devstack.stack import Stack

CHROMIUM = os.environ.get("SPINUP_CHROMIUM", "/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[2]
# Every run saves its screenshots under .spinup (a test run never changes a tracked file); the
# README's come from `SPINUP_SCREENSHOTS=docs/screenshots pytest tests/browser`.
SCREENSHOTS = REPO_ROOT / os.environ.get("SPINUP_SCREENSHOTS", ".spinup/screenshots")
PASSWORD = "correct horse battery staple"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # The machine's chromium runs as an unprivileged user without a usable sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser, stack: Stack) -> AsyncIterator[BrowserContext]:
    opened = await browser.new_context(
        base_url=stack.gateway_url,
        viewport=DESKTOP,
        permissions=["clipboard-read", "clipboard-write"],
        color_scheme="light",
    )
    opened.set_default_timeout(20_000)
    yield opened
    await opened.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # Failed fetches the test provokes on purpose (a 4xx) are logged as errors too;
        # what may never appear is a script error or a policy violation.
        if message.type == "error" and "status of" not in message.text:
            problems.append(message.text)

    opened = await context.new_page()
    opened.on("console", on_console)
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield opened
    assert problems == [], problems


@pytest.fixture
async def http_api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
        yield client


async def screenshot(page: Page, name: str) -> None:
    """Save the page as <name>.png in ``SCREENSHOTS`` (docs/screenshots: the README's)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
