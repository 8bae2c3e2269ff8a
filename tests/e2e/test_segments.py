"""Segments in a real browser: build a nested segment and watch the live count, templates, edit, no JavaScript."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from unittest import mock

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect

from contacts.ingest import events_ingest
from contacts.models import AttributeDefinition, Contact
from segments.models import Segment, SegmentMember
from segments.services import segment_create
from segments.tasks import refresh_segment
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant, User
from tests.factories import UserFactory, make_tenant

CSP_VIOLATION = re.compile(r"Content Security Policy", re.IGNORECASE)
NESTED = {
    "all": [
        {"type": "field", "field": "country", "op": "in", "value": ["DE"]},
        {
            "any": [
                {"type": "field", "field": "lifecycle_stage", "op": "eq", "value": "lead"},
                {"not": [{"type": "field", "field": "interests", "op": "contains_any", "value": ["running"]}]},
            ]
        },
    ]
}


@pytest.fixture
def shop() -> tuple[User, Tenant]:
    """Seven contacts: five Germans (two leads; three runners), a French lead and a Briton."""
    owner = UserFactory(email="owner@segments.example")
    tenant = make_tenant("Segment Shop", owner)
    people = [
        ("anna@example.de", "Anna", "DE", "lead", ["running"]),
        ("bernd@example.de", "Bernd", "DE", "lead", ["yoga"]),
        ("clara@example.de", "Clara", "DE", "new_visitor", ["yoga"]),
        ("dieter@example.de", "Dieter", "DE", "new_visitor", ["running"]),
        ("gerda@example.de", "Gerda", "DE", "new_visitor", ["running", "tea"]),
        ("emile@example.fr", "Emile", "FR", "lead", []),
        ("fiona@example.co.uk", "Fiona", "GB", "first_time_buyer", []),
    ]
    with tenant_context(tenant.id):
        for email, name, country, stage, interests in people:
            Contact.objects.create(
                tenant=tenant, email=email, first_name=name, country=country, lifecycle_stage=stage,
                interests=interests,
            )  # fmt: skip
    return owner, tenant


@pytest.fixture(autouse=True)
def refresh_in_process() -> Iterator[None]:
    """Run the refresh a save queues right away, in the server's thread, instead of on the shared broker."""
    with mock.patch.object(refresh_segment, "delay", side_effect=lambda *args: refresh_segment.apply(args=args)):
        yield


