"""The personalisation pages: slots with figures, a slot's variants (add, edit, move, activate, delete), preview
as a contact, the figures' CSV, and site keys with the snippet; who may read and write; errors in the form."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from contacts.models import Contact, LifecycleStage
from personalization.models import SiteKey, Slot, SlotDailyStats, SlotVariant
from personalization.services import site_key_create, slot_create, variant_add
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog, Tenant
from tenants.roles import Role
from tests.conftest import World
from tests.factories import UserFactory, add_member

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")


# --- helpers (the API, admin and attribution tests use them too) ----------------------------------------
@dataclass
class Shop:
    """Tenant A's hero slot: a VIP variant (static segment), a lead variant (stage), and the default."""

    tenant: Tenant
    slot: Slot
    vips: Segment
    vip: SlotVariant
    leads: SlotVariant


def make_shop(tenant: Tenant, capture: Any) -> Shop:
    with capture(execute=True), tenant_context(tenant.pk):
        slot = slot_create(tenant=tenant, actor=ACTOR, data={
            "key": "hero", "name": "Home hero", "headline": "Spring is here", "body": "For everyone",
            "cta_label": "Shop", "cta_url": "/spring",
        })  # fmt: skip
        vips = segment_create(tenant=tenant, actor=ACTOR, name="VIPs", kind=Segment.Kind.STATIC)
        vip = variant_add(slot=slot, actor=ACTOR, data={
            "name": "VIP", "target": "segment", "target_segment": vips, "headline": "Early access for VIPs",
        })  # fmt: skip
        leads = variant_add(slot=slot, actor=ACTOR, data={
            "name": "Leads", "target": "stage", "target_stage": LifecycleStage.LEAD, "headline": "10% off",
        })  # fmt: skip
    return Shop(tenant, slot, vips, vip, leads)


def person(tenant: Tenant, email: str, **fields: Any) -> Contact:
    with tenant_context(tenant.pk):
        return Contact.objects.create(tenant=tenant, email=email, **fields)


def stats(tenant: Tenant, slot: Slot, variant: SlotVariant | None, day: dt.date, **figures: Any) -> None:
    with tenant_context(tenant.pk):
        SlotDailyStats.objects.create(tenant=tenant, slot=slot, variant=variant, day=day, **figures)


def url(name: str, tenant: Tenant, **kwargs: Any) -> str:
    return reverse(f"personalization:{name}", kwargs={"tenant_slug": tenant.slug, **kwargs})


def text(response: Any) -> str:
    return response.content.decode()


def fresh(obj: Any) -> None:
    """Read ``obj`` again as its tenant (row-level security hides every tenant's rows outside one)."""
    with tenant_context(obj.tenant_id):
        obj.refresh_from_db()


def order_of(slot: Slot) -> list[str]:
    with tenant_context(slot.tenant_id):
        return list(SlotVariant.objects.filter(slot=slot).order_by("priority").values_list("name", flat=True))


@pytest.fixture
def shop(world: World, django_capture_on_commit_callbacks: Any) -> Shop:
    return make_shop(world.tenant_a, django_capture_on_commit_callbacks)


@pytest.fixture
def marketer_client(world: World) -> Client:
    user = UserFactory(email="mia@a.example")
    add_member(world.tenant_a, user, Role.MARKETER)
    client = Client()
    client.force_login(user)
    return client


TODAY = timezone.now().astimezone(dt.UTC).date()


