"""Browser harness: real Chromium driven by Playwright's sync API against ``live_server``.

Every test collected under tests/e2e is marked ``e2e``, and skipped when the
Debian chromium is not installed. Playwright and the browser are started once
per session; each test gets a fresh browser context (its own cookies) whose
``base_url`` is the live server, so ``page.goto("/accounts/login/")`` works.
A test that fails leaves a full-page screenshot in test-results/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright
    from pytest_django.live_server_helper import LiveServer

    from tenants.models import User

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SKIP_REASON = "chromium not installed: apt-get install chromium"
E2E_DIR = Path(__file__).resolve().parent
RESULTS_DIR = E2E_DIR.parents[1] / "test-results"
# Playwright's actions and expect() wait up to this long (ms) before failing.
TIMEOUT_MS = 10_000

REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


# --- collection: mark (and maybe skip) everything in this folder ---------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only this folder's.
    skip = None if CHROMIUM.exists() else pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
            if skip is not None:
                item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the item, so ``page`` can tell whether the test failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


# --- session: Playwright and the browser -------------------------------------------
@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.skip(SKIP_REASON)
    from playwright.sync_api import sync_playwright

    # The sync API runs an asyncio loop in this thread; Django would then refuse
    # every ORM call from the test as "async unsafe".
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            yield pw
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


# --- per test: a clean context and page -----------------------------------------------
@pytest.fixture
def context(browser: Browser, live_server: LiveServer) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) pointed at the live server."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    page = context.new_page()
    yield page
    reports = request.node.stash.get(REPORTS, {})
    if any(report.failed for report in reports.values()):
        RESULTS_DIR.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")
        try:
            page.screenshot(path=str(RESULTS_DIR / f"{name}.png"), full_page=True)
        except Exception as error:  # noqa: BLE001 - a screenshot must never hide the real failure
            print(f"e2e: could not save a screenshot for {request.node.nodeid}: {error}")


@pytest.fixture
def sign_in(context: BrowserContext, live_server: LiveServer):
    """Sign a user in by giving the browser a session cookie (skips the login form)."""
    from django.conf import settings
    from django.test import Client

    def sign_in(user: User) -> None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": live_server.url, "httpOnly": True}]
        )

    return sign_in
