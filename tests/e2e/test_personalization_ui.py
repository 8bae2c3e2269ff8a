"""Website personalisation in a real browser: create a slot, add a variant for a segment and one for a lifecycle
stage, reorder them, and preview the slot as three contacts — each sees what the snippet would show them, and why."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from contacts.models import Contact, LifecycleStage
from personalization.models import Slot, SlotVariant
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant, User
from tests.e2e.test_journeys import problems_of
from tests.factories import UserFactory, make_tenant


@pytest.fixture
def shop() -> tuple[User, Tenant]:
    owner = UserFactory(email="owner@website.example")
    tenant = make_tenant("Website Shop", owner)
    with tenant_context(tenant.id):
        vips = segment_create(tenant=tenant, actor=Actor.system("test"), name="VIPs", kind=Segment.Kind.STATIC)
        vera = Contact.objects.create(
            tenant=tenant, email="vera@example.com", first_name="Vera", lifecycle_stage=LifecycleStage.LEAD
        )
        Contact.objects.create(
            tenant=tenant, email="leo@example.com", first_name="Leo", lifecycle_stage=LifecycleStage.LEAD
        )
        Contact.objects.create(tenant=tenant, email="nina@example.com", first_name="Nina")
        static_members_add(segment=vips, actor=Actor.system("test"), contact_ids=[vera.pk])
    return owner, tenant


def preview_as(page: Page, email: str) -> None:
    page.get_by_label("Find a contact").fill(email)
    page.get_by_role("button", name="Find").click()
    page.get_by_test_id("match").filter(has_text=email).click()
    expect(page.get_by_test_id("preview")).to_contain_text(f"As {email}")


def test_create_a_slot_with_variants_and_preview_it_as_contacts(page: Page, sign_in, shop) -> None:
    owner, tenant = shop
    problems = problems_of(page)
    sign_in(owner)
    page.goto(tenant.get_absolute_url())
    page.locator("header nav").get_by_role("link", name="Website").click()
    expect(page).to_have_url(re.compile(rf"/t/{tenant.slug}/personalization/$"))

    # 1. A slot with its default content; a bad link first, shown under its field.
    page.get_by_test_id("new-slot").click()
    page.get_by_label("Key").fill("hero")
    page.get_by_label("Name").fill("Home hero")
    page.get_by_label("Headline").fill("Spring is here")
    page.get_by_label("Button label").fill("Shop now")
    page.get_by_label("Button link").fill("javascript:alert(1)")
    page.get_by_role("button", name="Create slot").click()
    expect(page.locator(".field-error")).to_contain_text("Give an http(s) address")
    page.get_by_label("Button link").fill("/spring")
    page.get_by_role("button", name="Create slot").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Home hero")
    expect(page.get_by_test_id("default-row")).to_contain_text("Spring is here")

    # 2. A variant for lifecycle-stage leads, then one for the VIP segment.
    page.get_by_test_id("add-variant").click()
    page.get_by_label("Name").fill("Leads")
    page.get_by_label("A lifecycle stage").check()
    page.get_by_label("Lifecycle stage", exact=True).select_option("lead")
    page.get_by_label("Headline").fill("10% off your first order")
    page.get_by_role("button", name="Add variant").click()
    expect(page.get_by_test_id("variant-row")).to_have_count(1)
    page.get_by_test_id("add-variant").click()
    page.get_by_label("Name").fill("VIP")
    page.get_by_label("Members of a segment").check()
    page.get_by_label("Segment", exact=True).select_option(label="VIPs")
    page.get_by_label("Headline").fill("Early access for VIPs")
    page.get_by_role("button", name="Add variant").click()
    rows = page.get_by_test_id("variant-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Leads")
    expect(rows.nth(1)).to_contain_text("Segment: VIPs")

    # 3. VIPs first: Vera is a VIP and a lead, and should get the VIP offer.
    rows.nth(1).get_by_test_id("move-up").click()
    expect(page.get_by_test_id("variant-row").nth(0)).to_contain_text("VIP")
    with tenant_context(tenant.id):
        slot = Slot.objects.get(key="hero")
        order = list(SlotVariant.objects.filter(slot=slot).order_by("priority").values_list("name", flat=True))
    assert order == ["VIP", "Leads"]

    # 4. Preview as each contact: the variant, and why.
    page.get_by_role("button", name="Preview as a contact").click()
    preview_as(page, "vera@example.com")
    hero = page.locator('[data-testid="preview-row"][data-slot="hero"]')
    expect(hero.get_by_test_id("shows")).to_have_text("VIP")
    expect(hero.get_by_test_id("why")).to_contain_text("member of the segment “VIPs”")
    expect(hero).to_contain_text("Early access for VIPs")
    preview_as(page, "leo@example.com")
    expect(hero.get_by_test_id("shows")).to_have_text("Leads")
    expect(hero.get_by_test_id("why")).to_contain_text("lifecycle stage is Lead")
    preview_as(page, "nina@example.com")
    expect(hero.get_by_test_id("shows")).to_have_text("Default content")
    expect(hero).to_contain_text("Spring is here")
    assert problems == []