# --- the list and a slot's page: figures per variant -------------------------------------------------------
def test_the_list_shows_each_variants_and_the_defaults_figures_in_a_bounded_number_of_queries(
    world: World, shop: Shop, alice_client: Client, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    stats(world.tenant_a, shop.slot, shop.vip, TODAY, impressions=200, clicks=10, conversions=2, revenue=Decimal("80"))
    stats(world.tenant_a, shop.slot, shop.vip, TODAY - dt.timedelta(days=1), impressions=100, clicks=5)
    stats(world.tenant_a, shop.slot, None, TODAY, impressions=1000, clicks=20, conversions=1, revenue=Decimal("9.5"))
    stats(world.tenant_a, shop.slot, shop.leads, TODAY - dt.timedelta(days=40), impressions=7, clicks=7)  # outside
    make_shop(world.tenant_b, django_capture_on_commit_callbacks)  # B's own "hero": never on A's page
    with django_assert_max_num_queries(14):  # 4 of them the figures' own
        response = alice_client.get(url("slots", world.tenant_a))
    assert response.status_code == 200
    rows = {(r.slot.key, r.key): r.figures for report in response.context["reports"] for r in report.rows}
    assert len(response.context["reports"]) == 1
    vip = rows[("hero", f"variant-{shop.vip.pk}")]
    assert (vip.impressions, vip.clicks, vip.conversions, vip.revenue) == (300, 15, 2, Decimal("80"))
    assert vip.ctr == pytest.approx(0.05)
    assert rows[("hero", f"variant-{shop.leads.pk}")].impressions == 0, "40 days ago is outside the last 30"
    default = rows[("hero", "default")]
    assert (default.impressions, default.clicks, default.conversions) == (1000, 20, 1)
    body = text(response)
    assert "5.0%" in body and "2.0%" in body and "80.00" in body


def test_a_period_of_two_dates_and_a_bad_period_is_a_400_with_the_field(world: World, shop: Shop, alice_client: Client):
    stats(world.tenant_a, shop.slot, shop.leads, TODAY - dt.timedelta(days=40), impressions=7, clicks=7)
    start = (TODAY - dt.timedelta(days=41)).isoformat()
    response = alice_client.get(url("slot", world.tenant_a, slot_id=shop.slot.pk), {"start": start, "end": start})
    leads = next(r for r in response.context["report"].rows if r.variant and r.variant.pk == shop.leads.pk)
    assert response.status_code == 200 and leads.figures.impressions == 0
    response = alice_client.get(
        url("slot", world.tenant_a, slot_id=shop.slot.pk), {"start": start, "end": TODAY.isoformat()}
    )
    leads = next(r for r in response.context["report"].rows if r.variant and r.variant.pk == shop.leads.pk)
    assert leads.figures.impressions == 7
    response = alice_client.get(url("slots", world.tenant_a), {"start": TODAY.isoformat(), "end": start})
    assert response.status_code == 400 and "The end comes before the start." in text(response)


def test_the_slot_page_lists_variants_in_priority_order_with_their_targets(world: World, shop: Shop, alice_client):
    response = alice_client.get(url("slot", world.tenant_a, slot_id=shop.slot.pk))
    body = text(response)
    assert response.status_code == 200
    assert body.index("Early access for VIPs") < body.index("10% off") < body.index("Spring is here")
    assert "Segment: VIPs" in body and "Lifecycle stage: Lead" in body
    assert 'data-testid="move-up"' in body and 'data-testid="delete-slot"' in body


def test_the_figures_download_as_csv_with_names_escaped(world: World, shop: Shop, alice_client: Client):
    stats(world.tenant_a, shop.slot, shop.vip, TODAY, impressions=200, clicks=10, conversions=2, revenue=Decimal("80"))
    with tenant_context(world.tenant_a.pk):
        SlotVariant.objects.filter(pk=shop.vip.pk).update(name="=HYPERLINK(1)")
    response = alice_client.get(url("figures_csv", world.tenant_a), {"days": 7})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    lines = text(response).lstrip("\ufeff").splitlines()
    assert lines[0].startswith("slot_key,slot_name,variant_id,variant,target,priority,active,impressions,clicks,ctr")
    assert (
        lines[1] == f"hero,Home hero,{shop.vip.pk},'=HYPERLINK(1),Segment: VIPs,1,true,200,10,0.050000,2,0.200000,80.00"
    )
    assert lines[3] == "hero,Home hero,,Default content,everyone else,,true,0,0,,0,,0.00"
    one = alice_client.get(url("slot_figures_csv", world.tenant_a, slot_id=shop.slot.pk))
    assert one.status_code == 200 and len(text(one).splitlines()) == 4


# --- slots: create, edit, delete -------------------------------------------------------------------------
def test_create_a_slot_then_edit_and_deactivate_it(world: World, alice_client: Client):
    response = alice_client.post(url("slot_create", world.tenant_a), {
        "key": "banner", "name": "", "active": "on", "headline": "Hello", "body": "", "cta_label": "Go",
        "cta_url": "https://shop.example/go", "image_url": "/img/banner.png",
    })  # fmt: skip
    with tenant_context(world.tenant_a.pk):
        slot = Slot.objects.get(key="banner")
        assert AuditLog.objects.filter(action="slot.created", object_id=str(slot.pk)).exists()
    assert response.status_code == 302 and response["Location"] == url("slot", world.tenant_a, slot_id=slot.pk)
    assert slot.name == "banner" and slot.active and slot.image_url == "/img/banner.png"
    edit = alice_client.get(url("slot_edit", world.tenant_a, slot_id=slot.pk))
    assert edit.status_code == 200 and 'value="banner"' in text(edit)
    response = alice_client.post(url("slot_edit", world.tenant_a, slot_id=slot.pk), {
        "key": "banner", "name": "Top banner", "headline": "Hi again", "cta_url": "/go",
    })  # fmt: skip
    assert response.status_code == 302
    fresh(slot)
    assert (slot.name, slot.headline, slot.active, slot.cta_url) == ("Top banner", "Hi again", False, "/go")


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"key": "not a slug!"}, "key", "letters, numbers, underscores or hyphens"),
        ({"key": "hero"}, "key", "exists already"),
        ({"key": "x", "cta_url": "javascript:alert(1)"}, "cta_url", "Give an http(s) address"),
        ({"key": "x", "image_url": "//evil.example/x.png"}, "image_url", "Give an http(s) address"),
        ({"key": "x", "headline": "h" * 201}, "headline", "at most 200 characters"),
        ({"key": ""}, "key", "This field is required."),
    ],
)
def test_a_bad_slot_is_a_400_with_the_error_under_its_field(
    world: World, shop: Shop, alice_client: Client, data: dict[str, str], field: str, message: str
):
    response = alice_client.post(url("slot_create", world.tenant_a), data)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors and message in " ".join(errors[field]), errors
    assert message in text(response).replace("&#x27;", "'")