def csp_errors_of(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and (CSP_VIOLATION.search(message.text) or "Uncaught" in message.text):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def node(page: Page, path: str) -> Locator:
    return page.locator(f'[data-path="{path}"]')


def group_button(page: Page, path: str, test_id: str) -> Locator:
    return node(page, path).locator(f':scope > .sb-group-foot [data-testid="{test_id}"]')


def group_mode(page: Page, path: str) -> Locator:
    return node(page, path).locator(":scope > .sb-group-head select")


def errors_at(page: Page, path: str) -> Locator:
    return node(page, path).locator(":scope > .sb-errors")


def test_build_a_nested_segment_and_watch_the_live_count(page: Page, sign_in, shop) -> None:
    owner, tenant = shop
    problems = csp_errors_of(page)
    sign_in(owner)
    page.goto(tenant.get_absolute_url())
    page.locator("header nav").get_by_role("link", name="Segments").click()
    expect(page).to_have_url(re.compile(rf"/t/{tenant.slug}/segments/$"))
    page.get_by_role("button", name="New segment").click()  # a link styled as a button
    expect(page.get_by_role("heading", level=1)).to_have_text("New segment")

    count = page.get_by_test_id("live-count")
    status = page.get_by_test_id("preview-status")
    expect(count).to_have_text("7")  # no conditions yet: everyone
    expect(page.get_by_label("Rules (JSON)")).to_be_hidden()  # the builder took over from the JSON field

    # ALL [country in DE, ...]
    group_button(page, "", "add-condition").click()
    node(page, "all.0").get_by_label("Field").select_option(label="Country")
    expect(errors_at(page, "all.0")).to_contain_text("Expected a list of at least one value.")
    expect(count).to_have_text("–")
    expect(status).to_contain_text("Fix 1 problem")
    node(page, "all.0").get_by_label("Add a country").select_option("DE")
    expect(count).to_have_text("5")
    expect(errors_at(page, "all.0")).to_be_empty()
    expect(page.get_by_test_id("preview-sample")).to_contain_text("Gerda")

    # ... ANY [lifecycle stage = lead, ...]
    group_button(page, "", "add-group").click()
    expect(errors_at(page, "all.1.all.0")).to_contain_text("Expected a group")  # the blank condition, in place
    group_mode(page, "all.1").select_option("any")
    node(page, "all.1.any.0").get_by_label("Field").select_option(label="Lifecycle stage")
    expect(count).to_have_text("3")  # the first stage offered: new visitors
    node(page, "all.1.any.0").get_by_label("Value").select_option("lead")
    expect(count).to_have_text("2")
    expect(page.get_by_test_id("preview-sample")).not_to_contain_text("Gerda")

    # ... NOT [interests contain running]
    group_button(page, "all.1", "add-group").click()
    group_mode(page, "all.1.any.1").select_option("not")
    node(page, "all.1.any.1.not.0").get_by_label("Field").select_option(label="Interests")
    expect(errors_at(page, "all.1.any.1.not.0")).to_contain_text("at least one value")
    value = node(page, "all.1.any.1.not.0").get_by_label("Add a value")
    value.fill("running")
    value.press("Enter")
    expect(count).to_have_text("3")  # the leads and Clara, who does not run
    expect(page.get_by_test_id("preview-sample")).to_contain_text("Clara")

    assert json.loads(page.locator("textarea[name='rules']").input_value()) == NESTED
    page.get_by_label("Name", exact=True).fill("German leads and non-runners")
    page.get_by_role("button", name="Create segment").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("German leads and non-runners")
    expect(page.get_by_role("status").first).to_contain_text("Segment created")
    with tenant_context(tenant.id):
        segment = Segment.objects.get(name="German leads and non-runners")
        assert segment.rules == NESTED
        assert SegmentMember.objects.filter(segment=segment).count() == 3
    expect(page.get_by_test_id("segment-members").locator("tbody tr")).to_have_count(3)

    page.locator("header nav").get_by_role("link", name="Segments").click()
    row = page.get_by_test_id("segment-list").get_by_role("row").filter(has_text="German leads and non-runners")
    expect(row).to_contain_text("Dynamic")
    expect(row.locator("td").nth(2)).to_have_text("3")
    assert problems == []


def test_start_from_a_template_then_edit_and_remove_a_condition(page: Page, sign_in, shop) -> None:
    owner, tenant = shop
    problems = csp_errors_of(page)
    sign_in(owner)
    page.goto(f"/t/{tenant.slug}/segments/new/")
    count = page.get_by_test_id("live-count")
    expect(count).to_have_text("7")
    # The JSON stays editable behind the builder, and the builder follows it.
    page.get_by_text("Rules as JSON").click()
    page.get_by_label("Rules (JSON)").fill(
        '{"any": [{"type": "field", "field": "country", "op": "eq", "value": "GB"}]}'
    )
    expect(count).to_have_text("1")
    expect(group_mode(page, "")).to_have_value("any")
    expect(node(page, "any.0").get_by_label("Value")).to_have_value("GB")
    page.once("dialog", lambda dialog: dialog.accept())  # "Replace the current rules?"
    page.get_by_label("Start from a template").select_option(label="Leads in Germany and France")
    expect(count).to_have_text("3")  # Anna, Bernd, Emile
    expect(page.get_by_label("Name", exact=True)).to_have_value("Leads in Germany and France")
    # Drop France from the country condition (its chip), then the stage condition entirely.
    node(page, "all.1").get_by_role("button", name="Remove France (FR)").click()
    expect(count).to_have_text("2")
    node(page, "all.0").get_by_role("button", name="Remove condition").click()
    expect(count).to_have_text("5")
    page.get_by_role("button", name="Create segment").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Leads in Germany and France")

    # Edit: the builder loads the saved tree; a change of operator keeps the value.
    page.locator("main").get_by_role("button", name="Edit", exact=True).click()
    expect(count).to_have_text("5")
    node(page, "all.0").get_by_label("Operator").select_option("not_in")
    expect(count).to_have_text("2")
    page.get_by_role("button", name="Save segment").click()
    expect(page.get_by_role("status").first).to_contain_text("Segment saved.")
    with tenant_context(tenant.id):
        segment = Segment.objects.get(name="Leads in Germany and France")
    assert segment.version == 2
    assert segment.rules == {"all": [{"type": "field", "field": "country", "op": "not_in", "value": ["DE"]}]}
    assert problems == []


def test_a_server_side_error_is_shown_at_its_node_after_saving(page: Page, sign_in, shop) -> None:
    owner, tenant = shop
    with tenant_context(tenant.id):
        segment_create(tenant=tenant, actor=Actor.system("test"), name="Taken", rules={"all": []})
    sign_in(owner)
    page.goto(f"/t/{tenant.slug}/segments/new/")
    page.get_by_label("Name", exact=True).fill("Taken")
    group_button(page, "", "add-condition").click()
    page.get_by_role("button", name="Create segment").click()
    expect(page.get_by_test_id("form-error-summary")).to_be_visible()
    expect(page.locator("#id_name-error")).to_contain_text("Another segment has this name.")
    expect(errors_at(page, "all.0")).to_contain_text("Expected a group")  # the blank condition, kept and marked
    expect(page.get_by_label("Name", exact=True)).to_have_value("Taken")


@pytest.fixture
def page_without_javascript(browser: Browser, live_server) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    yield context.new_page()
    context.close()


def test_without_javascript_the_rules_are_edited_as_json(page_without_javascript: Page, shop, live_server) -> None:
    owner, tenant = shop
    page = page_without_javascript
    client = Client()
    client.force_login(owner)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": live_server.url, "httpOnly": True}]
    )
    page.goto(f"/t/{tenant.slug}/segments/new/")
    page.get_by_label("Start from a template").select_option("geographic")
    page.get_by_role("button", name="Use template").click()
    rules = page.get_by_label("Rules (JSON)")
    expect(rules).to_be_visible()
    assert json.loads(rules.input_value()) == {
        "all": [{"type": "field", "field": "country", "op": "in", "value": ["DE", "FR"]}]
    }
    page.get_by_label("Name", exact=True).fill("Germany and France")
    rules.fill('{"all": [{"type": "field", "field": "country", "op": "in", "value": ["Deutschland"]}]}')
    page.get_by_role("button", name="Create segment").click()
    expect(page.get_by_test_id("rule-errors")).to_contain_text("all.0.value.0")
    rules.fill('{"all": [{"type": "field", "field": "country", "op": "in", "value": ["DE", "FR"]}]}')
    page.get_by_role("button", name="Create segment").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Germany and France")
    expect(page.get_by_test_id("segment-size")).to_have_text("6")


