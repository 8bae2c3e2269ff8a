"""Contacts in a real browser: list, htmx search, the contact page, an edit with a field error."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone
from playwright.sync_api import ConsoleMessage, Page, expect

from contacts.consent import ConsentEvidence, consent_change
from contacts.models import Contact, Event
from contacts.services import contact_upsert, contacts_bulk_upsert
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant, User
from tests.factories import UserFactory, make_tenant

CSP_VIOLATION = re.compile(r"Content Security Policy", re.IGNORECASE)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def shop() -> tuple[User, Tenant, Contact]:
    """A workspace with 30 contacts, and Ada with consent and 55 events."""
    owner = UserFactory(email="owner@shop.example")
    tenant = make_tenant("Lovelace Shop", owner)
    with tenant_context(tenant.id):
        contacts_bulk_upsert(
            tenant=tenant,
            rows=[{"email": f"customer{i:02d}@shop.example", "first_name": f"Customer{i:02d}"} for i in range(30)],
        )
        ada, _ = contact_upsert(
            tenant=tenant,
            data={"email": "ada@lovelace.example", "first_name": "Ada", "last_name": "Lovelace", "country": "GB"},
        )
        consent_change(
            contact=ada, channel="email", purpose="newsletter", status="granted",
            evidence=ConsentEvidence(source="form", wording="Weekly letters on engines"), actor=Actor.system("test"),
        )  # fmt: skip
        start = timezone.now() - dt.timedelta(days=3)
        Event.objects.bulk_create(
            Event(
                tenant=tenant, contact=ada, name="purchase" if i == 0 else "page_view", occurred_at=start + i * MINUTE
            )
            for i in range(55)
        )
    return owner, tenant, ada


def no_csp_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and CSP_VIOLATION.search(message.text):
            errors.append(message.text)

    page.on("console", on_console)
    return errors


def test_search_the_list_and_open_a_contact(page: Page, sign_in, shop) -> None:
    owner, tenant, ada = shop
    csp_errors = no_csp_errors(page)
    sign_in(owner)
    page.goto(tenant.get_absolute_url())
    page.locator("header nav").get_by_role("link", name="Contacts").click()
    expect(page).to_have_url(re.compile(rf"/t/{tenant.slug}/contacts/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Contacts")

    results = page.get_by_test_id("contact-results")
    rows = results.locator("tbody tr")
    expect(rows).to_have_count(31)
    expect(rows.first).to_contain_text("ada@lovelace.example")  # newest first

    # Typing searches as you go (htmx swaps only the table) and the URL follows.
    page.wait_for_function("() => window.htmx !== undefined")
    page.get_by_label("Search").fill("lovel")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Ada Lovelace")
    expect(page).to_have_url(re.compile(r"[?&]q=lovel"))
    page.get_by_label("Search").fill("customer0")
    expect(rows).to_have_count(10)
    page.get_by_label("Search").fill("nobody-here")
    expect(results).to_contain_text("No contacts match.")
    page.get_by_label("Search").fill("")
    expect(rows).to_have_count(31)
    page.get_by_label("Country").select_option("GB")  # filters refresh the table too
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"[?&]country=GB"))
    page.get_by_label("Search").fill("ada@")
    expect(rows).to_have_count(1)

    results.get_by_role("link", name="Ada Lovelace").click()
    expect(page).to_have_url(re.compile(rf"/contacts/{ada.pk}/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Ada Lovelace")
    expect(page.get_by_test_id("lifecycle-stage")).to_have_text("Lead")

    # Consent: the grid and the ledger entry behind it.
    grid = page.get_by_test_id("consent-grid")
    email_row = grid.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Email"))
    expect(email_row).to_contain_text("Granted")
    expect(page.get_by_test_id("consent-ledger")).to_contain_text("Weekly letters on engines")

    # Timeline: 50 newest, then the rest on demand.
    timeline = page.get_by_test_id("timeline").locator("tbody tr:not(#timeline-more)")
    expect(timeline).to_have_count(50)
    expect(timeline.first).to_contain_text("page_view")
    page.get_by_test_id("timeline-more").click()
    expect(timeline).to_have_count(55)
    expect(timeline.last).to_contain_text("purchase")
    expect(page.get_by_test_id("timeline-more")).to_have_count(0)
    assert csp_errors == []


def test_a_bad_list_link_explains_itself(page: Page, sign_in, shop) -> None:
    owner, tenant, _ = shop
    sign_in(owner)
    response = page.goto(f"/t/{tenant.slug}/contacts/?country=XX&cursor=nonsense")
    assert response is not None and response.status == 400
    expect(page.get_by_test_id("contact-results")).to_contain_text("This page link is not valid")
    expect(page.get_by_test_id("contact-results")).to_contain_text("Select a valid choice")
    page.get_by_role("link", name="Show all contacts").click()
    expect(page.get_by_test_id("contact-results").locator("tbody tr")).to_have_count(31)


def test_edit_a_contact_fix_the_error_and_save(page: Page, sign_in, shop) -> None:
    owner, tenant, ada = shop
    sign_in(owner)
    page.goto(f"/t/{tenant.slug}/contacts/{ada.pk}/")
    page.locator("main").get_by_role("button", name="Edit", exact=True).click()  # a link styled as a button
    expect(page.get_by_role("heading", level=1)).to_have_text("Edit Ada Lovelace")

    phone = page.get_by_label("Phone", exact=True)
    phone.fill("12345")
    page.get_by_label("City").fill("London")
    page.get_by_role("button", name="Save contact").click()

    expect(page.get_by_test_id("form-error-summary")).to_be_visible()
    expect(page.locator("#id_phone-error")).to_contain_text("phone number")
    expect(page.get_by_label("City")).to_have_value("London")  # what was typed is kept
    with tenant_context(tenant.id):
        assert Contact.objects.get(pk=ada.pk).city == ""

    page.get_by_label("Phone", exact=True).fill("+44 20 7946 0958")
    page.get_by_role("button", name="Save contact").click()

    expect(page).to_have_url(re.compile(rf"/contacts/{ada.pk}/$"))
    expect(page.get_by_role("status")).to_contain_text("Contact saved.")
    expect(page.locator("main")).to_contain_text("+442079460958")
    with tenant_context(tenant.id):
        saved = Contact.objects.get(pk=ada.pk)
    assert (saved.phone, saved.city) == ("+442079460958", "London")