def test_deleting_a_slot_takes_its_variants(world: World, shop: Shop, alice_client: Client):
    response = alice_client.post(url("slot_delete", world.tenant_a, slot_id=shop.slot.pk))
    assert response.status_code == 302 and response["Location"] == url("slots", world.tenant_a)
    with tenant_context(world.tenant_a.pk):
        assert not Slot.objects.exists() and not SlotVariant.objects.exists()


# --- variants ----------------------------------------------------------------------------------------------
def test_add_a_variant_for_a_segment_and_one_for_a_stage(world: World, shop: Shop, marketer_client: Client):
    with tenant_context(world.tenant_a.pk):
        germans = segment_create(tenant=world.tenant_a, actor=ACTOR, name="Germans", kind=Segment.Kind.STATIC)
    page = marketer_client.get(url("variant_create", world.tenant_a, slot_id=shop.slot.pk))
    assert page.status_code == 200 and "Germans" in text(page)
    response = marketer_client.post(url("variant_create", world.tenant_a, slot_id=shop.slot.pk), {
        "name": "Germans", "target": "segment", "target_segment": germans.pk, "target_stage": "lead", "active": "on",
        "headline": "Hallo", "cta_label": "Los", "cta_url": "/de",
    })  # fmt: skip
    assert response.status_code == 302
    response = marketer_client.post(url("variant_create", world.tenant_a, slot_id=shop.slot.pk), {
        "name": "Loyal", "target": "stage", "target_stage": "loyal_advocate", "headline": "Thank you",
    })  # fmt: skip
    assert response.status_code == 302
    assert order_of(shop.slot) == ["VIP", "Leads", "Germans", "Loyal"]
    with tenant_context(world.tenant_a.pk):
        added = SlotVariant.objects.get(name="Germans")
        loyal = SlotVariant.objects.get(name="Loyal")
    assert (added.target_segment_id, added.target_stage, added.active) == (germans.pk, "", True)
    assert (loyal.target_segment_id, loyal.target_stage, loyal.active) == (None, "loyal_advocate", False)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": "X", "target": "segment"}, "target_segment", "Choose the segment"),
        ({"name": "X", "target": "stage"}, "target_stage", "Choose the lifecycle stage"),
        ({"name": "X", "target": "stage", "target_stage": "wizard"}, "target_stage", "Select a valid choice"),
        ({"name": "X", "target": "everyone"}, "target", "Select a valid choice"),
        ({"name": "", "target": "stage", "target_stage": "lead"}, "name", "This field is required."),
        (
            {"name": "X", "target": "stage", "target_stage": "lead", "cta_url": "data:text/html,hi"},
            "cta_url",
            "http(s)",
        ),
    ],
)
def test_a_bad_variant_is_a_400_with_the_error_under_its_field(
    world: World, shop: Shop, alice_client: Client, data: dict[str, str], field: str, message: str
):
    response = alice_client.post(url("variant_create", world.tenant_a, slot_id=shop.slot.pk), data)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors and message in " ".join(errors[field]), errors
    assert order_of(shop.slot) == ["VIP", "Leads"]


