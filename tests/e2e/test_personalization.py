"""The website snippet in real Chromium: the demo shop served by the app, and a shop on another origin.

Consent gate (nothing sent, no cookie, no storage before consent), page views and custom events reaching
the contact, slots filled by segment after a signed identify, the page's own content without consent or
after it is withdrawn, and CORS: a key used from an origin it does not allow gets nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, expect

from contacts.models import Contact, Event, LifecycleStage
from personalization.demo import DEFAULT, demo_seed
from personalization.models import SiteKey
from personalization.services import site_key_create
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant, User
from tests.factories import UserFactory, make_tenant

VIP_HEADLINE = "Early access for our VIPs"
LEAD_HEADLINE = "10% off your first order"


@dataclass
class Shop:
    tenant: Tenant
    key: SiteKey
    vip: Contact
    lead: Contact


@pytest.fixture
def shop(transactional_db, live_server, settings) -> Shop:
    settings.PERSONALIZATION_DEMO = True
    owner = cast(User, UserFactory(email="owner@demo-shop.example"))
    tenant = make_tenant("Demo Shop", owner)
    assert tenant.slug == "demo-shop"
    with tenant_context(tenant.pk):
        vip = Contact.objects.create(tenant=tenant, email="vip@demo-shop.example", first_name="Vera",
                                     lifecycle_stage=LifecycleStage.LOYAL_ADVOCATE)  # fmt: skip
        lead = Contact.objects.create(tenant=tenant, email="lead@demo-shop.example", first_name="Leo",
                                      lifecycle_stage=LifecycleStage.LEAD)  # fmt: skip
        key = demo_seed(tenant=tenant, actor=Actor.for_user(owner), origins=[live_server.url.lower()])
    return Shop(tenant, key, vip, lead)


def watch(page: Page) -> tuple[list[str], list[str]]:
    """Collect the snippet's requests and any CSP violation or script error."""
    calls: list[str] = []
    problems: list[str] = []

    def on_request(request: Request) -> None:
        if "/p/v1/" in request.url:
            calls.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and ("Content Security Policy" in message.text or "Uncaught" in message.text):
            problems.append(message.text)

    page.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return calls, problems


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll the database until ``check`` answers something truthy (the browser's requests are asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def events_of(tenant: Tenant, **contact: Any) -> list[str]:
    with tenant_context(tenant.pk):
        found = Contact.objects.filter(tenant=tenant, **contact).first()
        if found is None:
            return []
        return sorted(Event.objects.filter(tenant=tenant, contact=found).values_list("name", flat=True))


def test_the_demo_shop_waits_for_consent_then_personalises(page: Page, shop: Shop) -> None:
    calls, problems = watch(page)
    page.goto("/demo/shop/")
    hero = page.get_by_test_id("hero")
    expect(hero.locator("h2")).to_have_text(DEFAULT["headline"])
    page.wait_for_load_state("networkidle")
    # Before consent: not one request, no cookie, nothing stored.
    assert calls == []
    assert page.context.cookies() == []
    assert page.evaluate("() => window.localStorage.length") == 0
    assert page.evaluate("() => window.segmentor.visitorId()") is None
    # A script that tracks before consent sends nothing either.
    page.evaluate("() => window.segmentor.track('early', {})")
    page.wait_for_timeout(300)
    assert calls == []

    page.get_by_test_id("consent-accept").click()
    expect(hero).to_have_attribute("data-segmentor-variant", "default")
    expect(hero.locator("h2")).to_have_text(DEFAULT["headline"])
    visitor_id = page.evaluate("() => window.localStorage.getItem('segmentor.vid')")
    assert visitor_id and page.evaluate("() => window.segmentor.visitorId()") == visitor_id
    assert page.context.cookies() == []  # local storage only: no cookie at all
    assert any("/p/v1/events/" in url for url in calls) and any("/p/v1/decide/" in url for url in calls)
    assert eventually(lambda: events_of(shop.tenant, anonymous_id=visitor_id)) == ["page_view"]

    # Sign in as the VIP (the page carries the signature the shop's server made): the hero changes.
    page.get_by_role("button", name="Sign in as Vera (VIPs)").click()
    expect(hero.locator("h2")).to_have_text(VIP_HEADLINE)
    expect(hero.get_by_role("button", name="Shop early access")).to_have_attribute("href", "/demo/shop/?promo=vip")
    assert hero.get_attribute("data-segmentor-variant") != "default"
    page.get_by_test_id("add-to-cart").click()
    assert eventually(lambda: "add_to_cart" in events_of(shop.tenant, pk=shop.vip.pk))
    assert "page_view" in events_of(shop.tenant, pk=shop.vip.pk)  # the anonymous page view merged into her

    # The next page remembers the consent (the id is there) and shows her hero at once.
    page.reload()
    expect(hero.locator("h2")).to_have_text(VIP_HEADLINE)

    # Withdrawn: the id is forgotten and the page's own content comes back.
    page.get_by_test_id("consent-withdraw").click()
    expect(hero.locator("h2")).to_have_text(DEFAULT["headline"])
    assert page.evaluate("() => window.localStorage.length") == 0
    sent = len(calls)
    page.evaluate("() => window.segmentor.track('after_withdrawal', {})")
    page.wait_for_timeout(300)
    assert len(calls) == sent
    assert problems == []


def test_another_customer_sees_the_variant_of_their_stage(page: Page, shop: Shop) -> None:
    page.goto("/demo/shop/")
    page.get_by_test_id("consent-accept").click()
    hero = page.get_by_test_id("hero")
    expect(hero).to_have_attribute("data-segmentor-variant", "default")
    page.get_by_role("button", name="Sign in as Leo (Leads)").click()
    expect(hero.locator("h2")).to_have_text(LEAD_HEADLINE)


def test_a_forged_identify_changes_nothing(page: Page, shop: Shop) -> None:
    page.goto("/demo/shop/")
    page.get_by_test_id("consent-accept").click()
    hero = page.get_by_test_id("hero")
    expect(hero).to_have_attribute("data-segmentor-variant", "default")
    result = page.evaluate(
        "() => window.segmentor.identify({email: 'vip@demo-shop.example', signature: 'f'.repeat(64)})"
    )
    assert result is None
    expect(hero.locator("h2")).to_have_text(DEFAULT["headline"])


# --- a shop on another origin ------------------------------------------------------------------------
OTHER_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Other shop</title>
<script src="{server}/static/js/segmentor.js" data-segmentor-key="{key}" data-segmentor-endpoint="{server}/p/v1/"
 defer></script></head><body>
<div data-segmentor-slot="hero" id="hero"><h2 data-segmentor-field="headline">Our own headline</h2></div>
</body></html>"""


@pytest.fixture
def other_origin() -> Iterator[tuple[str, dict[str, str]]]:
    """A plain HTTP server on another port (another origin) serving the page in ``pages[path]``."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.split("?")[0], "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pages
    server.shutdown()
    server.server_close()


def test_cors_lets_only_the_keys_origins_in(page: Page, shop: Shop, live_server, other_origin) -> None:
    origin, pages = other_origin
    with tenant_context(shop.tenant.pk):
        allowed = site_key_create(tenant=shop.tenant, name="Other shop", allowed_origins=[origin], actor=Actor.system())
    server = live_server.url
    pages["/good"] = OTHER_PAGE.format(server=server, key=allowed.public_key)
    pages["/bad"] = OTHER_PAGE.format(server=server, key=shop.key.public_key)  # the demo key: not for this origin

    page.goto(f"{origin}/good")
    page.evaluate("() => window.segmentor.consent(true)")
    expect(page.locator("#hero h2")).to_have_text(DEFAULT["headline"])  # filled from Segmentor, cross-origin
    good_id = page.evaluate("() => window.segmentor.visitorId()")
    assert eventually(lambda: events_of(shop.tenant, anonymous_id=good_id)) == ["page_view"]

    page.goto(f"{origin}/bad")
    page.evaluate("() => window.segmentor.consent(true)")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)
    expect(page.locator("#hero h2")).to_have_text("Our own headline")  # refused: the page keeps its content
    with tenant_context(shop.tenant.pk):
        pages_from_bad = Event.objects.filter(tenant=shop.tenant, properties__path="/bad").count()
    assert pages_from_bad == 0