def test_every_kind_of_condition_can_be_built(page: Page, sign_in, shop) -> None:
    owner, tenant = shop
    with tenant_context(tenant.id):
        AttributeDefinition.objects.create(tenant=tenant, key="plan", label="Plan", type="text")
        anna = Contact.objects.get(email="anna@example.de")
        events_ingest(
            tenant=tenant,
            events=[
                {"contact_id": anna.pk, "event": "add_to_cart", "properties": {"category": "shoes"}},
                {"contact_id": anna.pk, "event": "purchase", "revenue": "20.00"},
            ],
        )
        base = segment_create(tenant=tenant, actor=Actor.system("test"), name="Germans", rules={"all": []})
    problems = csp_errors_of(page)
    sign_in(owner)
    page.goto(f"/t/{tenant.slug}/segments/new/")
    count = page.get_by_test_id("live-count")
    expect(count).to_have_text("7")

    def add(label: str) -> Locator:
        index = page.locator('[data-path=""] > .sb-children > li:not(.sb-empty)').count()
        group_button(page, "", "add-condition").click()
        condition = node(page, f"all.{index}")
        condition.get_by_label("Field").select_option(label=label)
        return condition

    def settled(condition: Locator) -> None:
        expect(condition.locator(":scope > .sb-errors")).to_be_empty()
        expect(page.locator(".builder-preview.is-loading")).to_have_count(0)
        expect(page.locator(".sb-errors li")).to_have_count(0)
        expect(count).not_to_have_text("–")

    plan = add("Plan")
    plan.get_by_label("Value").fill("pro")
    settled(plan)
    event = add("Performed event")
    expect(event.get_by_label("Event")).to_have_value("add_to_cart")  # the tenant's own events are offered
    event.get_by_label("Operator").select_option("at_least")
    event.get_by_label("Times").fill("2")
    event.get_by_label("When").select_option("between")
    event.get_by_role("button", name="+ Property filter").click()
    event.get_by_label("Property", exact=True).fill("category")
    event.get_by_label("Value").fill("shoes")
    settled(event)
    for label in (
        "Event total / average", "Consent", "Suppressed", "Opened or clicked a message", "RFM score", "RFM group",
        "Member of segment", "Lifecycle stage changed to… within N days", "Age (years)",
    ):  # fmt: skip
        settled(add(label))
    birthday = add("Birth date")
    birthday.get_by_label("Operator").select_option("before")
    expect(birthday.locator(":scope > .sb-errors")).to_contain_text("Expected a date")
    birthday.get_by_label("Date").fill("2000-01-01")
    settled(birthday)

    page.get_by_label("Name", exact=True).fill("Everything")
    page.get_by_role("button", name="Create segment").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Everything")
    with tenant_context(tenant.id):
        rules = Segment.objects.get(name="Everything").rules["all"]
    assert [c["type"] for c in rules] == [
        "attribute", "event", "event_aggregate", "consent", "suppression", "engagement", "rfm", "rfm_group",
        "segment", "lifecycle_change", "field", "field",
    ]  # fmt: skip
    assert rules[0] == {"type": "attribute", "key": "plan", "op": "eq", "value": "pro"}
    assert rules[1]["count"] == 2 and rules[1]["op"] == "at_least"
    assert rules[1]["where"] == [{"property": "category", "op": "eq", "value": "shoes"}]
    assert set(rules[1]["window"]) == {"between"}
    assert rules[8] == {"type": "segment", "op": "in", "segment": base.pk}
    assert rules[11] == {"type": "field", "field": "birth_date", "op": "before", "value": "2000-01-01"}
    assert problems == []
