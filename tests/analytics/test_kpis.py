"""Message KPIs against hand-computed figures (tests/analytics/scenario.py), and the refresh that keeps them.

The hand count for "Winter sale" (sent 2026-01-10 09:00 UTC; Berlin days):

    delivery  contact stage      variant  what happened                                   day (Berlin)
    d1        c1 lead            Leads    2 human opens, 2 human clicks; 2 conversions    opens/clicks 10th
    d2        c2 lead            Leads    Apple proxy open only                           10th
    d3        c3 first-time buyer VIP     proxy open 09:01, human open 23:30 UTC          human open 11th
    d4        c4 repeat          VIP      scanner click, human click (no open); 1 conv.   10th
    d5        c5 repeat          A        hard bounce
    d6        c6 new visitor     A        human open, unsubscribe (link + provider)       10th
    d7        c7 loyal advocate  B        two soft bounces
    d8        c8 lead            B        skipped (not sent)
    d9        c9 first-time buyer B       human open, complaint; 1 conversion             10th
    d10       c10 new visitor    A        failed (not sent)

    sent 8, bounced 2 (d5, d7), delivered 6; opened 4 (d1 d3 d6 d9), opened incl. machines 5 (+d2);
    clicked 2 (d1 d4), clicks 3; engaged 5 (d1 d3 d4 d6 d9); unsubscribed 1; complained 1;
    conversions 4 (d1 twice, d4, d9), revenue 100 + 50 + 30 + 20 = 200; cost 90 → 22.50 per conversion.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from decimal import Decimal

import pytest
import time_machine

from analytics import rollup
from analytics.models import (
    CampaignDayStats,
    CampaignStageStats,
    DeliveryOutcome,
    MessageEvent,
    RunTally,
    StatsCursor,
)
from analytics.rollup import (
    STAGE_FRESH_FOR,
    STAGE_MAX_AGE,
    stage_stats_count,
    stats_rebuild,
    stats_refresh,
    tenants_to_refresh,
)
from analytics.selectors import (
    Kpis,
    Period,
    campaign_results,
    dashboard,
    journey_results,
    segment_rows,
    stage_rows,
    tenant_series,
)
from campaigns.models import Campaign, CampaignRun, Delivery, Variant
from contacts.models import Contact
from tenants.context import tenant_context
from tests.analytics import scenario
from tests.analytics.scenario import APPLE, D1, D2, D3, NOW, at, click, convert, deliver, feedback, open_, run_of

pytestmark = pytest.mark.django_db
JANUARY = Period(dt.date(2026, 1, 1), dt.date(2026, 1, 31))


@pytest.fixture
def winter(world):
    built = scenario.build(world.tenant_a)
    refresh(world.tenant_a)
    return built


def refresh(tenant, now=NOW, **kwargs):
    with tenant_context(tenant.pk):
        return stats_refresh(tenant=tenant, now=now, **kwargs)


def figures(**counts) -> Kpis:
    money = {k: Decimal(v) for k, v in counts.items() if k in ("revenue", "cost")}
    return Kpis(**{**counts, **money})


WINTER_TOTALS = figures(
    sent=8, bounced=2, opened=4, opened_any=5, clicked=2, clicks=3, engaged=5, unsubscribed=1, complained=1,
    conversions=4, revenue="200.00", cost="90.00",
)  # fmt: skip


def test_campaign_totals_and_rates_match_the_hand_count(winter):
    with tenant_context(winter.tenant.pk):
        totals = campaign_results(campaign=winter.sale).totals
    assert totals == WINTER_TOTALS
    assert totals.delivered == 6
    assert totals.bounce_rate == 2 / 8
    assert totals.open_rate == 4 / 6 and totals.open_rate_any == 5 / 6
    assert totals.ctr == 2 / 6 and totals.click_to_open == 2 / 4
    assert totals.conversion_rate == 4 / 6 and totals.engagement_rate == 5 / 6
    assert totals.unsubscribe_rate == 1 / 6 and totals.complaint_rate == 1 / 6
    assert totals.cost_per_conversion == Decimal("22.50")


def test_each_variant_has_its_own_figures_and_a_share_of_the_cost(winter):
    with tenant_context(winter.tenant.pk):
        rows = campaign_results(campaign=winter.sale).variants
    assert [r.label for r in rows] == ["VIP", "Leads", "A", "B"]
    share = "22.5"  # 90 × 2 sent of 8
    assert [r.kpis for r in rows] == [
        figures(sent=2, opened=1, opened_any=1, clicked=1, clicks=1, engaged=2, conversions=1, revenue="30",
                cost=share),
        figures(sent=2, opened=1, opened_any=2, clicked=1, clicks=2, engaged=1, conversions=2, revenue="150",
                cost=share),
        figures(sent=2, bounced=1, opened=1, opened_any=1, engaged=1, unsubscribed=1, cost=share),
        figures(sent=2, bounced=1, opened=1, opened_any=1, engaged=1, complained=1, conversions=1, revenue="20",
                cost=share),
    ]  # fmt: skip
    assert [r.kpis.cost_per_conversion for r in rows] == [Decimal("22.50"), Decimal("11.25"), None, Decimal("22.50")]
    assert [r.detail["target"] for r in rows] == [
        "Segment: VIP", "Stage: Lead", "Default (everyone else)", "Default (everyone else)"
    ]  # fmt: skip


def test_segments_and_the_targeted_against_default_comparison(winter):
    with tenant_context(winter.tenant.pk):
        results = campaign_results(campaign=winter.sale)
    assert [(r.label, r.kpis.sent, r.kpis.delivered, r.kpis.conversions) for r in results.targets] == [
        ("Segment: VIP", 2, 2, 1), ("Stage: Lead", 2, 2, 2), ("Default (everyone else)", 4, 2, 1)
    ]  # fmt: skip
    comparison = results.comparison
    assert comparison.targeted == figures(
        sent=4, opened=2, opened_any=3, clicked=2, clicks=3, engaged=3, conversions=3, revenue="180", cost="45"
    )
    assert comparison.default.delivered == 2 and comparison.default.conversions == 1
    assert comparison.targeted.conversion_rate == 0.75 and comparison.default.conversion_rate == 0.5
    assert comparison.conversion_lift == pytest.approx(0.5)
    assert comparison.ctr_lift is None, "the default had no clicks: no lift to state"
    assert comparison.engagement_lift == pytest.approx(-0.25)
    # Wilson 95 % for 3 of 4: (0.3006, 0.9544); pooled z-test of 3/4 against 1/2: p̂ = 2/3,
    # z = 0.25 / √(2/9 · (1/4 + 1/2)) = 0.6124, p = 0.5403.
    assert comparison.targeted_estimate.low == pytest.approx(0.3006, abs=1e-4)
    assert comparison.targeted_estimate.high == pytest.approx(0.9544, abs=1e-4)
    assert comparison.p_value == pytest.approx(0.5403, abs=1e-4)


def test_stages_are_the_contacts_current_stages(winter):
    with tenant_context(winter.tenant.pk):
        rows = {r.key: r.kpis for r in stage_rows(tenant=winter.tenant, campaign_ids=[winter.sale.pk])}
        assert rows == {
            "lead": figures(sent=2, opened=1, opened_any=2, clicked=1, clicks=2, engaged=1, conversions=2,
                            revenue="150", cost="22.5"),
            "first_time_buyer": figures(sent=2, opened=2, opened_any=2, engaged=2, complained=1, conversions=1,
                                        revenue="20", cost="22.5"),
            "repeat_customer": figures(sent=2, bounced=1, clicked=1, clicks=1, engaged=1, conversions=1, revenue="30",
                                       cost="22.5"),
            "new_visitor": figures(sent=1, opened=1, opened_any=1, engaged=1, unsubscribed=1, cost="11.25"),
            "loyal_advocate": figures(sent=1, bounced=1, cost="11.25"),
        }  # fmt: skip
        Contact.objects.filter(pk=winter.contacts[1].pk).update(lifecycle_stage="repeat_customer")
        kept = {r.key: r.kpis for r in stage_rows(tenant=winter.tenant, campaign_ids=[winter.sale.pk])}
        assert kept["lead"].sent == 2, "counted by the last pass, until counted again"
        stage_stats_count(tenant=winter.tenant, campaign_id=winter.sale.pk, now=NOW)
        moved = {r.key: r.kpis for r in stage_rows(tenant=winter.tenant, campaign_ids=[winter.sale.pk])}
    assert (moved["lead"].sent, moved["lead"].conversions) == (1, 0)
    assert (moved["repeat_customer"].sent, moved["repeat_customer"].conversions) == (3, 3)
    assert moved["repeat_customer"].revenue == Decimal("180")


def test_stages_are_counted_again_after_changes_and_as_they_age(winter):
    def lead_sent() -> int:
        with tenant_context(winter.tenant.pk):
            rows = stage_rows(tenant=winter.tenant, campaign_ids=[winter.sale.pk])
            return next((r.kpis.sent for r in rows if r.key == "lead"), 0)

    with tenant_context(winter.tenant.pk):
        assert CampaignStageStats.objects.filter(campaign_id=winter.sale.pk).count() == 5, "counted by the pass"
        Contact.objects.filter(pk=winter.contacts[2].pk).update(lifecycle_stage="first_time_buyer")
        open_(winter.deliveries[7], at(25, 12, 1))  # new figures for the sale
    refresh(winter.tenant, now=NOW + dt.timedelta(minutes=5))
    assert lead_sent() == 2, "figures changed, but the stages were counted less than 15 minutes ago"
    refresh(winter.tenant, now=NOW + STAGE_FRESH_FOR)
    assert lead_sent() == 1, "counted again once 15 minutes had passed"
    with tenant_context(winter.tenant.pk):
        Contact.objects.filter(pk=winter.contacts[1].pk).update(lifecycle_stage="loyal_advocate")
        assert StatsCursor.objects.get(tenant=winter.tenant).stages_due == []
    refresh(winter.tenant, now=NOW + STAGE_FRESH_FOR + dt.timedelta(hours=1))
    assert lead_sent() == 1, "nothing changed: counted again only when old"
    refresh(winter.tenant, now=NOW + STAGE_FRESH_FOR + STAGE_MAX_AGE)
    assert lead_sent() == 0


def test_days_are_the_tenants_and_each_first_counts_on_its_day(winter):
    with tenant_context(winter.tenant.pk):
        series = {p.day: p.kpis for p in campaign_results(campaign=winter.sale).series}
        month = {p.day: p.kpis for p in tenant_series(tenant=winter.tenant, period=JANUARY)}
    assert list(series) == [D1, D2, D3]
    assert series[D1] == figures(
        sent=8, bounced=2, opened=3, opened_any=5, clicked=2, clicks=3, engaged=4, unsubscribed=1, complained=1,
        conversions=2, revenue="50", cost="90",
    )  # fmt: skip
    assert series[D2] == figures(opened=1, engaged=1, conversions=1, revenue="100")
    assert series[D3] == figures(conversions=1, revenue="50")
    assert len(month) == 31 and month[dt.date(2026, 1, 5)] == Kpis()
    assert (month[D1].sent, month[D1].opened, month[D1].clicked) == (8, 3, 2)
    assert (month[dt.date(2026, 1, 15)].sent, month[dt.date(2026, 1, 15)].opened) == (4, 2)  # the journey
    assert (month[dt.date(2026, 1, 20)].sent, month[dt.date(2026, 1, 20)].clicked) == (3, 1)  # the SMS


def test_the_dashboard_adds_everything_up_by_channel_campaign_journey_and_segment(winter):
    with tenant_context(winter.tenant.pk):
        board = dashboard(tenant=winter.tenant, period=JANUARY, min_delivered=1)
    assert board.totals.sent == 8 + 3 + 4 and board.totals.delivered == 13
    assert (board.totals.opened, board.totals.clicked, board.totals.conversions) == (4 + 0 + 2, 2 + 1 + 1, 5)
    assert board.totals.revenue == Decimal("210.00") and board.totals.cost == Decimal("90.00")
    assert [(r.key, r.kpis.sent, r.kpis.clicked) for r in board.channels] == [("email", 12, 3), ("sms", 3, 1)]
    assert [(r.label, r.kpis.sent) for r in board.campaigns] == [("Winter sale", 8), ("SMS flash", 3)]
    assert [(r.label, r.kpis.sent, r.kpis.conversions) for r in board.journeys] == [("Welcome", 4, 1)]
    assert [(r.label, r.kpis.conversion_rate) for r in board.top_segments] == [("Segment: VIP", 0.5)]
    # Stage-targeted variants (the Leads) and the default: SMS and journey variants are default too.
    assert board.comparison.default.sent == 4 + 3 + 4 and board.comparison.targeted.sent == 4
    with tenant_context(winter.tenant.pk):
        later = dashboard(tenant=winter.tenant, period=Period(dt.date(2026, 1, 11), dt.date(2026, 1, 31)))
    assert later.totals.sent == 7, "the sale was sent on the 10th, before the period"
    assert (later.totals.opened, later.totals.conversions) == (1 + 2, 2 + 1)
    assert later.top_segments == [], "no segment has 50 delivered messages"


def test_a_journey_has_figures_per_step_key_across_versions(winter):
    with tenant_context(winter.tenant.pk):
        results = journey_results(journey=winter.welcome, shown=winter.v2)
    assert [(r.key, r.label, r.detail["versions"]) for r in results.steps] == [
        ("s1", "Email s1", [1, 2]), ("s3", "Email s3", [2])
    ]  # fmt: skip
    s1, s3 = (r.kpis for r in results.steps)
    assert s1 == figures(sent=3, opened=2, opened_any=2, clicked=1, clicks=1, engaged=2, conversions=1, revenue="10")
    assert s3 == figures(sent=1)
    assert results.totals == s1 + s3
    assert {r.key: r.kpis.sent for r in results.stages} == {"repeat_customer": 2, "new_visitor": 1, "loyal_advocate": 1}


def test_segments_side_by_side(winter):
    with tenant_context(winter.tenant.pk):
        lapsed = winter.tenant and winter.vip.__class__.objects.get(name="Lapsed")
        rows = segment_rows(tenant=winter.tenant, period=JANUARY, segment_ids=[lapsed.pk, winter.vip.pk])
    assert [(r.label, r.kpis.sent, r.kpis.conversions) for r in rows] == [
        ("Segment: Lapsed", 0, 0), ("Segment: VIP", 2, 1)
    ]  # fmt: skip


# --- keeping the figures -------------------------------------------------------------------------------
def stored(tenant) -> dict:
    with tenant_context(tenant.pk):
        rows = CampaignDayStats.objects.filter(tenant=tenant).values_list(
            "campaign_id", "variant_id", "day", *rollup.DAY_METRICS
        )
        return {row[:3]: row[3:] for row in rows if any(row[3:])}


def test_a_pass_with_nothing_new_changes_nothing_and_a_rebuild_agrees(winter):
    before = stored(winter.tenant)
    result = refresh(winter.tenant, now=NOW + dt.timedelta(minutes=10))
    assert result.finished and stored(winter.tenant) == before
    with tenant_context(winter.tenant.pk):
        stats_rebuild(tenant=winter.tenant, now=NOW)
    assert stored(winter.tenant) == before


def test_new_rows_move_the_figures_by_the_difference(winter):
    d = winter.deliveries
    with tenant_context(winter.tenant.pk):
        open_(d[2], at(21, 8))  # d2's person opens now: a human open, engaged — on the 21st
        click(d[2], at(21, 8, 1))
        open_(d[1], at(21, 9))  # d1 was opened before: nothing new but the row
        feedback(d[9], "bounce_hard", at(21, 9))
    refresh(winter.tenant, now=NOW + dt.timedelta(minutes=2))
    with tenant_context(winter.tenant.pk):
        results = campaign_results(campaign=winter.sale)
        day = {p.day: p.kpis for p in results.series}[dt.date(2026, 1, 21)]
    assert results.totals == figures(
        sent=8, bounced=3, opened=5, opened_any=5, clicked=3, clicks=4, engaged=6, unsubscribed=1, complained=1,
        conversions=4, revenue="200", cost="90",
    )  # fmt: skip
    assert day == figures(bounced=1, opened=1, clicked=1, clicks=1, engaged=1)
    after = stored(winter.tenant)
    with tenant_context(winter.tenant.pk):
        stats_rebuild(tenant=winter.tenant, now=NOW)
    assert stored(winter.tenant) == after


def test_a_row_committed_late_is_still_counted_within_the_overlap(world):
    tenant = world.tenant_a
    built = scenario.build(tenant)
    d = built.deliveries
    refresh(tenant, now=NOW)
    with tenant_context(tenant.pk):
        # A row takes its id when inserted and is seen when committed. Take ids in order, then
        # "commit" two of them after a later one was read: the first within the overlap, the other not.
        in_time, too_late = open_(d[2], at(25, 12, 1)), open_(d[5], at(25, 12, 1))
        held = [MessageEvent.objects.filter(pk=e.pk).values().get() for e in (in_time, too_late)]
        MessageEvent.objects.filter(pk__in=[in_time.pk, too_late.pk]).delete()
        open_(d[7], at(25, 12, 2))
    refresh(tenant, now=NOW + dt.timedelta(minutes=1))

    def opened() -> int:
        with tenant_context(tenant.pk):
            return campaign_results(campaign=built.sale, with_stages=False).totals.opened

    assert opened() == 4 + 1, "d7"
    with tenant_context(tenant.pk):
        MessageEvent.objects.create(**held[0])
    refresh(tenant, now=NOW + dt.timedelta(minutes=3))  # reads again from the checkpoint taken at NOW
    assert opened() == 4 + 2, "d7 and d2"
    with tenant_context(tenant.pk):
        MessageEvent.objects.create(**held[1])
    refresh(tenant, now=NOW + dt.timedelta(minutes=20))
    assert opened() == 6, "committed long after its id: only a rebuild sees it (docs/analytics.md)"
    with tenant_context(tenant.pk):
        stats_rebuild(tenant=tenant, now=NOW + dt.timedelta(minutes=21))
    assert opened() == 7


def test_runs_are_recounted_while_sending_and_settled_after(world):
    tenant = world.tenant_a
    with tenant_context(tenant.pk):
        campaign = Campaign.objects.create(tenant=tenant, name="Big send", channel="email")
        variant = Variant.objects.create(tenant=tenant, campaign=campaign, name="Everyone")
        run = run_of(campaign, at(10, 9), done=False)
        contacts = [Contact.objects.create(tenant=tenant, email=f"r{i}@example.com") for i in range(6)]
        rows = [deliver(run, c, variant, "pending") for c in contacts]
        Delivery.objects.filter(pk__in=[r.pk for r in rows[:2]]).update(status="sent", sent_at=at(10, 9, 1))
    refresh(tenant, now=at(10, 9, 2))

    def sent() -> int:
        with tenant_context(tenant.pk):
            return campaign_results(campaign=campaign, with_stages=False).totals.sent

    assert sent() == 2
    with tenant_context(tenant.pk):
        # Past midnight in UTC, still the 10th in Berlin? The tenant is UTC here: the 11th.
        Delivery.objects.filter(pk__in=[r.pk for r in rows[2:5]]).update(status="sent", sent_at=at(11, 0, 30))
        CampaignRun.objects.filter(pk=run.pk).update(status="done", finished_at=at(11, 0, 31))
    refresh(tenant, now=at(11, 0, 35))
    assert sent() == 5
    with tenant_context(tenant.pk):
        assert not RunTally.objects.get(run_id=run.pk).settled, "done only four minutes ago"
        days = dict(CampaignDayStats.objects.filter(campaign_id=campaign.pk).values_list("day", "sent"))
    assert days == {D1: 2, D2: 3}
    refresh(tenant, now=at(11, 1))
    with tenant_context(tenant.pk):
        assert RunTally.objects.get(run_id=run.pk).settled
        Delivery.objects.filter(pk=rows[5].pk).update(status="sent", sent_at=at(11, 2))  # never happens; ignored
    refresh(tenant, now=at(11, 3))
    assert sent() == 5, "a settled run is not counted again"


def test_the_sweep_finds_only_tenants_with_something_new(world):
    scenario.build(world.tenant_a)
    assert tenants_to_refresh(now=NOW) == [world.tenant_a.pk]
    refresh(world.tenant_a, now=NOW)
    assert tenants_to_refresh(now=NOW + dt.timedelta(hours=2)) == [], "nothing new since the last sweep"
    with tenant_context(world.tenant_b.pk):
        campaign = Campaign.objects.create(tenant=world.tenant_b, name="B's", channel="email")
        run_of(campaign, NOW)
    assert tenants_to_refresh(now=NOW + dt.timedelta(hours=3)) == [world.tenant_b.pk]
    assert tenants_to_refresh(now=NOW + STAGE_MAX_AGE) == [world.tenant_a.pk], "A's stages are old now"
    with tenant_context(world.tenant_a.pk):
        StatsCursor.objects.filter(tenant=world.tenant_a).update(stages_due=[1])
    assert tenants_to_refresh(now=NOW + dt.timedelta(hours=4)) == [world.tenant_a.pk], "A has stages to count"


def test_a_budget_stops_a_pass_and_the_next_call_goes_on(world, monkeypatch):
    built = scenario.build(world.tenant_a)
    monkeypatch.setattr(rollup, "EVENT_CHUNK", 3)
    first = refresh(world.tenant_a, budget_seconds=0)
    assert not first.finished
    with tenant_context(world.tenant_a.pk):
        assert StatsCursor.objects.get(tenant=world.tenant_a).pending is not None
    while not refresh(world.tenant_a, budget_seconds=0).finished:
        pass
    with tenant_context(world.tenant_a.pk):
        assert campaign_results(campaign=built.sale).totals == WINTER_TOTALS


def test_another_tenants_rows_never_count(world):
    built = scenario.build(world.tenant_a)
    other = scenario.build(world.tenant_b)
    refresh(world.tenant_a)
    with tenant_context(world.tenant_a.pk):
        assert campaign_results(campaign=built.sale).totals == WINTER_TOTALS
        assert DeliveryOutcome.objects.count() == DeliveryOutcome.all_tenants.count()
    with tenant_context(world.tenant_b.pk):
        assert campaign_results(campaign=other.sale).totals == figures(cost="90.00", revenue="200.00", conversions=4)
    refresh(world.tenant_b)
    with tenant_context(world.tenant_b.pk):
        assert campaign_results(campaign=other.sale).totals == WINTER_TOTALS


# --- generated data against a brute-force count --------------------------------------------------------
def brute_force(tenant_id: int, campaign_ids: list[int]) -> dict[int, Kpis]:
    """Per variant, straight from the raw rows, by the definitions (no rollup code)."""
    from analytics.models import Conversion
    from campaigns.models import DeliveryFeedback

    variant_of = {}
    sent: dict[int, int] = defaultdict(int)
    for pk, variant_id, status in Delivery.objects.filter(run__campaign_id__in=campaign_ids).values_list(
        "pk", "variant_id", "status"
    ):
        variant_of[pk] = variant_id
        sent[variant_id] += status == "sent"
    flags: dict[int, set[str]] = defaultdict(set)
    clicks: dict[int, int] = defaultdict(int)
    for delivery_id, kind, machine in MessageEvent.objects.filter(campaign_id__in=campaign_ids).values_list(
        "delivery_id", "kind", "machine"
    ):
        if kind == "open":
            flags[delivery_id].add("opened_any")
        if kind == "unsub":
            flags[delivery_id].add("unsubscribed")
        if machine == "" and kind in ("open", "click"):
            flags[delivery_id] |= {"engaged", "opened" if kind == "open" else "clicked"}
            clicks[delivery_id] += kind == "click"
    for delivery_id, kind in DeliveryFeedback.objects.filter(delivery_id__in=list(variant_of)).values_list(
        "delivery_id", "kind"
    ):
        meaning = {"bounce_hard": "bounced", "bounce_soft": "bounced", "complaint": "complained",
                   "unsubscribe": "unsubscribed", "inbound_stop": "unsubscribed"}  # fmt: skip
        if kind in meaning:
            flags[delivery_id].add(meaning[kind])
    out: dict[int, dict] = defaultdict(lambda: defaultdict(int))
    for variant_id, n in sent.items():
        out[variant_id]["sent"] += n
    for delivery_id, names in flags.items():
        for name in names:
            out[variant_of[delivery_id]][name] += 1
        out[variant_of[delivery_id]]["clicks"] += clicks[delivery_id]
    revenue: dict[int, Decimal] = defaultdict(Decimal)
    for variant_id, amount in Conversion.objects.filter(campaign_id__in=campaign_ids).values_list(
        "variant_id", "revenue"
    ):
        out[variant_id]["conversions"] += 1
        revenue[variant_id] += amount
    return {v: Kpis(**counts, revenue=revenue[v]) for v, counts in out.items()}


def test_generated_traffic_counted_in_many_small_passes_matches_a_brute_force_count(world, monkeypatch):
    """Random sends, opens (people and machines), clicks, bounces, complaints, unsubscribes and conversions,
    arriving over several passes with tiny chunks; then the figures equal a count from the raw rows."""
    monkeypatch.setattr(rollup, "EVENT_CHUNK", 7)
    monkeypatch.setattr(rollup, "RUN_CHUNK", 2)
    tenant = world.tenant_a
    rng = random.Random(7)
    with tenant_context(tenant.pk):
        contacts = [Contact.objects.create(tenant=tenant, email=f"g{i}@example.com") for i in range(60)]
        campaign = Campaign.objects.create(tenant=tenant, name="Generated", channel="email")
        variants = [Variant.objects.create(tenant=tenant, campaign=campaign, name=f"V{i}") for i in range(3)]
    clock = at(10, 8)
    for number in (1, 2, 3):
        with tenant_context(tenant.pk), time_machine.travel(clock, tick=False):
            run = run_of(campaign, clock, number=number, done=False)
            rows = [
                deliver(run, c, rng.choice(variants), rng.choice(["sent"] * 8 + ["skipped", "failed"]), clock)
                for c in rng.sample(contacts, 40)
            ]
            sent_rows = [r for r in rows if r.status == "sent"]
            for _ in range(120):
                d = rng.choice(sent_rows)
                when = clock + dt.timedelta(minutes=rng.randint(1, 3000))
                roll = rng.random()
                if roll < 0.4:
                    open_(d, when, rng.choice(["", "", APPLE]))
                elif roll < 0.7:
                    click(d, when, rng.choice(["", "", "", "security scanner"]))
                elif roll < 0.78:
                    feedback(d, rng.choice(["bounce_hard", "bounce_soft", "complaint", "unsubscribe"]), when)
                elif roll < 0.85:
                    scenario.unsubscribe(d, when)
                else:
                    convert(d, str(rng.randint(1, 99)), when)
            CampaignRun.objects.filter(pk=run.pk).update(status="done", finished_at=clock)
        refresh(tenant, now=clock + dt.timedelta(minutes=1))
        clock += dt.timedelta(days=3)
    refresh(tenant, now=clock)
    refresh(tenant, now=clock + dt.timedelta(hours=2))
    with tenant_context(tenant.pk):
        expected = brute_force(tenant.pk, [campaign.pk])
        got = {int(r.key): r.kpis for r in campaign_results(campaign=campaign, with_stages=False).variants}
        assert got == expected
        assert sum(expected.values(), Kpis()).opened > 10, "the generator made real traffic"
        assert RunTally.objects.filter(settled=False).count() == 0


def test_the_rebuild_command_counts_a_tenant_again(world):
    from io import StringIO

    from django.core.management import CommandError, call_command

    built = scenario.build(world.tenant_a)
    out = StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("analytics_rebuild", tenant=world.tenant_a.slug, stdout=out)
    assert f"runs for {world.tenant_a.slug}" in out.getvalue()
    with tenant_context(world.tenant_a.pk):
        assert campaign_results(campaign=built.sale).totals == WINTER_TOTALS
    with pytest.raises(CommandError, match="No tenant"):
        call_command("analytics_rebuild", tenant="nope")
