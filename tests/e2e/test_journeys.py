"""Journeys in a real browser: build one from a blank page — settings, a wait, a branch written in the
segment builder's language, an email on each path — watch the problems on the steps go away, start it
and see it live; and a viewer sees the same map without the controls."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from campaigns.models import Variant
from contacts.models import Contact
from journeys.models import Journey, Step
from tenants.context import tenant_context
from tenants.models import Tenant, User
from tenants.roles import Role
from tests.factories import UserFactory, add_member, make_tenant

GERMANS = '{"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}'


@pytest.fixture
def shop() -> tuple[User, Tenant]:
    owner = UserFactory(email="owner@journeys.example")
    tenant = make_tenant("Journey Shop", owner)
    with tenant_context(tenant.id):
        for n, country in enumerate(["DE", "DE", "FR"]):
            Contact.objects.create(tenant=tenant, email=f"p{n}@example.com", first_name=f"P{n}", country=country)
    return owner, tenant


def problems_of(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and ("Content Security Policy" in message.text or "Uncaught" in message.text):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def add_step(page: Page, after: str, exit: str, kind: str) -> None:
    """Open the "add a step" control at a place of the map and choose the kind."""
    control = page.locator(f'details[data-add-after="{after}"][data-add-exit="{exit}"]')
    control.locator("summary").click()
    control.get_by_label("Kind of step").select_option(kind)
    control.get_by_role("button", name="Add").click()


def card(page: Page, key: str):
    return page.locator(f'[data-testid="step-card"][data-step-key="{key}"]')


def test_build_a_journey_from_blank_then_start_it(page: Page, sign_in, shop) -> None:
    owner, tenant = shop
    problems = problems_of(page)
    sign_in(owner)
    page.goto(tenant.get_absolute_url())
    page.locator("header nav").get_by_role("link", name="Journeys").click()
    expect(page).to_have_url(re.compile(rf"/t/{tenant.slug}/journeys/$"))
    page.get_by_test_id("new-journey").click()

    # 1. Settings: the event trigger's fields only; the segment picker appears with its trigger.
    expect(page.get_by_test_id("blueprints")).to_contain_text("Abandoned cart")
    page.get_by_label("Name", exact=True).fill("Cart rescue")
    expect(page.get_by_label("Segment", exact=True)).to_be_hidden()
    page.get_by_label("Enters a segment").check()
    expect(page.get_by_label("Segment", exact=True)).to_be_visible()
    expect(page.get_by_label("Event name")).to_be_hidden()
    page.get_by_label("Performs an event").check()
    page.get_by_label("Event name").fill("cart_abandoned")
    expect(page.get_by_label("Cooldown (days)")).to_be_hidden()
    page.get_by_label("Again after a cooldown").check()
    page.get_by_label("Cooldown (days)").fill("2")
    page.get_by_label("Goal event").fill("purchase")
    page.get_by_role("button", name="Create journey").click()

    # 2. The journey page: a draft with nothing to run yet.
    expect(page.get_by_test_id("journey-status")).to_have_text("Draft")
    expect(page.get_by_test_id("trigger-text")).to_have_text("Performs cart_abandoned")
    expect(page.get_by_test_id("journey-problems")).to_contain_text("Add a first step.")
    expect(page.get_by_test_id("start")).to_be_disabled()

    # 3. A wait at the start.
    add_step(page, "", "next", "wait")
    expect(page.get_by_role("heading", level=1)).to_contain_text("New step: wait for a duration")
    page.get_by_label("Wait for").fill("1")
    page.get_by_label("Unit").select_option("hours")
    page.get_by_test_id("save-step").click()
    expect(card(page, "s1")).to_contain_text("Wait 1 hour")
    expect(page.get_by_test_id("journey-problems")).to_have_count(0)
    expect(page.get_by_test_id("start")).to_be_enabled()

    # 4. An email after it, written in place.
    add_step(page, "s1", "next", "send:email")
    variant = page.get_by_test_id("variant")
    variant.get_by_label("Subject").fill("Still thinking, {{ contact.first_name }}?")
    variant.get_by_label("HTML body").fill("<p>Your cart is waiting.</p>")
    page.get_by_test_id("save-step").click()
    expect(card(page, "s2")).to_contain_text("Email · 1 variant · “Still thinking, {{ contact.first_name }}?”")

    # 5. A branch between them, in the segment builder (its JSON view): the email goes on "Yes".
    add_step(page, "s1", "next", "branch")
    expect(page.locator("#segment-builder")).to_be_visible()
    expect(page.get_by_test_id("live-count")).to_have_text("3")  # no condition yet: everyone
    page.locator("details.rules-json > summary").click()
    page.locator("textarea[name=rules]").fill(GERMANS)
    expect(page.get_by_test_id("live-count")).to_have_text("2")
    page.get_by_label("Name", exact=True).fill("German?")
    page.get_by_test_id("save-step").click()
    expect(card(page, "s3")).to_contain_text("If country = DE")
    builder = page.get_by_test_id("journey-builder")
    yes = builder.locator('[data-testid="flow-lane"][data-exit="yes"]')
    expect(yes.locator('[data-testid="step-card"]')).to_have_count(1)
    expect(yes).to_contain_text("Still thinking")

    # 6. An SMS on "No" without a message: the problem shows on its card and the start waits.
    add_step(page, "s3", "no", "send:sms")
    page.get_by_label("Name", exact=True).first.fill("Text them")
    page.get_by_test_id("save-step").click()
    expect(card(page, "s4").get_by_test_id("step-problems")).to_contain_text("Write the message")
    expect(page.get_by_test_id("start")).to_be_disabled()
    card(page, "s4").get_by_test_id("edit-step").click()
    page.get_by_test_id("variant").get_by_label("Message").fill("Your cart misses you: https://shop.example/cart")
    page.get_by_test_id("save-step").click()
    expect(card(page, "s4").get_by_test_id("step-problems")).to_have_count(0)
    expect(card(page, "s4")).to_contain_text("SMS · 1 variant")

    # 7. Start it: live.
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("journey-status")).to_have_text("Live")
    expect(page.locator(".messages")).to_contain_text("The journey is live")
    expect(page.get_by_test_id("pause")).to_be_visible()
    with tenant_context(tenant.id):
        journey = Journey.objects.get(name="Cart rescue")
        assert journey.status == Journey.Status.LIVE and journey.live_version is not None
        assert (journey.trigger_event, journey.cooldown_days, journey.goal_event) == ("cart_abandoned", 2, "purchase")
        steps = {s.key: s for s in Step.objects.filter(version=journey.live_version)}
        assert journey.live_version.start_key == "s1"
        assert steps["s1"].exits == {"next": "s3"} and steps["s3"].exits == {"yes": "s2", "no": "s4"}
        assert Variant.objects.get(campaign=steps["s4"].campaign).sms_body.startswith("Your cart misses you")

    # 8. Back in the list, with its trigger in words.
    page.locator("header nav").get_by_role("link", name="Journeys").click()
    row = page.get_by_test_id("journey-row").filter(has_text="Cart rescue")
    expect(row).to_contain_text("Live")
    expect(row).to_contain_text("Performs cart_abandoned")
    assert problems == []


def test_a_viewer_sees_the_map_without_its_controls(page: Page, sign_in, shop) -> None:
    _, tenant = shop
    viewer = UserFactory(email="viewer@journeys.example")
    add_member(tenant, viewer, Role.VIEWER)
    from journeys.services import journey_from_blueprint
    from tenants.audit import Actor

    with tenant_context(tenant.id):
        journey = journey_from_blueprint(tenant=tenant, actor=Actor.system("test"), blueprint="abandoned_cart")
    problems = problems_of(page)
    sign_in(viewer)
    page.goto(f"/t/{tenant.slug}/journeys/{journey.pk}/")
    expect(page.get_by_test_id("step-card")).to_have_count(5)
    expect(page.get_by_test_id("add-step")).to_have_count(0)
    expect(page.get_by_test_id("start-form")).to_have_count(0)
    card(page, "s2").get_by_role("link", name="Cart reminder email").click()
    expect(page.get_by_test_id("read-only")).to_be_visible()
    expect(page.get_by_test_id("variant").get_by_label("Subject")).to_be_disabled()
    expect(page.get_by_test_id("save-step")).to_have_count(0)
    assert problems == []