def test_another_workspaces_segment_cannot_be_targeted(
    world: World, shop: Shop, alice_client: Client, django_capture_on_commit_callbacks
):
    theirs = make_shop(world.tenant_b, django_capture_on_commit_callbacks).vips
    response = alice_client.post(url("variant_create", world.tenant_a, slot_id=shop.slot.pk), {
        "name": "Theirs", "target": "segment", "target_segment": theirs.pk,
    })  # fmt: skip
    assert response.status_code == 400
    assert "Select a valid choice" in " ".join(response.context["form"].errors["target_segment"])
    assert "VIPs" in text(response)  # A's own VIPs, the only choice
    assert order_of(shop.slot) == ["VIP", "Leads"]


def test_edit_a_variant_switching_its_target_from_segment_to_stage(world: World, shop: Shop, alice_client: Client):
    page = alice_client.get(url("variant_edit", world.tenant_a, slot_id=shop.slot.pk, slot_variant_id=shop.vip.pk))
    assert page.status_code == 200 and "Early access for VIPs" in text(page)
    edit = url("variant_edit", world.tenant_a, slot_id=shop.slot.pk, slot_variant_id=shop.vip.pk)
    response = alice_client.post(edit, {
        "name": "First-time buyers", "target": "stage", "target_segment": shop.vips.pk,
        "target_stage": "first_time_buyer", "active": "on", "headline": "Welcome back",
    })  # fmt: skip
    assert response.status_code == 302
    fresh(shop.vip)
    assert (shop.vip.name, shop.vip.target, shop.vip.target_segment_id, shop.vip.target_stage) == (
        "First-time buyers", "stage", None, "first_time_buyer",
    )  # fmt: skip


