"""The personalisation REST API: slots and variants (CRUD, order), site keys (secret shown at creation only),
figures per slot; the error shape, scopes and tenancy."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from personalization.models import SiteKey, Slot, SlotDailyStats, SlotVariant
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.conftest import World
from tests.personalization.test_ui import TODAY, Shop, make_shop, order_of

pytestmark = pytest.mark.django_db
HERO = {"key": "hero", "name": "Home hero", "headline": "Spring", "cta_label": "Shop", "cta_url": "/spring"}


@pytest.fixture
def shop(world: World, django_capture_on_commit_callbacks: Any) -> Shop:
    return make_shop(world.tenant_a, django_capture_on_commit_callbacks)


def error_fields(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "invalid", body
    return body["error"].get("fields", {})


# --- slots ------------------------------------------------------------------------------------------------
def test_create_read_update_and_delete_a_slot(world: World, api_a: APIClient):
    created = api_a.post("/api/v1/slots/", HERO, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["key"] == "hero" and body["variants"] == [] and body["active"] is True
    slot_id = body["id"]
    with tenant_context(world.tenant_a.pk):
        assert AuditLog.objects.filter(action="slot.created", object_id=str(slot_id)).exists()
    changed = api_a.patch(f"/api/v1/slots/{slot_id}/", {"active": False, "body": "All week"}, format="json")
    assert changed.status_code == 200
    assert (changed.json()["active"], changed.json()["body"], changed.json()["headline"]) == (
        False,
        "All week",
        "Spring",
    )
    assert api_a.get(f"/api/v1/slots/{slot_id}/").json()["body"] == "All week"
    assert api_a.delete(f"/api/v1/slots/{slot_id}/").status_code == 204
    assert api_a.get(f"/api/v1/slots/{slot_id}/").status_code == 404


def test_the_list_pages_by_key_with_each_slots_variants_in_order(
    world: World, shop: Shop, api_a: APIClient, django_assert_max_num_queries
):
    for key in ("footer", "banner"):
        api_a.post("/api/v1/slots/", {"key": key}, format="json")
    with django_assert_max_num_queries(8):
        first = api_a.get("/api/v1/slots/?page_size=2").json()
    assert [s["key"] for s in first["results"]] == ["banner", "footer"]
    rest = api_a.get(first["next"]).json()
    assert [s["key"] for s in rest["results"]] == ["hero"]
    assert [v["name"] for v in rest["results"][0]["variants"]] == ["VIP", "Leads"]
    vip = rest["results"][0]["variants"][0]
    assert (vip["target"], vip["target_segment"], vip["target_stage"], vip["position"]) == (
        "segment", shop.vips.pk, "", 0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "not a slug"}, "key"),
        ({"name": "no key"}, "key"),
        ({"key": "x", "cta_url": "javascript:alert(1)"}, "cta_url"),
        ({"key": "x", "image_url": "ftp://files.example/a.png"}, "image_url"),
        ({"key": "x", "headline": "h" * 201}, "headline"),
        ({"key": "x", "colour": "red"}, "colour"),
        ({"key": "hero"}, "key"),  # taken
    ],
)
def test_a_bad_slot_is_a_400_naming_the_field(shop: Shop, api_a: APIClient, body: dict[str, Any], field: str):
    response = api_a.post("/api/v1/slots/", body, format="json")
    assert response.status_code == 400
    assert field in error_fields(response)


# --- variants ----------------------------------------------------------------------------------------------
def test_add_move_change_and_delete_variants(world: World, shop: Shop, api_a: APIClient):
    base = f"/api/v1/slots/{shop.slot.pk}/variants/"
    loyal_first = {"name": "Loyal", "target": "stage", "target_stage": "loyal_advocate", "position": 0}
    added = api_a.post(base, loyal_first, format="json")
    assert added.status_code == 201, added.json()
    assert [v["name"] for v in added.json()["variants"]] == ["Loyal", "VIP", "Leads"]
    loyal = added.json()["variants"][0]["id"]
    moved = api_a.post(f"{base}{loyal}/move/", {"position": 5}, format="json")
    assert moved.status_code == 200 and [v["name"] for v in moved.json()["variants"]] == ["VIP", "Leads", "Loyal"]
    switched = api_a.patch(
        f"{base}{loyal}/", {"target": "segment", "target_segment": shop.vips.pk, "active": False}, format="json"
    )
    assert switched.status_code == 200, switched.json()
    row = next(v for v in switched.json()["variants"] if v["id"] == loyal)
    assert (row["target"], row["target_segment"], row["target_stage"], row["active"]) == (
        "segment", shop.vips.pk, "", False,
    )  # fmt: skip
    assert api_a.get(f"{base}{loyal}/").json()["name"] == "Loyal"
    assert [v["name"] for v in api_a.get(base).json()] == ["VIP", "Leads", "Loyal"]
    assert api_a.delete(f"{base}{loyal}/").status_code == 204
    assert api_a.get(f"{base}{loyal}/").status_code == 404
    assert order_of(shop.slot) == ["VIP", "Leads"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "X", "target": "segment"}, "target_segment"),
        ({"name": "X", "target": "stage"}, "target_stage"),
        ({"name": "X", "target": "stage", "target_stage": "wizard"}, "target_stage"),
        ({"name": "X", "target": "everyone"}, "target"),
        ({"name": "X", "target": "segment", "target_segment": 10**12}, "target_segment"),
        ({"name": "X", "target": "stage", "target_stage": "lead", "cta_url": "data:text/html,x"}, "cta_url"),
        ({"name": "X", "target": "stage", "target_stage": "lead", "position": -1}, "position"),
        ({"target": "stage", "target_stage": "lead"}, "name"),
    ],
)
def test_a_bad_variant_is_a_400_naming_the_field(shop: Shop, api_a: APIClient, body: dict[str, Any], field: str):
    response = api_a.post(f"/api/v1/slots/{shop.slot.pk}/variants/", body, format="json")
    assert response.status_code == 400
    assert field in error_fields(response), response.json()
    assert order_of(shop.slot) == ["VIP", "Leads"]


def test_a_patch_cannot_move_and_move_needs_a_position(shop: Shop, api_a: APIClient):
    base = f"/api/v1/slots/{shop.slot.pk}/variants/{shop.leads.pk}/"
    assert "position" in error_fields(api_a.patch(base, {"position": 0}, format="json"))
    assert "position" in error_fields(api_a.post(f"{base}move/", {}, format="json"))
    assert "position" in error_fields(api_a.post(f"{base}move/", {"position": "first"}, format="json"))
    assert order_of(shop.slot) == ["VIP", "Leads"]


def test_another_workspaces_segment_slot_or_variant_is_unknown(
    world: World, shop: Shop, api_a: APIClient, api_b: APIClient, django_capture_on_commit_callbacks
):
    theirs = make_shop(world.tenant_b, django_capture_on_commit_callbacks)
    response = api_a.post(
        f"/api/v1/slots/{shop.slot.pk}/variants/",
        {"name": "X", "target": "segment", "target_segment": theirs.vips.pk},
        format="json",
    )
    assert response.status_code == 400 and "target_segment" in error_fields(response)
    # A's slot, B's variant id (and the other way round): 404 like a missing one.
    assert api_a.patch(f"/api/v1/slots/{shop.slot.pk}/variants/{theirs.vip.pk}/", {}, format="json").status_code == 404
    assert api_b.get(f"/api/v1/slots/{shop.slot.pk}/").status_code == 404
    assert api_b.delete(f"/api/v1/slots/{shop.slot.pk}/variants/{shop.vip.pk}/").status_code == 404
    with tenant_context(world.tenant_a.pk):
        assert SlotVariant.objects.filter(pk=shop.vip.pk).exists()


def test_a_read_key_reads_but_cannot_write(shop: Shop, api_a_read: APIClient):
    assert api_a_read.get(f"/api/v1/slots/{shop.slot.pk}/").status_code == 200
    assert api_a_read.post("/api/v1/slots/", {"key": "x"}, format="json").status_code == 403
    assert api_a_read.delete(f"/api/v1/slots/{shop.slot.pk}/").status_code == 403
    assert api_a_read.post("/api/v1/site-keys/", {}, format="json").status_code == 403


# --- figures ------------------------------------------------------------------------------------------------
def test_figures_per_variant_and_default_over_a_period(world: World, shop: Shop, api_a: APIClient):
    with tenant_context(world.tenant_a.pk):
        rows = [
            (shop.vip, TODAY, 400, 20, 4, "120.00"), (shop.vip, TODAY - dt.timedelta(days=6), 100, 5, 0, "0"),
            (None, TODAY, 1000, 10, 1, "9.99"), (shop.leads, TODAY - dt.timedelta(days=8), 50, 50, 5, "5"),
        ]  # fmt: skip
        for variant, day, impressions, clicks, conversions, revenue in rows:
            SlotDailyStats.objects.create(
                tenant=world.tenant_a, slot=shop.slot, variant=variant, day=day, impressions=impressions,
                clicks=clicks, conversions=conversions, revenue=Decimal(revenue),
            )  # fmt: skip
    body = api_a.get(f"/api/v1/slots/{shop.slot.pk}/figures/?days=7").json()
    assert body["period"] == {"start": (TODAY - dt.timedelta(days=6)).isoformat(), "end": TODAY.isoformat()}
    by_name = {row["name"]: row for row in body["rows"]}
    assert [row["name"] for row in body["rows"]] == ["VIP", "Leads", "Default content"]
    assert by_name["VIP"]["variant"] == shop.vip.pk and by_name["Default content"]["variant"] is None
    assert by_name["VIP"]["figures"] == {
        "impressions": 500, "clicks": 25, "ctr": 0.05, "conversions": 4, "conversion_rate": 0.16, "revenue": "120.00",
    }  # fmt: skip
    assert by_name["Leads"]["figures"]["impressions"] == 0 and by_name["Leads"]["figures"]["ctr"] is None
    assert body["totals"]["impressions"] == 1500 and body["totals"]["revenue"] == "129.99"
    start = (TODAY - dt.timedelta(days=8)).isoformat()
    dated = api_a.get(f"/api/v1/slots/{shop.slot.pk}/figures/?start={start}&end={start}").json()
    assert {row["name"]: row["figures"]["clicks"] for row in dated["rows"]} == {
        "VIP": 0, "Leads": 50, "Default content": 0,
    }  # fmt: skip


@pytest.mark.parametrize("query", ["days=0", "days=x", "start=2026-01-02", "start=2026-01-02&end=2026-01-01"])
def test_a_bad_period_is_a_400(shop: Shop, api_a: APIClient, query: str):
    response = api_a.get(f"/api/v1/slots/{shop.slot.pk}/figures/?{query}")
    assert response.status_code == 400 and error_fields(response)


# --- site keys ---------------------------------------------------------------------------------------------
def test_a_site_key_shows_its_identify_secret_at_creation_and_rotation_only(world: World, api_a: APIClient):
    created = api_a.post(
        "/api/v1/site-keys/", {"name": "Shop", "allowed_origins": ["https://shop.example"]}, format="json"
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    with tenant_context(world.tenant_a.pk):
        key = SiteKey.objects.get(pk=body["id"])
    assert body["identify_secret"] == key.identify_secret and body["public_key"] == key.public_key
    assert body["require_signed_identify"] is True and body["is_active"] is True
    listed = api_a.get("/api/v1/site-keys/").json()["results"]
    assert [k["id"] for k in listed] == [key.pk] and "identify_secret" not in listed[0]
    one = api_a.get(f"/api/v1/site-keys/{key.pk}/")
    assert "identify_secret" not in one.json() and key.identify_secret not in one.content.decode()
    rotated = api_a.post(f"/api/v1/site-keys/{key.pk}/rotate-secret/").json()
    assert rotated["identify_secret"] != key.identify_secret
    changed = api_a.patch(
        f"/api/v1/site-keys/{key.pk}/",
        {"allowed_origins": ["http://localhost:8000"], "require_signed_identify": False},
        format="json",
    ).json()
    assert changed["allowed_origins"] == ["http://localhost:8000"] and changed["require_signed_identify"] is False
    revoked = api_a.post(f"/api/v1/site-keys/{key.pk}/revoke/").json()
    assert revoked["is_active"] is False and revoked["revoked_at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Shop", "allowed_origins": ["https://shop.example/shop"]}, "allowed_origins"),
        ({"name": "Shop", "allowed_origins": []}, "allowed_origins"),
        ({"name": "Shop", "allowed_origins": "https://shop.example"}, "allowed_origins"),
        ({"name": "", "allowed_origins": ["https://shop.example"]}, "name"),
        ({"name": "Shop", "allowed_origins": ["https://shop.example"], "identify_secret": "mine"}, "identify_secret"),
    ],
)
def test_a_bad_site_key_is_a_400_naming_the_field(world: World, api_a: APIClient, body: dict[str, Any], field: str):
    response = api_a.post("/api/v1/site-keys/", body, format="json")
    assert response.status_code == 400 and field in error_fields(response), response.json()
    with tenant_context(world.tenant_a.pk):
        assert not SiteKey.objects.exists()


def test_another_workspaces_site_key_is_a_404(world: World, api_a: APIClient, api_b: APIClient):
    key = api_a.post("/api/v1/site-keys/", {"name": "A", "allowed_origins": ["https://a.example"]}, format="json")
    key_id = key.json()["id"]
    assert api_b.get(f"/api/v1/site-keys/{key_id}/").status_code == 404
    assert api_b.post(f"/api/v1/site-keys/{key_id}/revoke/").status_code == 404
    assert api_b.get("/api/v1/site-keys/").json()["results"] == []
    with tenant_context(world.tenant_a.pk):
        assert SiteKey.objects.get(pk=key_id).revoked_at is None
        assert Slot.objects.count() == 0
