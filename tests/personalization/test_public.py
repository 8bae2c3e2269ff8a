"""The snippet's public endpoints (/p/v1/): a public site key, its origins, its limits, and nothing more."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from contacts.models import Contact, Event, LifecycleStage
from personalization.impressions import impressions_flush
from personalization.models import SiteKey, Slot, SlotClick, SlotDailyStats, SlotVariant, Visitor
from personalization.services import identify_signature, site_key_create, site_key_revoke, slot_create, variant_add
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.conftest import World

ORIGIN = "https://shop.example"
ACTOR = Actor.system("test")


@dataclass
class Site:
    """Tenant A's shop: a site key for ORIGIN, a hero slot with a VIP (segment) and a lead (stage) variant."""

    world: World
    key: SiteKey
    slot: Slot
    vips: Segment
    vip_variant: SlotVariant
    lead_variant: SlotVariant


def make_site(world: World, capture: Any, *, signed: bool = True, origins: list[str] | None = None) -> Site:
    """Build the site through the services, running their after-commit work (cache versions)."""
    tenant = world.tenant_a
    with capture(execute=True), tenant_context(tenant.pk):
        key = site_key_create(
            tenant=tenant, name="Shop", allowed_origins=origins or [ORIGIN], actor=ACTOR, require_signed_identify=signed
        )
        slot = slot_create(tenant=tenant, actor=ACTOR, data={
            "key": "hero", "name": "Hero", "headline": "Spring is here", "body": "For everyone",
            "cta_label": "Shop", "cta_url": "/spring",
        })  # fmt: skip
        vips = segment_create(tenant=tenant, actor=ACTOR, name="VIPs", kind=Segment.Kind.STATIC)
        vip_variant = variant_add(slot=slot, actor=ACTOR, data={
            "name": "VIP", "target": "segment", "target_segment": vips, "headline": "Early access for VIPs",
            "cta_label": "Go", "cta_url": "https://shop.example/vip",
        })  # fmt: skip
        lead_variant = variant_add(slot=slot, actor=ACTOR, data={
            "name": "Leads", "target": "stage", "target_stage": LifecycleStage.LEAD, "headline": "10% off",
        })  # fmt: skip
    return Site(world, key, slot, vips, vip_variant, lead_variant)


def add_to_segment(site: Site, capture: Any, contact: Contact) -> None:
    with capture(execute=True), tenant_context(site.world.tenant_a.pk):
        static_members_add(segment=site.vips, actor=ACTOR, contact_ids=[contact.pk])


def send(
    client: Client, path: str, body: Any = None, *, key: str | None, origin: str | None = ORIGIN, method: str = "post",
    query: str = "", **headers: Any,
) -> Any:  # fmt: skip
    url = f"/p/v1/{path}?{f'key={key}&' if key else ''}{query}"
    extra = {"HTTP_ORIGIN": origin} if origin else {}
    extra.update(headers)
    if method == "post":
        data = body if isinstance(body, str | bytes) else json.dumps(body or {})
        return client.post(url, data=data, content_type="text/plain;charset=UTF-8", **extra)
    return getattr(client, method)(url, **extra)


def visitor(n: int = 1) -> str:
    return f"0b6c1f0e-4d0b-4a5e-9a53-{n:012d}"


@pytest.fixture
def site(world: World, django_capture_on_commit_callbacks: Any) -> Site:
    return make_site(world, django_capture_on_commit_callbacks)


def events_of(tenant_id: int, contact_id: int) -> list[str]:
    with tenant_context(tenant_id):
        return list(Event.objects.filter(tenant_id=tenant_id, contact_id=contact_id).values_list("name", flat=True))