def test_move_activate_and_delete_variants(world: World, shop: Shop, alice_client: Client):
    kwargs = {"slot_id": shop.slot.pk, "slot_variant_id": shop.leads.pk}
    response = alice_client.post(url("variant_move", world.tenant_a, **kwargs), {"direction": "up"})
    assert response.status_code == 302 and order_of(shop.slot) == ["Leads", "VIP"]
    followed = alice_client.post(url("variant_move", world.tenant_a, **kwargs), {"direction": "up"}, follow=True)
    assert "“Leads” cannot move up." in text(followed)
    assert order_of(shop.slot) == ["Leads", "VIP"], "the first cannot go higher"
    alice_client.post(url("variant_move", world.tenant_a, **kwargs), {"direction": "down"})
    assert order_of(shop.slot) == ["VIP", "Leads"]
    bad = alice_client.post(url("variant_move", world.tenant_a, **kwargs), {"direction": "sideways"}, follow=True)
    assert bad.status_code == 200 and "cannot move so" in text(bad)

    alice_client.post(url("variant_active", world.tenant_a, **kwargs), {"active": "0"})
    fresh(shop.leads)
    assert shop.leads.active is False
    alice_client.post(url("variant_active", world.tenant_a, **kwargs), {"active": "1"})
    fresh(shop.leads)
    assert shop.leads.active is True
    nothing = alice_client.post(url("variant_active", world.tenant_a, **kwargs), {"active": "maybe"}, follow=True)
    assert "Choose whether the variant is active." in text(nothing)

    response = alice_client.post(url("variant_delete", world.tenant_a, **kwargs))
    assert response.status_code == 302 and order_of(shop.slot) == ["VIP"]


def test_a_variant_of_another_slot_is_a_404(world: World, shop: Shop, alice_client: Client):
    with tenant_context(world.tenant_a.pk):
        other = slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "footer"})
    for name in ("variant_edit", "variant_move", "variant_active", "variant_delete"):
        response = alice_client.post(url(name, world.tenant_a, slot_id=other.pk, slot_variant_id=shop.vip.pk))
        assert response.status_code == 404, name
    assert order_of(shop.slot) == ["VIP", "Leads"]


# --- who may do what ----------------------------------------------------------------------------------------
def test_a_viewer_reads_everything_and_changes_nothing(world: World, shop: Shop, bob_client: Client):
    page = bob_client.get(url("slot", world.tenant_a, slot_id=shop.slot.pk))
    assert page.status_code == 200 and 'data-testid="read-only"' in text(page)
    assert 'data-testid="move-up"' not in text(page) and 'data-testid="add-variant"' not in text(page)
    form = bob_client.get(url("slot_edit", world.tenant_a, slot_id=shop.slot.pk))
    assert form.status_code == 200 and "disabled" in text(form)
    posts = [
        url("slot_create", world.tenant_a), url("slot_edit", world.tenant_a, slot_id=shop.slot.pk),
        url("slot_delete", world.tenant_a, slot_id=shop.slot.pk),
        url("variant_create", world.tenant_a, slot_id=shop.slot.pk),
        url("variant_move", world.tenant_a, slot_id=shop.slot.pk, slot_variant_id=shop.leads.pk),
        url("site_keys", world.tenant_a),
    ]  # fmt: skip
    for target in posts:
        assert bob_client.post(target, {"key": "x", "direction": "up"}).status_code == 403, target
    assert order_of(shop.slot) == ["VIP", "Leads"]


def test_another_workspace_sees_nothing_of_the_slot(world: World, shop: Shop, charlie_client: Client):
    for name in ("slot", "slot_edit", "slot_figures_csv"):
        assert charlie_client.get(url(name, world.tenant_a, slot_id=shop.slot.pk)).status_code == 404
    own = reverse("personalization:slot", kwargs={"tenant_slug": world.tenant_b.slug, "slot_id": shop.slot.pk})
    assert charlie_client.get(own).status_code == 404


