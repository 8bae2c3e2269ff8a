"""The platform admin for personalisation: site keys shown without their secret and acted on through the
services; slots with their variants saved through the services; visitors, clicks and figures read-only."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.db import models
from django.test import Client
from django.urls import reverse

from personalization.models import SiteKey, Slot, SlotClick, SlotDailyStats, SlotVariant, Visitor
from personalization.services import site_key_create, slot_click_record
from tenants.admin import PlatformAdmin
from tenants.context import platform_access, tenant_context
from tenants.models import AuditLog, User
from tests.conftest import World
from tests.personalization.test_ui import ACTOR, Shop, make_shop, person

pytestmark = pytest.mark.django_db
MODELS: list[type[models.Model]] = [SiteKey, Slot, Visitor, SlotClick, SlotDailyStats]
T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def staff_client(world: World) -> Client:
    staff = User.objects.create_superuser("staff@segmentor.example", "a-long-password")
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def shop(world: World, django_capture_on_commit_callbacks: Any) -> Shop:
    return make_shop(world.tenant_a, django_capture_on_commit_callbacks)


@pytest.fixture
def key(world: World) -> SiteKey:
    with tenant_context(world.tenant_a.pk):
        return site_key_create(
            tenant=world.tenant_a, name="Shop", allowed_origins=["https://shop.example"], actor=ACTOR
        )


def admin_url(model: type[models.Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def inline(prefix: str, rows: list[dict[str, Any]], initial: int) -> dict[str, Any]:
    data: dict[str, Any] = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)), f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000",
    }  # fmt: skip
    for index, row in enumerate(rows):
        for name, value in row.items():
            data[f"{prefix}-{index}-{name}"] = value
    return data


def variant_row(variant: SlotVariant | None, **values: Any) -> dict[str, Any]:
    row = {
        "name": "", "priority": "0", "active": "on", "target": "stage", "target_segment": "", "target_stage": "lead",
        "headline": "", "body": "", "cta_label": "", "cta_url": "", "image_url": "",
    }  # fmt: skip
    if variant is not None:
        row.update(
            id=str(variant.pk), slot=str(variant.slot_id), name=variant.name, priority=str(variant.priority),
            target=variant.target, target_segment=str(variant.target_segment_id or ""),
            target_stage=variant.target_stage, headline=variant.headline,
        )  # fmt: skip
        if not variant.active:
            row.pop("active")
    row.update(values)
    return row


def slot_form(slot: Slot | None, tenant_id: int, **values: Any) -> dict[str, Any]:
    data = {"tenant": str(tenant_id), "key": "", "name": "", "active": "on", "headline": "", "body": "",
            "cta_label": "", "cta_url": "", "image_url": ""}  # fmt: skip
    if slot is not None:
        data.update(key=slot.key, name=slot.name, headline=slot.headline, body=slot.body, cta_label=slot.cta_label,
                    cta_url=slot.cta_url)  # fmt: skip
    data.update(values)
    return data


def test_every_model_is_registered_scoped_like_the_other_apps():
    for model in MODELS:
        assert isinstance(site._registry[model], PlatformAdmin), model


def test_staff_see_every_list_and_page(
    world: World, shop: Shop, key: SiteKey, staff_client: Client, django_capture_on_commit_callbacks
):
    theirs = make_shop(world.tenant_b, django_capture_on_commit_callbacks)
    ann = person(world.tenant_a, "ann@example.com")
    with tenant_context(world.tenant_a.pk):
        visitor = Visitor.objects.create(
            tenant=world.tenant_a, anonymous_id="visitor-ann", contact=ann, first_seen_at=T0, last_seen_at=T0
        )
        click = slot_click_record(
            tenant_id=world.tenant_a.pk, slot=shop.slot, variant=shop.vip, visitor=visitor, now=T0
        )
        stats = SlotDailyStats.objects.get(slot=shop.slot, variant=shop.vip)
    for model in MODELS:
        assert staff_client.get(admin_url(model, "changelist")).status_code == 200, model
    slots = staff_client.get(admin_url(Slot, "changelist")).content.decode()
    assert f"/{shop.slot.pk}/change/" in slots and f"/{theirs.slot.pk}/change/" in slots, "every tenant's"
    for model, obj in ((Slot, shop.slot), (Visitor, visitor), (SlotClick, click), (SlotDailyStats, stats)):
        assert staff_client.get(admin_url(model, "change", obj.pk)).status_code == 200, model


def test_a_site_key_never_shows_its_identify_secret(key: SiteKey, staff_client: Client):
    page = staff_client.get(admin_url(SiteKey, "change", key.pk)).content.decode()
    assert key.public_key in page and key.identify_secret[:4] + "…" in page
    assert key.identify_secret not in page
    listing = staff_client.get(admin_url(SiteKey, "changelist") + "?q=" + key.public_key).content.decode()
    assert key.public_key in listing and key.identify_secret not in listing
    assert staff_client.get(admin_url(SiteKey, "add")).status_code == 403
    # Read-only: a POST to its page changes nothing.
    staff_client.post(admin_url(SiteKey, "change", key.pk), {"name": "Renamed", "allowed_origins": '["https://x.io"]'})
    with platform_access():
        key.refresh_from_db()
    assert key.name == "Shop" and key.allowed_origins == ["https://shop.example"]


def test_revoke_and_signed_identify_are_actions_through_the_services(world: World, key: SiteKey, staff_client: Client):
    changelist = admin_url(SiteKey, "changelist")
    staff_client.post(changelist, {"action": "allow_unsigned_identify", "_selected_action": [key.pk]})
    with platform_access():
        key.refresh_from_db()
    assert key.require_signed_identify is False
    staff_client.post(changelist, {"action": "revoke_keys", "_selected_action": [key.pk]})
    with platform_access():
        key.refresh_from_db()
        assert AuditLog.all_tenants.filter(tenant=world.tenant_a, action="site_key.revoked").exists()
    assert key.revoked_at is not None


def test_a_slot_is_created_with_a_variant_through_the_services(world: World, shop: Shop, staff_client: Client):
    data = {
        **slot_form(None, world.tenant_a.pk, key="banner", headline="Hello"),
        **inline("variants", [variant_row(None, name="Buyers", target="stage", target_stage="first_time_buyer")], 0),
    }
    response = staff_client.post(admin_url(Slot, "add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    with tenant_context(world.tenant_a.pk):
        slot = Slot.objects.get(key="banner")
        variants = list(SlotVariant.objects.filter(slot=slot).values_list("name", "target_stage", "priority"))
        assert AuditLog.objects.filter(action="slot.created", object_id=str(slot.pk)).exists()
        assert AuditLog.objects.filter(action="slot_variant.created").count() == 3  # two in the shop, this one
    assert (slot.name, slot.headline) == ("banner", "Hello")
    assert variants == [("Buyers", "first_time_buyer", 0)]


def test_edit_move_and_delete_variants_inline(world: World, shop: Shop, staff_client: Client):
    rows = [
        variant_row(shop.vip, headline="Now for VIPs", priority="1"),
        variant_row(shop.leads, priority="0", DELETE="on"),
        variant_row(None, name="Loyal", target="stage", target_stage="loyal_advocate", priority="0"),
    ]
    data = {**slot_form(shop.slot, world.tenant_a.pk, headline="New default"), **inline("variants", rows, 2)}
    response = staff_client.post(admin_url(Slot, "change", shop.slot.pk), data)
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    with tenant_context(world.tenant_a.pk):
        order = list(SlotVariant.objects.filter(slot=shop.slot).order_by("priority").values_list("name", "headline"))
        assert Slot.objects.get(pk=shop.slot.pk).headline == "New default"
    assert order == [("Loyal", ""), ("VIP", "Now for VIPs")]


def test_a_variant_for_another_workspaces_segment_or_without_its_target_is_refused(
    world: World, shop: Shop, staff_client: Client, django_capture_on_commit_callbacks
):
    theirs = make_shop(world.tenant_b, django_capture_on_commit_callbacks)
    rows = [
        variant_row(shop.vip, target_segment=str(theirs.vips.pk)),
        variant_row(None, name="No stage", target="stage", target_stage=""),
    ]
    data = {**slot_form(shop.slot, world.tenant_a.pk), **inline("variants", rows, 1)}
    response = staff_client.post(admin_url(Slot, "change", shop.slot.pk), data)
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.errors
    assert errors[0]["target_segment"] == ["No such segment in this workspace."]
    assert "Required when the variant is for a lifecycle stage." in errors[1]["target_stage"]
    with tenant_context(world.tenant_a.pk):
        assert SlotVariant.objects.get(pk=shop.vip.pk).target_segment_id == shop.vips.pk


def test_a_taken_key_is_a_form_error(world: World, shop: Shop, staff_client: Client):
    data = {**slot_form(None, world.tenant_a.pk, key="hero"), **inline("variants", [], 0)}
    response = staff_client.post(admin_url(Slot, "add"), data)
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == ["Slot with this Tenant and Key already exists."]
    with tenant_context(world.tenant_a.pk):
        assert Slot.objects.filter(key="hero").count() == 1


def test_figures_visitors_and_clicks_are_read_only(world: World, shop: Shop, staff_client: Client):
    for model in (Visitor, SlotClick, SlotDailyStats):
        assert staff_client.get(admin_url(model, "add")).status_code == 403, model
    ann = person(world.tenant_a, "ann@example.com")
    with tenant_context(world.tenant_a.pk):
        visitor = Visitor.objects.create(
            tenant=world.tenant_a, anonymous_id="visitor-ann", contact=ann, first_seen_at=T0, last_seen_at=T0
        )
        slot_click_record(tenant_id=world.tenant_a.pk, slot=shop.slot, variant=None, visitor=visitor, now=T0)
        stats = SlotDailyStats.objects.get(slot=shop.slot, variant=None)
    staff_client.post(admin_url(SlotDailyStats, "change", stats.pk), {"clicks": "999"})
    with platform_access():
        stats.refresh_from_db()
    assert stats.clicks == 1