# --- events ---------------------------------------------------------------------------------------
def test_events_reach_the_visitors_contact_once(site: Site, client: Client):
    body = {"visitor_id": visitor(), "events": [
        {"event": "page_view", "properties": {"path": "/"}, "idempotency_key": "e-1"},
        {"event": "add_to_cart", "properties": {"product": "jacket"}, "idempotency_key": "e-2"},
    ]}  # fmt: skip
    response = send(client, "events/", body, key=site.key.public_key)
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 2, "duplicates": 0}
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in response["Vary"]
    tenant_id = site.world.tenant_a.pk
    with tenant_context(tenant_id):
        contact = Contact.objects.get(anonymous_id=visitor())
        row = Visitor.objects.get(anonymous_id=visitor())
        source = Event.objects.filter(contact=contact).values_list("source", flat=True).first()
    assert sorted(events_of(tenant_id, contact.pk)) == ["add_to_cart", "page_view"]
    assert row.contact_id == contact.pk and row.identified_at is None and row.site_key_id == site.key.pk
    assert source == "web"
    # A retry of the same events is a no-op (idempotency keys).
    again = send(client, "events/", body, key=site.key.public_key)
    assert again.json() == {"accepted": 0, "duplicates": 2}
    assert len(events_of(tenant_id, contact.pk)) == 2


def test_a_browser_cannot_write_for_another_contact_or_send_server_events(site: Site, client: Client):
    with tenant_context(site.world.tenant_a.pk):
        victim = Contact.objects.create(email="victim@example.com")
    for event, field in (
        ({"event": "page_view", "email": "victim@example.com"}, "events[0]"),
        ({"event": "page_view", "contact_id": victim.pk}, "events[0]"),
        ({"event": "purchase", "properties": {}}, "events[0].event"),
        ({"event": "email_click"}, "events[0].event"),
        ({"event": "bad name!"}, "events[0].event"),
    ):
        response = send(client, "events/", {"visitor_id": visitor(), "events": [event]}, key=site.key.public_key)
        assert response.status_code == 400, event
        assert field in response.json()["error"]["fields"], response.json()
    assert events_of(site.world.tenant_a.pk, victim.pk) == []