# --- preview as a contact ------------------------------------------------------------------------------------
def test_preview_finds_a_contact_and_shows_each_slot_with_the_reason(
    world: World, shop: Shop, alice_client: Client, django_capture_on_commit_callbacks
):
    vera = person(
        world.tenant_a,
        "vera@example.com",
        first_name="Vera",
        last_name="Verhoeven",
        external_id="ext-vera",
        lifecycle_stage=LifecycleStage.LEAD,
    )
    lena = person(world.tenant_a, "lena@example.com", lifecycle_stage=LifecycleStage.LEAD)
    nobody = person(world.tenant_a, "nobody@example.com")
    with django_capture_on_commit_callbacks(execute=True), tenant_context(world.tenant_a.pk):
        static_members_add(segment=shop.vips, actor=ACTOR, contact_ids=[vera.pk])
        slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "sidebar", "name": "Sidebar", "active": False})

    for q in ("vera@", "Ver", "ext-vera"):
        found = alice_client.get(url("preview", world.tenant_a), {"q": q})
        assert found.status_code == 200 and [c.pk for c in found.context["matches"]] == [vera.pk], q

    def shown(contact: Contact) -> dict[str, tuple[str, str]]:
        response = alice_client.get(url("preview", world.tenant_a), {"contact": contact.pk})
        assert response.status_code == 200
        return {
            row["slot"].key: (
                row["variant"].name if row["variant"] else "default" if row["decision"] else "off",
                row["why"],
            )
            for row in response.context["rows"]
        }

    # Vera is a VIP and a lead: the VIP variant comes first.
    assert shown(vera)["hero"] == ("VIP", "The contact is a member of the segment “VIPs”.")
    assert shown(lena)["hero"] == ("Leads", "The contact's lifecycle stage is Lead.")
    assert shown(nobody)["hero"] == ("default", "No active variant fits this contact: the default content.")
    assert shown(nobody)["sidebar"][0] == "off"
    page = alice_client.get(url("preview", world.tenant_a), {"contact": vera.pk})
    assert "Early access for VIPs" in text(page) and "VIPs" in text(page)

    # Deactivated, the VIP variant is skipped: Vera gets the lead variant, as the snippet would.
    with tenant_context(world.tenant_a.pk):
        SlotVariant.objects.filter(pk=shop.vip.pk).update(active=False)
    assert shown(vera)["hero"][0] == "Leads"


def test_preview_of_an_unknown_or_foreign_contact_is_a_form_error(world: World, shop: Shop, alice_client: Client):
    theirs = person(world.tenant_b, "theirs@example.com")
    for contact_id in (theirs.pk, 10**12):
        response = alice_client.get(url("preview", world.tenant_a), {"contact": contact_id})
        assert response.status_code == 400 and "No such contact in this workspace." in text(response)
        assert "theirs@example.com" not in text(response)
    assert alice_client.get(url("preview", world.tenant_a), {"contact": "abc"}).status_code == 400
    assert alice_client.get(url("preview", world.tenant_a), {"q": "theirs@"}).context["matches"] == []


# --- site keys ----------------------------------------------------------------------------------------------
def test_create_a_site_key_see_its_secret_once_and_the_snippet(world: World, alice_client: Client):
    response = alice_client.post(url("site_keys", world.tenant_a), {
        "name": "Shop", "allowed_origins": "https://shop.example\nhttps://www.shop.example:8443",
        "require_signed_identify": "on",
    })  # fmt: skip
    with tenant_context(world.tenant_a.pk):
        key = SiteKey.objects.get(name="Shop")
    assert response.status_code == 302 and response["Location"] == url("site_key", world.tenant_a, site_key_id=key.pk)
    assert key.allowed_origins == ["https://shop.example", "https://www.shop.example:8443"]
    assert key.require_signed_identify
    page = alice_client.get(response["Location"])
    body = text(page)
    assert page["Cache-Control"] == "no-store"
    assert key.identify_secret in body
    snippet = page.context["snippet"]
    assert 'src="http://testserver/static/js/segmentor.js"' in snippet
    assert f'data-segmentor-key="{key.public_key}"' in snippet
    assert 'data-segmentor-endpoint="http://testserver/p/v1/"' in snippet
    again = alice_client.get(response["Location"])
    assert key.identify_secret not in text(again) and key.public_key in text(again)
    listing = alice_client.get(url("site_keys", world.tenant_a))
    assert key.public_key in text(listing) and key.identify_secret not in text(listing)


