"""Customer value and the lifecycle funnel, checked against figures computed by hand (see value_data.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
import time_machine
from django.core.cache import cache

from analytics import value
from analytics.value import (
    Lifespan,
    Totals,
    clv_table,
    flow_table,
    funnel,
    lifespan_estimate,
    segment_names,
    value_row,
    value_snapshot,
    value_snapshot_compute,
    value_snapshot_forget,
)
from contacts.ingest import events_ingest
from contacts.models import Contact
from tenants.context import tenant_context
from tests.analytics.value_data import AT, YEAR, Shop, build_other, build_shop
from tests.factories import UserFactory, make_tenant

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def shop(world) -> Iterator[Shop]:
    built = build_shop(world.tenant_a)
    build_other(world.tenant_b)
    yield built
    value_snapshot_forget(tenant_id=world.tenant_a.pk)
    value_snapshot_forget(tenant_id=world.tenant_b.pk)


def snapshot_of(shop: Shop) -> value.ValueSnapshot:
    with tenant_context(shop.tenant.pk):
        return value_snapshot_compute(tenant=shop.tenant, at=AT)


def figures(row: value.ValueRow) -> tuple:
    return (
        row.contacts, row.buyers, row.orders, row.revenue, row.buyer_share, row.revenue_per_contact,
        row.revenue_per_buyer, row.average_order_value, row.purchases_per_year, row.predicted_clv,
    )  # fmt: skip


# --- the formula ------------------------------------------------------------------------------------
def test_predicted_clv_is_order_value_times_frequency_times_lifespan():
    # 4 buyers of 10 contacts, 10 orders worth 500, two buyer-years in all; a 4-year lifespan.
    totals = Totals(contacts=10, buyers=4, orders=10, revenue=D("500"), buyer_days=730.5)
    row = value_row("x", "X", totals, Lifespan(D(4), 100, 25, estimated=True))
    # AOV 50 × 5 purchases a year × 4 years = 1000.
    assert figures(row) == (10, 4, 10, D("500.00"), 0.4, D("50.00"), D("125.00"), D("50.00"), D("5.00"), D("1000.00"))
    nobody = value_row("y", "Y", Totals(), Lifespan(D(3), 0, 0, estimated=False))
    assert figures(nobody) == (0, 0, 0, D("0.00"), None, None, None, None, None, None)


@pytest.mark.parametrize(
    ("cohort", "churned", "years", "estimated"),
    [
        (60, 15, D(4), True),  # 25 % a year
        (60, 60, D(1), True),  # everyone lapsed
        (60, 5, D(10), True),  # 1 / 8.3 % = 12 years, capped at 10
        (60, 0, D(10), True),  # nobody lapsed: the cap
        (49, 10, D(3), False),  # too few buyers a year old: the default
    ],
)
def test_lifespan_from_churn(cohort, churned, years, estimated):
    lifespan = lifespan_estimate(Totals(churn_cohort=cohort, churned=churned))
    assert (lifespan.years, lifespan.estimated) == (years, estimated)
    assert lifespan.churn_rate == (churned / cohort if estimated else None)


def test_lifespan_estimate_from_generated_buyers(db):
    tenant = make_tenant("Churny", UserFactory())
    with tenant_context(tenant.pk):
        Contact.objects.bulk_create(
            Contact(
                tenant=tenant, anonymous_id=f"b{n}", lifecycle_stage="first_time_buyer", order_count=1,
                total_revenue=D("10.00"), first_seen_at=AT - 2 * YEAR,
                last_order_at=AT - dt.timedelta(days=400 if n < 15 else 100),
            )
            for n in range(60)
        )  # fmt: skip
        # Not a year old yet: a buyer, but outside the churn cohort.
        Contact.objects.create(
            tenant=tenant, anonymous_id="young", lifecycle_stage="first_time_buyer", order_count=1,
            total_revenue=D("10.00"), first_seen_at=AT - dt.timedelta(days=364),
            last_order_at=AT - dt.timedelta(days=364),
        )  # fmt: skip
        snapshot = value_snapshot_compute(tenant=tenant, at=AT)
    table = clv_table(snapshot, by="stage")
    assert (table.lifespan.cohort, table.lifespan.churned, table.lifespan.years) == (60, 15, D(4))
    buyers = next(row for row in table.rows if row.key == "first_time_buyer")
    # 61 orders of 10.00 over 120 + 364/365.25 buyer-years, for 4 years.
    assert buyers.predicted_clv == (D("610") / (120 + D(364) / D("365.25")) * 4).quantize(D("0.01"))
    assert "25.0%" in table.lifespan.explanation


# --- CLV by stage and by segment --------------------------------------------------------------------------
def test_clv_by_stage(shop):
    table = clv_table(snapshot_of(shop), by="stage")
    rows = {row.key: row for row in table.rows}
    assert [row.key for row in table.rows] == [
        "new_visitor", "lead", "first_time_buyer", "repeat_customer", "loyal_advocate",
    ]  # fmt: skip
    assert figures(rows["new_visitor"]) == (4, 0, 0, D("0.00"), 0.0, D("0.00"), None, None, None, None)
    assert figures(rows["lead"]) == (3, 0, 0, D("0.00"), 0.0, D("0.00"), None, None, None, None)
    # f1 half a year, f2 ten days counted as 30: 100 over (182.625 + 30) days, 3 years.
    ftb_clv = (D(100) * D("365.25") / (D("182.625") + 30) * 3).quantize(D("0.01"))
    assert ftb_clv == D("515.34")
    ftb_ppy = (D(2) * D("365.25") / (D("182.625") + 30)).quantize(D("0.01"))
    assert figures(rows["first_time_buyer"]) == (
        2, 2, 2, D("100.00"), 1.0, D("50.00"), D("50.00"), D("50.00"), ftb_ppy, ftb_clv,
    )  # fmt: skip
    # r1 two years, r2 one: 5 orders of 50 over 3 buyer-years → 50 × 5/3 × 3.
    assert figures(rows["repeat_customer"]) == (
        2, 2, 5, D("250.00"), 1.0, D("125.00"), D("125.00"), D("50.00"), D("1.67"), D("250.00"),
    )  # fmt: skip
    # a1: 6 orders of 100 in two years → 100 × 3 × 3.
    assert figures(rows["loyal_advocate"]) == (
        1, 1, 6, D("600.00"), 1.0, D("600.00"), D("600.00"), D("100.00"), D("3.00"), D("900.00"),
    )  # fmt: skip
    # Everyone: 950 over 13 orders and 2038.875 buyer-days (tenant B's big buyer is not here).
    days = D("212.625") + D("1095.75") + D("730.5")
    assert figures(table.total) == (
        12, 5, 13, D("950.00"), round(5 / 12, 4), D("79.17"), D("190.00"), D("73.08"),
        (13 * D("365.25") / days).quantize(D("0.01")), (950 * D("365.25") / days * 3).quantize(D("0.01")),
    )  # fmt: skip
    assert table.total.predicted_clv == D("510.56")
    # r1, r2 and a1 were first seen at least a year ago and all ordered 5 days ago: too few for an estimate.
    assert (table.lifespan.years, table.lifespan.estimated, table.lifespan.cohort) == (D(3), False, 3)


def test_clv_by_segment(shop):
    with tenant_context(shop.tenant.pk):
        names = segment_names(tenant=shop.tenant)
    table = clv_table(snapshot_of(shop), by="segment", segment_names=names)
    assert [row.label for row in table.rows] == ["VIPs", "=Empty"]  # most revenue first
    vips, empty = table.rows
    assert vips.key == str(shop.vips.pk)
    # r1, a1 and l1: 8 orders worth 700 over four buyer-years → 87.50 × 2 × 3.
    assert figures(vips) == (3, 2, 8, D("700.00"), 0.6667, D("233.33"), D("350.00"), D("87.50"), D("2.00"), D("525.00"))
    assert figures(empty) == (0, 0, 0, D("0.00"), None, None, None, None, None, None)
    assert table.total.contacts == 12  # every contact, not only members


def test_a_segment_deleted_after_the_snapshot_is_left_out(shop):
    snapshot = snapshot_of(shop)
    with tenant_context(shop.tenant.pk):
        shop.empty.delete()
        names = segment_names(tenant=shop.tenant)
    assert [row.label for row in clv_table(snapshot, by="segment", segment_names=names).rows] == ["VIPs"]


def test_figures_follow_purchases_through_event_ingest(world):
    tenant = world.tenant_a
    try:
        with tenant_context(tenant.pk), time_machine.travel(AT, tick=False):
            events_ingest(
                tenant=tenant,
                events=[
                    {"event": "purchase", "email": "ann@shop.example", "revenue": "30.00",
                     "occurred_at": (AT - YEAR).isoformat()},
                    {"event": "purchase", "email": "ann@shop.example", "revenue": "70.00",
                     "occurred_at": (AT - dt.timedelta(days=3)).isoformat()},
                    {"event": "page_view", "email": "ben@shop.example"},
                ],
            )  # fmt: skip
            snapshot = value_snapshot_compute(tenant=tenant, at=AT)
    finally:
        value_snapshot_forget(tenant_id=tenant.pk)
    rows = {row.key: row for row in clv_table(snapshot, by="stage").rows}
    # Ann: two orders (a repeat customer) first seen a year ago: 100 a year for 3 years.
    assert figures(rows["repeat_customer"]) == (
        1, 1, 2, D("100.00"), 1.0, D("100.00"), D("100.00"), D("50.00"), D("2.00"), D("300.00"),
    )  # fmt: skip
    assert rows["lead"].contacts == 1  # Ben: identified, no order
    # Both arrived as leads (identified by email), then Ann's purchases made her a repeat customer; the
    # lifecycle records the moves when the ingest ran (AT's day), not when the purchases happened.
    today = {(f, t): n for (day, f, t), n in snapshot.flows.items() if day == AT.date()}
    assert today == {("", "lead"): 2, ("lead", "repeat_customer"): 1}


# --- the funnel and the flows ----------------------------------------------------------------------------
def funnel_figures(f: value.Funnel) -> dict[str, tuple]:
    return {
        s.stage: (s.contacts, s.reached, s.conversion_to_next, s.at_start, s.entered, s.left, s.moved_up,
                  s.range_conversion)
        for s in f.stages
    }  # fmt: skip


def test_funnel_over_twelve_weeks(shop):
    f = funnel(snapshot_of(shop), range_code="12w")
    assert f.total_contacts == 12
    assert funnel_figures(f) == {
        #                  now reached to-next  start in left up  moved-up share
        "new_visitor":      (4, 12, 0.6667,      4,    1, 1,   1, 0.2),
        "lead":             (3, 8,  0.625,       2,    2, 1,   1, 0.25),
        "first_time_buyer": (2, 5,  0.6,         3,    1, 2,   2, 0.5),
        "repeat_customer":  (2, 3,  0.3333,      1,    3, 2,   2, 0.5),
        "loyal_advocate":   (1, 1,  None,        0,    2, 1,   0, None),
    }  # fmt: skip


def test_funnel_over_thirty_days(shop):
    f = funnel(snapshot_of(shop), range_code="30d")
    # a1's move to loyal advocate (10 May) and f2's first purchase (29 March) are before the range.
    assert funnel_figures(f) == {
        "new_visitor":      (4, 12, 0.6667, 4, 1, 1, 1, 0.2),
        "lead":             (3, 8,  0.625,  2, 2, 1, 1, 0.25),
        "first_time_buyer": (2, 5,  0.6,    3, 1, 2, 2, 0.5),
        "repeat_customer":  (2, 3,  0.3333, 0, 3, 1, 1, 0.3333),
        "loyal_advocate":   (1, 1,  None,   1, 1, 1, 0, None),
    }  # fmt: skip


def test_flows_by_week_in_the_tenants_time_zone(shop):
    table = flow_table(snapshot_of(shop), range_code="12w")
    assert (table.rows[0].period_start, table.rows[-1].period_start) == (dt.date(2026, 3, 30), dt.date(2026, 6, 15))
    assert len(table.rows) == 12
    assert [pair.label for pair in table.pairs] == [
        "New contact → New visitor", "New contact → Lead", "New visitor → Lead", "Lead → First-time buyer",
        "First-time buyer → Repeat customer", "Repeat customer → Loyal advocate", "Loyal advocate → Repeat customer",
    ]  # fmt: skip
    by_week = {row.period_start: row.counts for row in table.rows if row.total}
    assert by_week == {
        # l1 arrived at 00:30 on Monday in Berlin (Sunday in UTC); l2 at 23:30 on Sunday.
        dt.date(2026, 6, 15): [1, 1, 0, 0, 0, 0, 1],
        dt.date(2026, 6, 8): [0, 0, 1, 1, 0, 0, 0],
        dt.date(2026, 6, 1): [0, 0, 0, 0, 2, 1, 0],
        dt.date(2026, 5, 4): [0, 0, 0, 0, 0, 1, 0],
    }
    assert table.pair_totals == [1, 1, 1, 1, 2, 2, 1] and table.total == 9  # v2's move after AT is not counted


def test_flows_by_day_and_over_a_year(shop):
    snapshot = snapshot_of(shop)
    days = flow_table(snapshot, range_code="30d")
    assert (days.rows[0].period_start, days.rows[-1].period_start, len(days.rows)) == (
        dt.date(2026, 5, 19), dt.date(2026, 6, 17), 30,
    )  # fmt: skip
    assert {row.period_start: row.total for row in days.rows if row.total} == {
        dt.date(2026, 6, 16): 2, dt.date(2026, 6, 15): 1, dt.date(2026, 6, 14): 1, dt.date(2026, 6, 10): 1,
        dt.date(2026, 6, 3): 1, dt.date(2026, 6, 1): 2,
    }  # fmt: skip
    year = flow_table(snapshot, range_code="52w")
    assert (year.rows[0].period_start, len(year.rows), year.total) == (dt.date(2025, 6, 23), 52, 10)
    march = next(row for row in year.rows if row.period_start == dt.date(2026, 3, 23))
    assert march.total == 1  # f2's first purchase


def test_charts_carry_the_figures(shop):
    snapshot = snapshot_of(shop)
    flows = value.flow_chart(flow_table(snapshot, range_code="12w"))
    assert flows["type"] == "bar" and flows["options"]["scales"]["y"]["stacked"] is True
    # New contacts' first stages stay out of the chart (they would dwarf the moves).
    assert flows["data"]["datasets"][0]["label"] == "New visitor → Lead"
    assert len(flows["data"]["datasets"]) == 5
    funnel_chart = value.funnel_chart(funnel(snapshot))
    assert funnel_chart["data"]["datasets"][0]["data"] == [12, 8, 5, 3, 1]
    clv = value.clv_chart(clv_table(snapshot, by="stage"))
    assert clv["data"]["datasets"][1]["data"] == [0.0, 0.0, 515.34, 250.0, 900.0]


# --- the cached snapshot ---------------------------------------------------------------------------------
def test_the_snapshot_is_cached_then_recomputed_when_stale(shop, django_assert_num_queries):
    tenant = shop.tenant
    with tenant_context(tenant.pk):
        first = value_snapshot(tenant=tenant, now=AT)
        with django_assert_num_queries(0):
            again = value_snapshot(tenant=tenant, now=AT + value.SNAPSHOT_FRESH_FOR - dt.timedelta(seconds=1))
        assert again == first
        Contact.objects.create(tenant=tenant, anonymous_id="late", lifecycle_stage="lead")
        later = AT + value.SNAPSHOT_FRESH_FOR
        # Stale while another request recomputes (it holds the lock): the previous figures.
        assert cache.add(value._cache_key(tenant.pk) + ":lock", 1)
        assert value_snapshot(tenant=tenant, now=later).everyone.contacts == 12
        cache.delete(value._cache_key(tenant.pk) + ":lock")
        recomputed = value_snapshot(tenant=tenant, now=later)
        assert (recomputed.computed_at, recomputed.everyone.contacts) == (later, 13)
        value_snapshot_forget(tenant_id=tenant.pk)
        assert value_snapshot(tenant=tenant, now=later).computed_at == later
        # A periodic refresh keeps the cache warm: the next page finds it fresh.
        refreshed = value.value_snapshot_refresh(tenant=tenant, at=later + dt.timedelta(minutes=9))
        with django_assert_num_queries(0):
            assert value_snapshot(tenant=tenant, now=later + dt.timedelta(minutes=18)) == refreshed


def test_each_tenant_has_its_own_snapshot(shop, world):
    with tenant_context(world.tenant_a.pk):
        a = value_snapshot(tenant=world.tenant_a, now=AT)
    with tenant_context(world.tenant_b.pk):
        b = value_snapshot(tenant=world.tenant_b, now=AT)
    assert (a.everyone.contacts, b.everyone.contacts) == (12, 1)
    assert b.everyone.revenue == D("99999.00") and a.everyone.revenue == D("950.00")
    assert set(a.segments) == {shop.vips.pk, shop.empty.pk}


def test_the_snapshot_survives_the_cache_round_trip(shop):
    with tenant_context(shop.tenant.pk):
        computed = value_snapshot(tenant=shop.tenant, now=AT)
    assert cache.get(value._cache_key(shop.tenant.pk)) == computed


def test_the_periodic_refresh_keeps_the_tenants_someone_looked_at_warm(shop, world, monkeypatch):
    from analytics import tasks

    cache.delete(f"{value._cache_key(world.tenant_a.pk)}:viewed")
    cache.delete(f"{value._cache_key(world.tenant_b.pk)}:viewed")
    assert value.tenants_viewed_lately([world.tenant_a.pk, world.tenant_b.pk]) == []
    with tenant_context(world.tenant_a.pk):
        value.value_snapshot(tenant=world.tenant_a)
    assert value.tenants_viewed_lately([world.tenant_a.pk, world.tenant_b.pk]) == [world.tenant_a.pk]
    queued: list[int] = []
    monkeypatch.setattr(tasks.value_refresh, "delay", queued.append)
    assert tasks.value_refresh_viewed() == 1 and queued == [world.tenant_a.pk]
    value_snapshot_forget(tenant_id=world.tenant_a.pk)
    tasks.value_refresh(world.tenant_a.pk)  # the task, run here: the snapshot is back in the cache
    assert cache.get(value._cache_key(world.tenant_a.pk)) is not None