def test_a_batch_with_one_bad_event_stores_none(site: Site, client: Client):
    body = {"visitor_id": visitor(), "events": [
        {"event": "page_view", "idempotency_key": "ok"},
        {"event": "page_view", "occurred_at": "yesterday"},
    ]}  # fmt: skip
    response = send(client, "events/", body, key=site.key.public_key)
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"events[1].occurred_at": [
        "Expected an ISO 8601 time, e.g. 2026-11-28T09:30:00Z."
    ]}  # fmt: skip
    with tenant_context(site.world.tenant_a.pk):
        assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", "body"),
        ("[1, 2]", "body"),
        ({"events": [{"event": "page_view"}]}, "visitor_id"),
        ({"visitor_id": "short", "events": [{"event": "x"}]}, "visitor_id"),
        ({"visitor_id": "a" * 8 + "<script>", "events": [{"event": "x"}]}, "visitor_id"),
        ({"visitor_id": visitor(), "events": []}, "events"),
        ({"visitor_id": visitor(), "events": [{"event": "x"}] * 51}, "events"),
        ({"visitor_id": visitor(), "events": ["page_view"]}, "events[0]"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(site: Site, client: Client, body: Any, field: str):
    response = send(client, "events/", body, key=site.key.public_key)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["fields"][field], error
    assert response["Access-Control-Allow-Origin"] == ORIGIN  # the page may read why


def test_decide_and_click_reject_bad_input(site: Site, client: Client):
    key = site.key.public_key
    bad_slots = send(client, "decide/", {"visitor_id": visitor(), "slots": ["<b>"]}, key=key)
    assert bad_slots.status_code == 400 and "slots" in bad_slots.json()["error"]["fields"]
    too_many = send(client, "decide/", {"visitor_id": visitor(), "slots": [f"s{i}" for i in range(21)]}, key=key)
    assert too_many.status_code == 400 and "slots" in too_many.json()["error"]["fields"]
    with tenant_context(site.world.tenant_a.pk):
        other = slot_create(tenant=site.world.tenant_a, actor=ACTOR, data={"key": "banner"})
        foreign = variant_add(slot=other, actor=ACTOR, data={"name": "x", "target": "stage", "target_stage": "lead"})
    wrong_variant = send(client, "click/", {"visitor_id": visitor(), "slot": "hero", "variant": foreign.pk}, key=key)
    assert wrong_variant.status_code == 400 and "variant" in wrong_variant.json()["error"]["fields"]
    no_slot = send(client, "click/", {"visitor_id": visitor(), "slot": "nope"}, key=key)
    assert no_slot.status_code == 400 and "slot" in no_slot.json()["error"]["fields"]
    wrong_type = client.post(
        f"/p/v1/events/?key={key}", data="<x/>", content_type="application/xml", HTTP_ORIGIN=ORIGIN
    )
    assert wrong_type.status_code == 415


# --- keys and origins -----------------------------------------------------------------------------
def test_only_allowed_origins_get_cors_and_answers(site: Site, client: Client):
    body = {"visitor_id": visitor(), "slots": ["hero"]}
    for origin in ("https://evil.example", "http://shop.example", "https://shop.example:8443", "null", None):
        response = send(client, "decide/", body, key=site.key.public_key, origin=origin)
        assert response.status_code == 403, origin
        assert "Access-Control-Allow-Origin" not in response, origin
        assert response.json()["error"]["fields"]["origin"]
    allowed = send(client, "decide/", body, key=site.key.public_key)
    assert allowed.status_code == 200
    assert allowed["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed["Cache-Control"] == "no-store"


def test_preflight_is_answered_for_allowed_origins_only(site: Site, client: Client):
    headers = {"HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST", "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "content-type"}
    ok = send(client, "events/", key=site.key.public_key, method="options", **headers)
    assert ok.status_code == 204
    assert ok["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in ok["Access-Control-Allow-Methods"]
    assert "Content-Type" in ok["Access-Control-Allow-Headers"]
    assert "Origin" in ok["Vary"]
    refused = send(
        client, "events/", key=site.key.public_key, origin="https://evil.example", method="options", **headers
    )
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused
    keyless = send(client, "events/", key=None, method="options", **headers)
    assert keyless.status_code == 401 and "Access-Control-Allow-Origin" not in keyless


def test_the_key_may_come_as_a_header(site: Site, client: Client):
    response = send(client, "decide/", {"visitor_id": visitor(), "slots": "hero"}, key=None,
                    HTTP_X_SEGMENTOR_KEY=site.key.public_key)  # fmt: skip
    assert response.status_code == 200
    assert response.json()["slots"]["hero"]["headline"] == "Spring is here"


def test_unknown_revoked_and_secret_keys_are_refused(site: Site, client: Client, django_capture_on_commit_callbacks):
    body = {"visitor_id": visitor(), "slots": ["hero"]}
    assert send(client, "decide/", body, key=site.key.public_key).status_code == 200  # cached as active
    missing = send(client, "decide/", body, key=None)
    assert missing.status_code == 401 and missing.json()["error"]["fields"]["key"]
    unknown = send(client, "decide/", body, key="pk_live_doesnotexist")
    assert unknown.status_code == 401
    secret = send(client, "decide/", body, key=site.world.secret_a)
    assert secret.status_code == 401
    assert "secret API key" in secret.json()["error"]["message"]
    with django_capture_on_commit_callbacks(execute=True), tenant_context(site.world.tenant_a.pk):
        site_key_revoke(site_key=site.key, actor=ACTOR)
    revoked = send(client, "decide/", body, key=site.key.public_key)
    assert revoked.status_code == 401
    assert revoked.json()["error"]["message"] == "This site key was revoked."
    assert revoked["Access-Control-Allow-Origin"] == ORIGIN  # its own page may read why


def test_a_public_key_reads_nothing_from_the_rest_api(site: Site, client: Client):
    for headers in (
        {"HTTP_AUTHORIZATION": f"Bearer {site.key.public_key}"},
        {"HTTP_X_SEGMENTOR_KEY": site.key.public_key},
        {},
    ):
        for path in ("/api/v1/contacts/", "/api/v1/segments/", f"/api/v1/contacts/?key={site.key.public_key}"):
            response = client.get(path, HTTP_ORIGIN=ORIGIN, **headers)
            assert response.status_code in (401, 403), (path, headers)
            assert "Access-Control-Allow-Origin" not in response


def test_the_key_only_reaches_its_own_tenant(site: Site, client: Client, django_capture_on_commit_callbacks):
    tenant_b = site.world.tenant_b
    with django_capture_on_commit_callbacks(execute=True), tenant_context(tenant_b.pk):
        slot_create(tenant=tenant_b, actor=ACTOR, data={"key": "secret-offer", "headline": "B only"})
    response = send(client, "decide/", {"visitor_id": visitor(), "slots": ["hero", "secret-offer"]},
                    key=site.key.public_key)  # fmt: skip
    assert set(response.json()["slots"]) == {"hero"}
    send(client, "events/", {"visitor_id": visitor(), "events": [{"event": "page_view"}]}, key=site.key.public_key)
    with tenant_context(tenant_b.pk):
        assert not Contact.objects.filter(anonymous_id=visitor()).exists()
    with tenant_context(site.world.tenant_a.pk):
        assert Contact.objects.filter(anonymous_id=visitor()).exists()


def test_the_public_endpoints_set_no_cookie_and_need_no_csrf_token(site: Site):
    client = Client(enforce_csrf_checks=True)
    response = send(client, "events/", {"visitor_id": visitor(), "events": [{"event": "page_view"}]},
                    key=site.key.public_key)  # fmt: skip
    assert response.status_code == 202
    assert not response.cookies


def test_unsupported_methods_are_405(site: Site, client: Client):
    response = send(client, "events/", key=site.key.public_key, method="get")
    assert response.status_code == 405 and "POST" in response["Allow"]


# --- rate limits ----------------------------------------------------------------------------------
def test_requests_are_limited_per_visitor_and_per_key(site: Site, client: Client, settings):
    settings.PERSONALIZATION_VISITOR_RATE = "3/min"
    body = {"visitor_id": visitor(7), "slots": ["hero"]}
    statuses = [send(client, "decide/", body, key=site.key.public_key).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = send(client, "decide/", body, key=site.key.public_key)
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 61
    assert limited["Access-Control-Allow-Origin"] == ORIGIN
    assert limited.json()["error"]["code"] == "throttled"
    # Another visitor still gets through, until the key's own limit.
    assert send(client, "decide/", {**body, "visitor_id": visitor(8)}, key=site.key.public_key).status_code == 200
    settings.PERSONALIZATION_KEY_RATE = "1/min"
    fresh = make_key(site)
    assert send(client, "decide/", {**body, "visitor_id": visitor(9)}, key=fresh).status_code == 200
    blocked = send(client, "decide/", {**body, "visitor_id": visitor(10)}, key=fresh)
    assert blocked.status_code == 429 and "site key" in blocked.json()["error"]["message"]


def make_key(site: Site) -> str:
    with tenant_context(site.world.tenant_a.pk):
        key = site_key_create(tenant=site.world.tenant_a, name="Second", allowed_origins=[ORIGIN], actor=ACTOR)
    return key.public_key


# --- identify -------------------------------------------------------------------------------------
def test_identify_must_be_signed_by_the_tenants_server(site: Site, client: Client):
    key = site.key.public_key
    send(
        client,
        "events/",
        {"visitor_id": visitor(), "events": [{"event": "page_view", "idempotency_key": "p"}]},
        key=key,
    )
    body = {"visitor_id": visitor(), "email": "Ada@Example.com"}
    unsigned = send(client, "identify/", body, key=key)
    assert unsigned.status_code == 403
    assert unsigned.json()["error"]["fields"]["signature"]
    forged = send(
        client,
        "identify/",
        {**body, "signature": identify_signature(secret="guess", user_id="ada@example.com")},
        key=key,
    )
    assert forged.status_code == 403
    with tenant_context(site.world.tenant_a.pk):
        assert not Contact.objects.filter(email="ada@example.com").exists()
    signature = identify_signature(secret=site.key.identify_secret, user_id="ada@example.com")
    signed = send(client, "identify/", {**body, "signature": signature}, key=key)
    assert signed.status_code == 200, signed.content
    assert signed.json() == {"identified": True}  # no contact data comes back
    with tenant_context(site.world.tenant_a.pk):
        ada = Contact.objects.get(email="ada@example.com")
        row = Visitor.objects.get(anonymous_id=visitor())
        assert not Contact.objects.filter(anonymous_id=visitor()).exclude(pk=ada.pk).exists()
    assert row.contact_id == ada.pk and row.identified_at is not None
    # The anonymous page view merged into Ada, and later events go to her too.
    send(client, "events/", {"visitor_id": visitor(), "events": [{"event": "signed_in"}]}, key=key)
    assert sorted(events_of(site.world.tenant_a.pk, ada.pk)) == ["page_view", "signed_in"]


def test_identify_by_external_id_signs_the_external_id(site: Site, client: Client):
    signature = identify_signature(secret=site.key.identify_secret, user_id="u-42")
    response = send(client, "identify/", {"visitor_id": visitor(), "external_id": "u-42", "signature": signature},
                    key=site.key.public_key)  # fmt: skip
    assert response.status_code == 200
    with tenant_context(site.world.tenant_a.pk):
        assert Visitor.objects.get(anonymous_id=visitor()).contact_id == Contact.objects.get(external_id="u-42").pk


def test_unsigned_identify_when_the_key_allows_it_but_a_wrong_signature_still_fails(
    world: World, client: Client, django_capture_on_commit_callbacks
):
    site = make_site(world, django_capture_on_commit_callbacks, signed=False)
    body = {"visitor_id": visitor(), "email": "bo@example.com"}
    assert send(client, "identify/", body, key=site.key.public_key).status_code == 200
    wrong = send(client, "identify/", {**body, "signature": "00" * 32}, key=site.key.public_key)
    assert wrong.status_code == 403
    both = send(client, "identify/", {**body, "external_id": "x"}, key=site.key.public_key)
    assert both.status_code == 400 and "external_id" in both.json()["error"]["fields"]
    extra = send(client, "identify/", {**body, "first_name": "Bo"}, key=site.key.public_key)
    assert extra.status_code == 400


def test_a_second_identify_in_the_same_browser_never_merges_two_people(site: Site, client: Client):
    key = site.key.public_key
    for email in ("ann@example.com", "ben@example.com"):
        signature = identify_signature(secret=site.key.identify_secret, user_id=email)
        assert send(client, "identify/", {"visitor_id": visitor(), "email": email, "signature": signature},
                    key=key).status_code == 200  # fmt: skip
    with tenant_context(site.world.tenant_a.pk):
        ann, ben = Contact.objects.get(email="ann@example.com"), Contact.objects.get(email="ben@example.com")
        assert Visitor.objects.get(anonymous_id=visitor()).contact_id == ben.pk
    assert ann.pk != ben.pk


# --- decide and click -----------------------------------------------------------------------------
def test_decide_answers_content_and_counts_impressions(site: Site, client: Client):
    response = send(client, "decide/", {"visitor_id": visitor(), "slots": ["hero", "unknown"]}, key=site.key.public_key)
    assert response.status_code == 200
    assert response.json() == {"slots": {"hero": {
        "slot": "hero", "variant": None, "headline": "Spring is here", "body": "For everyone", "cta_label": "Shop",
        "cta_url": "/spring", "image_url": "",
    }}}  # fmt: skip
    # A plain GET works too (the Referer names the page when there is no Origin).
    got = send(client, "decide/", key=site.key.public_key, method="get", origin=None,
               query=f"vid={visitor()}&slots=hero", HTTP_REFERER=f"{ORIGIN}/products/1")  # fmt: skip
    assert got.status_code == 200 and got["Access-Control-Allow-Origin"] == ORIGIN
    # Impressions wait in Redis until the minute's flush writes them.
    assert flush(site) == 2
    with tenant_context(site.world.tenant_a.pk):
        stats = SlotDailyStats.objects.get(slot=site.slot, variant=None)
    assert (stats.impressions, stats.clicks) == (2, 0)


def flush(site: Site) -> int:
    with tenant_context(site.world.tenant_a.pk):
        return impressions_flush(tenant_id=site.world.tenant_a.pk)


def test_a_click_is_recorded_for_attribution_and_redirects_to_the_stored_link(site: Site, client: Client):
    key = site.key.public_key
    beacon = send(client, "click/", {"visitor_id": visitor(), "slot": "hero", "variant": site.vip_variant.pk}, key=key)
    assert beacon.status_code == 204
    link = send(client, "click/", key=key, method="get", origin=None, query=f"vid={visitor()}&slot=hero",
                HTTP_REFERER=f"{ORIGIN}/home")  # fmt: skip
    assert link.status_code == 302
    assert link["Location"] == "https://shop.example/spring"  # the slot's path, on the page's own site
    vip = send(client, "click/", key=key, method="get", origin=None,
               query=f"vid={visitor()}&slot=hero&variant={site.vip_variant.pk}", HTTP_REFERER=f"{ORIGIN}/")  # fmt: skip
    assert vip["Location"] == "https://shop.example/vip"
    elsewhere = send(client, "click/", key=key, method="get", origin=None, query=f"vid={visitor()}&slot=hero",
                     HTTP_REFERER="https://evil.example/")  # fmt: skip
    assert elsewhere.status_code == 403
    with tenant_context(site.world.tenant_a.pk):
        clicks = list(SlotClick.objects.order_by("id").values_list("variant_id", "visitor__anonymous_id"))
        by_variant = dict(SlotDailyStats.objects.filter(slot=site.slot).values_list("variant_id", "clicks"))
    assert clicks == [(site.vip_variant.pk, visitor()), (None, visitor()), (site.vip_variant.pk, visitor())]
    assert by_variant == {site.vip_variant.pk: 2, None: 1}


def test_another_tenants_variant_id_is_refused_like_a_missing_one(
    site: Site, client: Client, django_capture_on_commit_callbacks
):
    tenant_b = site.world.tenant_b
    with django_capture_on_commit_callbacks(execute=True), tenant_context(tenant_b.pk):
        slot_b = slot_create(tenant=tenant_b, actor=ACTOR, data={"key": "hero"})
        variant_b = variant_add(slot=slot_b, actor=ACTOR, data={"name": "B", "target": "stage", "target_stage": "lead"})
    answers = []
    for variant_id in (variant_b.pk, 987_654_321):
        response = send(client, "click/", {"visitor_id": visitor(), "slot": "hero", "variant": variant_id},
                        key=site.key.public_key)  # fmt: skip
        answers.append((response.status_code, response.json()))
    assert answers[0] == answers[1] and answers[0][0] == 400
    with tenant_context(tenant_b.pk):
        assert not SlotClick.objects.exists() and not SlotDailyStats.objects.exists()


def test_a_stale_key_written_to_the_cache_after_a_revoke_is_not_used(
    site: Site, client: Client, django_capture_on_commit_callbacks
):
    """The cache-aside race: a request read the key before the revoke committed and caches it after."""
    from django.core.cache import cache

    from personalization import versions
    from personalization.public import site_key_info

    before = site_key_info(site.key.public_key)
    assert before is not None and before.active
    with django_capture_on_commit_callbacks(execute=True), tenant_context(site.world.tenant_a.pk):
        site_key_revoke(site_key=site.key, actor=ACTOR)
    cache.set(versions.site_key_cache_key(site.key.public_key), before)  # the late write of the old answer
    response = send(client, "decide/", {"visitor_id": visitor(), "slots": ["hero"]}, key=site.key.public_key)
    assert response.status_code == 401