@pytest.mark.parametrize(
    ("origins", "message"),
    [
        ("https://shop.example/path", "is not an origin"),
        ("shop.example", "is not an origin"),
        ("https://shop.example/", "is not an origin"),
        ("", "This field is required."),
        ("\n".join(f"https://s{n}.example" for n in range(21)), "At most 20 origins"),
    ],
)
def test_a_bad_origin_is_a_400_under_the_field(world: World, alice_client: Client, origins: str, message: str):
    response = alice_client.post(url("site_keys", world.tenant_a), {"name": "Shop", "allowed_origins": origins})
    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors["allowed_origins"])
    with tenant_context(world.tenant_a.pk):
        assert not SiteKey.objects.exists()


def test_signed_identify_toggle_secret_rotation_origins_and_revoke(world: World, alice_client: Client):
    with tenant_context(world.tenant_a.pk):
        key = site_key_create(tenant=world.tenant_a, name="Shop", allowed_origins=["https://shop.example"], actor=ACTOR)
    kwargs = {"site_key_id": key.pk}
    alice_client.post(url("site_key_signed_identify", world.tenant_a, **kwargs), {"require": "0"})
    fresh(key)
    assert key.require_signed_identify is False
    alice_client.post(url("site_key_signed_identify", world.tenant_a, **kwargs), {"require": "1"})
    fresh(key)
    assert key.require_signed_identify is True
    odd = alice_client.post(url("site_key_signed_identify", world.tenant_a, **kwargs), {"require": "x"}, follow=True)
    assert "Choose whether identify must be signed." in text(odd)

    old = key.identify_secret
    shown = alice_client.post(url("site_key_rotate", world.tenant_a, **kwargs), follow=True)
    fresh(key)
    assert key.identify_secret != old and key.identify_secret in text(shown) and old not in text(shown)

    bad = alice_client.post(url("site_key", world.tenant_a, **kwargs), {"name": "Shop", "allowed_origins": "ftp://x"})
    assert bad.status_code == 400 and "is not an origin" in text(bad)
    alice_client.post(
        url("site_key", world.tenant_a, **kwargs), {"name": "Shop 2", "allowed_origins": "http://localhost:8000"}
    )
    fresh(key)
    assert (key.name, key.allowed_origins) == ("Shop 2", ["http://localhost:8000"])

    alice_client.post(url("site_key_revoke", world.tenant_a, **kwargs))
    fresh(key)
    assert key.revoked_at is not None
    after = alice_client.post(url("site_key_rotate", world.tenant_a, **kwargs), follow=True)
    assert "This key is revoked" in text(after)
    fresh(key)
    assert key.identify_secret not in text(after)


def test_only_admins_manage_site_keys_but_members_read_them(
    world: World, alice_client: Client, marketer_client: Client, bob_client: Client
):
    with tenant_context(world.tenant_a.pk):
        key = site_key_create(tenant=world.tenant_a, name="Shop", allowed_origins=["https://shop.example"], actor=ACTOR)
    for client in (marketer_client, bob_client):
        page = client.get(url("site_key", world.tenant_a, site_key_id=key.pk))
        assert page.status_code == 200 and key.public_key in text(page)
        assert key.identify_secret not in text(page) and 'data-testid="revoke"' not in text(page)
        created = client.post(url("site_keys", world.tenant_a), {"name": "X", "allowed_origins": "https://x.example"})
        assert created.status_code == 403
        assert client.post(url("site_key_revoke", world.tenant_a, site_key_id=key.pk)).status_code == 403
    fresh(key)
    assert key.revoked_at is None


def test_the_navigation_links_to_the_personalisation_pages(world: World, alice_client: Client):
    body = text(alice_client.get(reverse("tenants:dashboard", kwargs={"tenant_slug": world.tenant_a.slug})))
    assert re.search(rf'href="{url("slots", world.tenant_a)}"', body)
