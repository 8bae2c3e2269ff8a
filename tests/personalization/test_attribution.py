"""Conversions credited to website slots: the contact's last slot click within the window, once per event.

Every figure below is worked out by hand from the clicks and events of the scenario.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from analytics import apps as analytics_apps
from analytics import tasks as analytics_tasks
from campaigns.models import Campaign
from contacts.models import Contact, Event
from personalization.attribution import ATTRIBUTION_WINDOW, slot_conversions_attribute
from personalization.models import SiteKey, SlotClick, SlotDailyStats, SlotVariant, Visitor
from personalization.services import (
    site_key_create,
    slot_click_record,
    visitor_identify,
    web_events_track,
)
from tenants.context import tenant_context
from tenants.models import Tenant
from tests.conftest import World
from tests.personalization.test_ui import ACTOR, Shop, make_shop, person

pytestmark = pytest.mark.django_db
T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
DAY = T0.date()
Figures = tuple[int, int, int, Decimal]  # impressions, clicks, conversions, revenue


@pytest.fixture
def shop(world: World, django_capture_on_commit_callbacks: Any) -> Shop:
    return make_shop(world.tenant_a, django_capture_on_commit_callbacks)


def visitor_of(contact: Contact, name: str) -> Visitor:
    with tenant_context(contact.tenant_id):
        return Visitor.objects.create(
            tenant_id=contact.tenant_id, anonymous_id=f"visitor-{name}", contact=contact, identified_at=T0,
            first_seen_at=T0, last_seen_at=T0,
        )  # fmt: skip


def click(shop: Shop, who: Visitor, variant: SlotVariant | None, at: dt.datetime) -> SlotClick:
    with tenant_context(shop.tenant.pk):
        return slot_click_record(tenant_id=shop.tenant.pk, slot=shop.slot, variant=variant, visitor=who, now=at)


def event(contact: Contact, at: dt.datetime, name: str = "purchase", revenue: str | None = None) -> int:
    with tenant_context(contact.tenant_id):
        made = Event.objects.create(
            tenant_id=contact.tenant_id, contact=contact, name=name, occurred_at=at,
            revenue=Decimal(revenue) if revenue is not None else None,
        )  # fmt: skip
        return made.pk


def attribute(tenant: Tenant, ids: list[int]) -> int:
    with tenant_context(tenant.pk):
        return slot_conversions_attribute(tenant=tenant, event_ids=ids)


def figures(shop: Shop, variant: SlotVariant | None, day: dt.date = DAY) -> Figures:
    with tenant_context(shop.tenant.pk):
        row = SlotDailyStats.objects.filter(slot=shop.slot, variant=variant, day=day).first()
    if row is None:
        return (0, 0, 0, Decimal(0))
    return (row.impressions, row.clicks, row.conversions, row.revenue)


def test_a_purchase_after_a_click_is_credited_to_that_variant_once(world: World, shop: Shop):
    ann = person(world.tenant_a, "ann@example.com")
    click(shop, visitor_of(ann, "ann"), shop.vip, T0)
    bought = event(ann, T0 + dt.timedelta(hours=1), revenue="30.00")
    assert attribute(world.tenant_a, [bought]) == 1
    assert figures(shop, shop.vip) == (0, 1, 1, Decimal("30.00"))
    # Again, and again with the same event in a bigger batch: still once.
    assert attribute(world.tenant_a, [bought]) == 1
    assert attribute(world.tenant_a, [bought, bought]) == 1
    assert figures(shop, shop.vip) == (0, 1, 1, Decimal("30.00"))
    assert figures(shop, shop.leads) == figures(shop, None) == (0, 0, 0, Decimal(0))


def test_the_last_click_wins_and_other_peoples_clicks_do_not_count(world: World, shop: Shop):
    ben = person(world.tenant_a, "ben@example.com")
    eve = person(world.tenant_a, "eve@example.com")
    bens = visitor_of(ben, "ben")
    click(shop, bens, shop.vip, T0)
    click(shop, bens, shop.leads, T0 + dt.timedelta(hours=2))
    click(shop, bens, shop.vip, T0 + dt.timedelta(hours=4))  # after the purchase: not the one before it
    bens_purchase = event(ben, T0 + dt.timedelta(hours=3), revenue="50.00")
    eves_purchase = event(eve, T0 + dt.timedelta(hours=3), revenue="70.00")  # Eve never clicked
    assert attribute(world.tenant_a, [bens_purchase, eves_purchase]) == 1
    # VIP: two clicks, no conversion; Leads: one click, Ben's 50.00.
    assert figures(shop, shop.vip) == (0, 2, 0, Decimal(0))
    assert figures(shop, shop.leads) == (0, 1, 1, Decimal("50.00"))


def test_the_window_and_the_order_of_click_and_event(world: World, shop: Shop):
    cleo = person(world.tenant_a, "cleo@example.com")
    dan = person(world.tenant_a, "dan@example.com")
    fay = person(world.tenant_a, "fay@example.com")
    click(shop, visitor_of(cleo, "cleo"), shop.vip, T0)
    click(shop, visitor_of(dan, "dan"), shop.vip, T0)
    click(shop, visitor_of(fay, "fay"), shop.vip, T0)
    on_the_edge = event(cleo, T0 + ATTRIBUTION_WINDOW, revenue="10.00")  # 120 h after: still in
    too_late = event(dan, T0 + ATTRIBUTION_WINDOW + dt.timedelta(seconds=1), revenue="20.00")
    too_early = event(fay, T0 - dt.timedelta(minutes=1), revenue="40.00")  # before her click
    assert attribute(world.tenant_a, [on_the_edge, too_late, too_early]) == 1
    edge_day = (T0 + ATTRIBUTION_WINDOW).date()
    assert figures(shop, shop.vip, edge_day) == (0, 0, 1, Decimal("10.00"))
    assert figures(shop, shop.vip, DAY) == (0, 3, 0, Decimal(0))


def test_only_conversion_events_count_purchase_always_and_campaign_goals(world: World, shop: Shop):
    gil = person(world.tenant_a, "gil@example.com")
    click(shop, visitor_of(gil, "gil"), shop.leads, T0)
    seen = event(gil, T0 + dt.timedelta(minutes=5), name="page_view")
    signed_up = event(gil, T0 + dt.timedelta(minutes=10), name="signup")
    assert attribute(world.tenant_a, [seen, signed_up]) == 0
    assert figures(shop, shop.leads)[2] == 0
    with tenant_context(world.tenant_a.pk):
        Campaign.objects.create(tenant=world.tenant_a, name="Welcome", goal_event="signup")
    assert attribute(world.tenant_a, [seen, signed_up]) == 1
    assert figures(shop, shop.leads) == (0, 1, 1, Decimal(0)), "a goal without revenue: a conversion, no money"


def test_a_click_on_the_default_content_credits_the_default_row(world: World, shop: Shop):
    hal = person(world.tenant_a, "hal@example.com")
    click(shop, visitor_of(hal, "hal"), None, T0)
    first = event(hal, T0 + dt.timedelta(hours=1), revenue="12.50")
    second = event(hal, T0 + dt.timedelta(hours=2), revenue="7.50")
    assert attribute(world.tenant_a, [first]) == 1
    assert attribute(world.tenant_a, [second]) == 1
    # Two purchases after the same click: two conversions, 20.00.
    assert figures(shop, None) == (0, 1, 2, Decimal("20.00"))


def test_a_batch_over_two_days_recounts_both_and_keeps_impressions_and_clicks(world: World, shop: Shop):
    ivy = person(world.tenant_a, "ivy@example.com")
    with tenant_context(world.tenant_a.pk):
        SlotDailyStats.objects.create(tenant=world.tenant_a, slot=shop.slot, variant=shop.vip, day=DAY, impressions=40)
    click(shop, visitor_of(ivy, "ivy"), shop.vip, T0)
    today = event(ivy, T0 + dt.timedelta(hours=1), revenue="5.00")
    tomorrow = event(ivy, T0 + dt.timedelta(days=1), revenue="6.00")
    assert attribute(world.tenant_a, [today, tomorrow]) == 2
    assert figures(shop, shop.vip, DAY) == (40, 1, 1, Decimal("5.00"))
    assert figures(shop, shop.vip, DAY + dt.timedelta(days=1)) == (0, 0, 1, Decimal("6.00"))


def test_an_anonymous_visitors_click_counts_for_the_person_they_sign_in_as(world: World, shop: Shop):
    tenant = world.tenant_a
    with tenant_context(tenant.pk):
        key = site_key_create(
            tenant=tenant, name="Shop", allowed_origins=["https://shop.example"], actor=ACTOR,
            require_signed_identify=False,
        )  # fmt: skip
        anonymous_id = "anon-kim-0001"
        web_events_track(tenant=tenant, site_key=key, anonymous_id=anonymous_id, events=[{"event": "page_view"}])
        who = Visitor.objects.get(anonymous_id=anonymous_id)
    assert who.contact_id is not None  # the anonymous contact its page view made
    made = click(shop, who, shop.vip, T0)
    assert made.contact_id == who.contact_id
    with tenant_context(tenant.pk):
        kim = visitor_identify(
            tenant=tenant, site_key=SiteKey.objects.get(pk=key.pk), anonymous_id=anonymous_id, email="kim@example.com"
        )
        assert not Contact.objects.filter(pk=who.contact_id).exists(), "merged into Kim"
    bought = event(kim, T0 + dt.timedelta(hours=1), revenue="99.00")
    assert attribute(tenant, [bought]) == 1
    assert figures(shop, shop.vip) == (0, 1, 1, Decimal("99.00"))


def test_the_analytics_attribution_task_credits_slots_too(world: World, shop: Shop):
    jo = person(world.tenant_a, "jo@example.com")
    click(shop, visitor_of(jo, "jo"), shop.leads, T0)
    bought = event(jo, T0 + dt.timedelta(hours=1), revenue="15.00")
    assert analytics_tasks.attribute(world.tenant_a.pk, [bought]) == 0  # the task run in place: no message touched Jo
    assert figures(shop, shop.leads) == (0, 1, 1, Decimal("15.00"))


def test_new_events_queue_attribution_for_a_workspace_with_slot_clicks_and_no_campaign_goal(
    world: World, shop: Shop, monkeypatch: pytest.MonkeyPatch
):
    """The analytics receiver used to stop when no campaign had a goal; slot clicks now keep it going."""
    queued: list[tuple[int, list[int]]] = []
    monkeypatch.setattr("analytics.tasks.attribute.apply_async", lambda args, **options: queued.append(tuple(args)))
    analytics_apps._events(None, tenant_id=world.tenant_a.pk, event_ids=[1, 2])
    assert queued == [], "no goal, no click: nothing to credit"
    kay = person(world.tenant_a, "kay@example.com")
    click(shop, visitor_of(kay, "kay"), shop.vip, T0)
    analytics_apps._events(None, tenant_id=world.tenant_a.pk, event_ids=[1, 2])
    assert queued == [(world.tenant_a.pk, [1, 2])]


def test_another_tenants_events_and_clicks_are_never_mixed_in(
    world: World, shop: Shop, django_capture_on_commit_callbacks: Any
):
    theirs = make_shop(world.tenant_b, django_capture_on_commit_callbacks)
    lou = person(world.tenant_b, "lou@example.com")
    click(theirs, visitor_of(lou, "lou"), theirs.vip, T0)
    bought = event(lou, T0 + dt.timedelta(hours=1), revenue="8.00")
    assert attribute(world.tenant_a, [bought]) == 0, "B's event id given to A's attribution is not A's"
    assert figures(shop, shop.vip) == (0, 0, 0, Decimal(0))
    assert attribute(world.tenant_b, [bought]) == 1
    assert figures(theirs, theirs.vip) == (0, 1, 1, Decimal("8.00"))
