"""Benchmark: message KPIs on the 1M-contact tenant — counting the figures, and the results pages.

    .venv/bin/python bench/analytics.py                  # load (if needed), count, time the pages
    .venv/bin/python bench/analytics.py --reload         # delete this script's data and load it again
    .venv/bin/python bench/analytics.py --only pages --repeats 9
    .venv/bin/python bench/analytics.py --delete         # remove this script's data from the tenant
    .venv/bin/python bench/analytics.py --database segmentor_bench_analytics --build   # a 1M tenant of its own

1. **Load** (set-based SQL, as the sender, the pixel, the redirect and attribution would have written it)
   onto tenant ``bench-1m`` of ``segmentor_bench`` (bench/build_tenant.py), under campaigns, segments and
   a journey of its own, all named ``analytics-bench: …`` — nothing else is touched, and ``--reload``
   deletes only those. Ten campaigns over the last 90 days (three to every contact, seven to 30 % of
   them; two of them SMS), each with a variant for a segment (Germany), one for the stage *lead* and an
   A/B pair for everyone else; targeted variants open, click and convert more. Human opens (some
   twice), Apple-proxy opens, scanner clicks, human clicks (some repeated), conversions with revenue,
   bounces, complaints and unsubscribes. A journey with two send steps over two versions, each step a
   run per batch (150 runs each).
2. **Counting** (analytics/rollup.py): a rebuild (every outcome and tally from the first id), then an
   incremental pass after 20,000 new opens and clicks — in process, app role with RLS, DEBUG off.
3. **Pages** (goal < 1 s): the dashboard (30 and 90 days), a campaign's results (a 1M send, with the
   figures by lifecycle stage read live), a journey's results, segments side by side, and the campaign
   API — each through Django's full request path in process (middleware, session, RLS, template):
   server time, median and p95 of ``--repeats`` after two warm-ups.

Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as base

PREFIX = "analytics-bench: "
GOAL_SECONDS = 1.0


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    channel: str
    days_ago: int
    share: int  # percent of the tenant's contacts
    cost: int


CAMPAIGNS = (
    CampaignSpec("January newsletter", "email", 85, 100, 1500),
    CampaignSpec("Spring sale", "email", 70, 30, 800),
    CampaignSpec("Win-back", "email", 60, 30, 600),
    CampaignSpec("Flash SMS", "sms", 50, 30, 2400),
    CampaignSpec("February newsletter", "email", 45, 100, 1500),
    CampaignSpec("New arrivals", "email", 30, 30, 700),
    CampaignSpec("Loyalty points", "email", 21, 30, 500),
    CampaignSpec("Weekend SMS", "sms", 14, 30, 2100),
    CampaignSpec("March newsletter", "email", 7, 100, 1500),
    CampaignSpec("Last chance", "email", 2, 30, 900),
)
# Per variant kind: P(human open), P(click | opened), P(conversion | clicked).
RATES = {"segment": (0.30, 0.20, 0.14), "stage": (0.27, 0.18, 0.12), "default": (0.21, 0.13, 0.08)}
JOURNEY_RUNS = 150
SEGMENTS = {"Germany": "DE", "France": "FR", "Lapsed": None}


def setup(database: str | None) -> None:
    if database:
        base.use_database(database)
    os.environ.update(base.env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segmentor.settings")
    import django

    django.setup()


def migrate() -> None:
    """Apply pending migrations (they only add tables and columns; nothing of the tenant is touched)."""
    import subprocess

    subprocess.run([base.PYTHON, "manage.py", "migrate", "-v0"], cwd=base.ROOT, env=base.env(), check=True)


# --- load -----------------------------------------------------------------------------------------------
def sql(statement: str, params: Any = None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def delete_ours(tenant: Any) -> None:
    """Delete what an earlier run of this script loaded (campaigns, segments, journey named PREFIX…)."""
    from django.db import transaction

    from analytics.models import CampaignDayStats, DeliveryOutcome, RunTally, StatsCursor
    from campaigns.models import Campaign
    from journeys.models import Journey
    from segments.models import Segment

    with transaction.atomic():
        ids = list(Campaign.objects.filter(tenant=tenant, name__startswith=PREFIX).values_list("pk", flat=True))
        if ids:
            runs = "SELECT id FROM campaigns_campaignrun WHERE tenant_id = %s AND campaign_id = ANY(%s)"
            for table in ("analytics_conversion", "analytics_messageevent"):
                sql(f"DELETE FROM {table} WHERE tenant_id = %s AND campaign_id = ANY(%s)", [tenant.pk, ids])
            sql(
                "DELETE FROM campaigns_deliveryfeedback f USING campaigns_delivery d WHERE f.tenant_id = %s "
                f"AND d.id = f.delivery_id AND d.tenant_id = %s AND d.run_id IN ({runs})",
                [tenant.pk, tenant.pk, tenant.pk, ids],
            )
            sql(
                f"DELETE FROM campaigns_delivery WHERE tenant_id = %s AND run_id IN ({runs})",
                [tenant.pk, tenant.pk, ids],
            )
            for model in (DeliveryOutcome, CampaignDayStats, RunTally):
                model.objects.filter(tenant=tenant, campaign_id__in=ids).delete()
            Journey.objects.filter(tenant=tenant, name__startswith=PREFIX).delete()
            Campaign.objects.filter(pk__in=ids).delete()
        Segment.objects.filter(tenant=tenant, name__startswith=PREFIX).delete()
        StatsCursor.objects.filter(tenant=tenant).delete()


def add_events(tenant: Any, campaign: Any, variants: dict[int, str], *, email: bool) -> None:
    """Opens, clicks, conversions, unsubscribes and provider feedback for a campaign's sent deliveries."""
    rates = ", ".join(f"({pk}, {RATES[kind][0]}, {RATES[kind][1]}, {RATES[kind][2]})" for pk, kind in variants.items())
    t, c = tenant.pk, campaign.pk
    common = (
        "tenant_id, delivery_id, campaign_id, variant_id, contact_id, kind, url, is_cta, machine, user_agent, "
        "occurred_at"
    )
    sql("DROP TABLE IF EXISTS bench_sent, bench_opened, bench_clicked")
    sql(
        "CREATE TEMP TABLE bench_sent AS SELECT d.id, d.contact_id, d.variant_id, d.sent_at, r.open_p, r.click_q, "
        "r.conv_p "
        f"FROM campaigns_delivery d JOIN (VALUES {rates}) AS r(variant_id, open_p, click_q, conv_p) "
        "ON r.variant_id = d.variant_id WHERE d.tenant_id = %s AND d.status = 'sent' "
        "AND d.run_id IN (SELECT id FROM campaigns_campaignrun WHERE tenant_id = %s AND campaign_id = %s)",
        [t, t, c],
    )
    sql(
        "CREATE TEMP TABLE bench_opened AS SELECT id, contact_id, variant_id, "
        "sent_at + (random() ^ 2) * interval '72 hours' AS at, click_q, conv_p FROM bench_sent WHERE random() < open_p"
    )
    sql(
        "CREATE TEMP TABLE bench_clicked AS SELECT id, contact_id, variant_id, "
        "at + random() * interval '20 minutes' AS at, conv_p FROM bench_opened WHERE random() < click_q"
    )
    insert = f"INSERT INTO analytics_messageevent ({common}) "
    if email:
        agent = "'Mozilla/5.0 (Windows NT 10.0) Chrome/126'"
        sql(
            insert + f"SELECT %s, id, %s, variant_id, contact_id, 'open', '', false, '', {agent}, at FROM bench_opened",
            [t, c],
        )
        sql(
            insert + f"SELECT %s, id, %s, variant_id, contact_id, 'open', '', false, '', {agent}, "
            "at + random() * interval '2 days' FROM bench_opened WHERE random() < 0.4",
            [t, c],
        )
        sql(
            insert
            + "SELECT %s, id, %s, variant_id, contact_id, 'open', '', false, 'apple privacy proxy', 'Mozilla/5.0', "
            "sent_at + random() * interval '3 minutes' FROM bench_sent WHERE random() < 0.15",
            [t, c],
        )
    sql(
        insert + "SELECT %s, id, %s, variant_id, contact_id, 'click', 'https://shop.example/sale', true, '', "
        "'Mozilla/5.0 (Windows NT 10.0) Chrome/126', at FROM bench_clicked",
        [t, c],
    )
    sql(
        insert + "SELECT %s, id, %s, variant_id, contact_id, 'click', 'https://shop.example/new', false, '', "
        "'Mozilla/5.0 (Windows NT 10.0) Chrome/126', at + random() * interval '1 hour' FROM bench_clicked "
        "WHERE random() < 0.25",
        [t, c],
    )
    sql(
        insert + "SELECT %s, id, %s, variant_id, contact_id, 'click', 'https://shop.example/sale', true, "
        "'security scanner', 'Barracuda', sent_at + interval '3 seconds' FROM bench_sent WHERE random() < 0.008",
        [t, c],
    )
    sql(
        insert + "SELECT %s, id, %s, variant_id, contact_id, 'unsub', '', false, '', '', at + interval '5 minutes' "
        "FROM bench_opened WHERE random() < 0.012",
        [t, c],
    )
    sql(
        "INSERT INTO analytics_conversion (tenant_id, event_id, event_name, contact_id, delivery_id, campaign_id, "
        "variant_id, touch, touched_at, revenue, occurred_at) SELECT %s, -id, 'purchase', contact_id, id, %s, "
        "variant_id, 'click', at, round((20 + random() * 180)::numeric, 2), at + random() * interval '36 hours' "
        "FROM bench_clicked WHERE random() < conv_p",
        [t, c],
    )
    feedback = (
        "INSERT INTO campaigns_deliveryfeedback (tenant_id, delivery_id, contact_id, channel, kind, provider, "
        "provider_event_id, occurred_at, detail, payload, created_at) "
    )
    sql(
        feedback
        + "SELECT %s, id, contact_id, %s, CASE WHEN random() < 0.66 THEN 'bounce_hard' ELSE 'bounce_soft' END, "
        "'bench', 'ab-b-' || id, sent_at + interval '1 minute', '', '{}', now() FROM bench_sent WHERE random() < 0.012",
        [t, campaign.channel],
    )
    sql(
        feedback + "SELECT %s, id, contact_id, %s, 'complaint', 'bench', 'ab-c-' || id, at + interval '2 minutes', '', "
        "'{}', now() FROM bench_opened WHERE random() < 0.002",
        [t, campaign.channel],
    )
    sql("DROP TABLE bench_sent, bench_opened, bench_clicked")


def variants_for(tenant: Any, campaign: Any, segments: dict[str, Any]) -> dict[str, Any]:
    from campaigns.models import Variant

    make = Variant.objects.create
    return {
        "segment": make(tenant=tenant, campaign=campaign, name="Germany", position=0, target="segment",
                        target_segment=segments["Germany"], subject="Für dich"),
        "stage": make(tenant=tenant, campaign=campaign, name="Leads", position=1, target="stage", target_stage="lead",
                      subject="Your first order"),
        "a": make(tenant=tenant, campaign=campaign, name="A", position=2, weight=50, subject="New this week"),
        "b": make(tenant=tenant, campaign=campaign, name="B", position=3, weight=50, subject="This week's picks"),
    }  # fmt: skip


def variant_case(v: dict[str, Any]) -> str:
    return (
        f"CASE WHEN c.country = 'DE' THEN {v['segment'].pk} WHEN c.lifecycle_stage = 'lead' THEN {v['stage'].pk} "
        f"WHEN mod(c.id, 2) = 0 THEN {v['a'].pk} ELSE {v['b'].pk} END"
    )


def kinds(v: dict[str, Any]) -> dict[int, str]:
    return {v["segment"].pk: "segment", v["stage"].pk: "stage", v["a"].pk: "default", v["b"].pk: "default"}


DELIVERY_COLUMNS = (
    "tenant_id, run_id, contact_id, variant_id, status, skip_reason, attempts, sent_at, provider_message_id, error"
)


def load(tenant: Any, now: dt.datetime) -> dict[str, Any]:
    from django.db import transaction

    from campaigns.models import Campaign, CampaignRun
    from journeys.models import Journey, JourneyVersion, Step
    from segments.models import Segment

    made: dict[str, Any] = {"campaigns": []}
    segments = {
        name: Segment.objects.create(tenant=tenant, name=f"{PREFIX}{name}", kind=Segment.Kind.STATIC)
        for name in SEGMENTS
    }
    for spec in CAMPAIGNS:
        started = time.perf_counter()
        with transaction.atomic():
            at = now - dt.timedelta(days=spec.days_ago)
            campaign = Campaign.objects.create(
                tenant=tenant, name=f"{PREFIX}{spec.name}", channel=spec.channel, cost=spec.cost, status="sent"
            )
            v = variants_for(tenant, campaign, segments)
            run = CampaignRun.objects.create(
                tenant=tenant, campaign=campaign, number=1, scheduled_for=at, status="done", started_at=at,
                finished_at=at + dt.timedelta(minutes=40),
            )  # fmt: skip
            subset = "" if spec.share >= 100 else f"AND mod(c.id * 7 + {campaign.pk}, 100) < {spec.share}"
            n = sql(
                f"INSERT INTO campaigns_delivery ({DELIVERY_COLUMNS}) SELECT %s, %s, c.id, {variant_case(v)}, "
                "CASE WHEN random() < 0.03 THEN 'skipped' ELSE 'sent' END, '', 1, "
                "%s::timestamptz + random() * interval '40 minutes', '', '' FROM contacts_contact c "
                f"WHERE c.tenant_id = %s AND c.erased_at IS NULL {subset}",
                [tenant.pk, run.pk, at, tenant.pk],
            )
            sql(
                "UPDATE campaigns_delivery SET sent_at = NULL, skip_reason = 'no_consent' "
                "WHERE tenant_id = %s AND run_id = %s AND status = 'skipped'",
                [tenant.pk, run.pk],
            )
            CampaignRun.objects.filter(pk=run.pk).update(audience_size=n)
            add_events(tenant, campaign, kinds(v), email=spec.channel == "email")
        made["campaigns"].append((campaign, n))
        print(f"  {spec.name}: {n:,} deliveries in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    with transaction.atomic():
        journey = Journey.objects.create(
            tenant=tenant, name=f"{PREFIX}Welcome", trigger_event="signed_up", status="live", goal_event="purchase"
        )
        versions = [
            JourneyVersion.objects.create(tenant=tenant, journey=journey, number=n, start_key="s1", published_at=now)
            for n in (1, 2)
        ]
        steps = []
        for version, key, position, offset in (
            (versions[0], "s1", 0, 0),
            (versions[1], "s1", 0, 1),
            (versions[1], "s3", 2, 2),
        ):
            campaign = Campaign.objects.create(
                tenant=tenant, name=f"{PREFIX}Welcome {key} v{version.number}", kind="journey", channel="email"
            )
            v = variants_for(tenant, campaign, segments)
            Step.objects.create(
                tenant=tenant, version=version, key=key, kind="send", name=f"Welcome email {key}", campaign=campaign,
                position=position, config={"channel": "email"}, exits={"next": None},
            )  # fmt: skip
            sql(
                "INSERT INTO campaigns_campaignrun (tenant_id, campaign_id, number, status, scheduled_for, "
                "audience_size, started_at, finished_at) SELECT %s, %s, n, 'done', "
                "%s::timestamptz + n * interval '4 hours', 0, %s::timestamptz + n * interval '4 hours', "
                "%s::timestamptz + n * interval '4 hours' + interval '5 minutes' FROM generate_series(1, %s) AS n",
                [tenant.pk, campaign.pk, now - dt.timedelta(days=60), now - dt.timedelta(days=60),
                 now - dt.timedelta(days=60), JOURNEY_RUNS],
            )  # fmt: skip
            n = sql(
                f"INSERT INTO campaigns_delivery ({DELIVERY_COLUMNS}) SELECT %s, r.id, c.id, {variant_case(v)}, "
                "'sent', '', 1, r.scheduled_for + random() * interval '5 minutes', '', '' "
                "FROM campaigns_campaignrun r JOIN contacts_contact c ON c.tenant_id = r.tenant_id "
                "AND mod(c.id, 2000) = mod(r.number * 3 + %s, 2000) "
                "WHERE r.tenant_id = %s AND r.campaign_id = %s AND c.erased_at IS NULL",
                [tenant.pk, offset, tenant.pk, campaign.pk],
            )
            add_events(tenant, campaign, kinds(v), email=True)
            steps.append((campaign, n))
        Step.objects.create(
            tenant=tenant, version=versions[1], key="s2", kind="wait", position=1, exits={"next": "s3"},
            config={"duration": {"amount": 2, "unit": "days"}},
        )  # fmt: skip
        Journey.objects.filter(pk=journey.pk).update(live_version=versions[1])
    made["journey"], made["journey_steps"] = journey, steps
    print(f"  journey: {sum(n for _, n in steps):,} deliveries in {JOURNEY_RUNS * 3} runs, "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    return made


def analyze() -> None:
    from django.db import connection

    tables = (
        "campaigns_delivery", "campaigns_campaignrun", "campaigns_deliveryfeedback", "analytics_messageevent",
        "analytics_conversion", "analytics_deliveryoutcome", "analytics_campaigndaystats", "analytics_runtally",
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) " + ", ".join(tables))


def volumes(tenant: Any) -> dict[str, int]:
    from django.db import connection

    out = {}
    with connection.cursor() as cursor:
        for label, table in (
            ("deliveries", "campaigns_delivery"), ("message events", "analytics_messageevent"),
            ("conversions", "analytics_conversion"), ("feedback", "campaigns_deliveryfeedback"),
            ("runs", "campaigns_campaignrun"), ("outcomes", "analytics_deliveryoutcome"),
            ("daily figures", "analytics_campaigndaystats"), ("run tallies", "analytics_runtally"),
        ):  # fmt: skip
            cursor.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", [tenant.pk])
            out[label] = cursor.fetchone()[0]
    return out


# --- counting -------------------------------------------------------------------------------------------
def count_all(tenant: Any) -> dict[str, float]:
    from analytics.models import MessageEvent
    from analytics.rollup import OVERLAP, stage_stats_count, stats_rebuild, stats_refresh
    from campaigns.models import Campaign

    started = time.perf_counter()
    result = stats_rebuild(tenant=tenant)
    rebuild = time.perf_counter() - started
    events = MessageEvent.objects.filter(tenant=tenant).count()
    big = Campaign.objects.get(tenant=tenant, name=f"{PREFIX}March newsletter")
    started = time.perf_counter()
    stage_stats_count(tenant=tenant, campaign_id=big.pk)
    stages = time.perf_counter() - started
    # New traffic: 20,000 opens and clicks on the newest campaign, then one incremental pass.
    sql(
        "INSERT INTO analytics_messageevent (tenant_id, delivery_id, campaign_id, variant_id, contact_id, kind, url, "
        "is_cta, machine, user_agent, occurred_at) SELECT d.tenant_id, d.id, r.campaign_id, d.variant_id, "
        "d.contact_id, CASE WHEN random() < 0.8 THEN 'open' ELSE 'click' END, '', false, '', 'Mozilla/5.0 Chrome', "
        "now() FROM campaigns_delivery d JOIN campaigns_campaignrun r ON r.id = d.run_id AND r.tenant_id = d.tenant_id "
        "WHERE d.tenant_id = %s AND r.campaign_id = (SELECT max(id) FROM campaigns_campaign WHERE tenant_id = %s "
        "AND kind = 'campaign') AND d.status = 'sent' ORDER BY random() LIMIT 20000",
        [tenant.pk, tenant.pk],
    )
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    stats_refresh(tenant=tenant, now=now)
    incremental = time.perf_counter() - started
    # The next pass, once the overlap has gone by, with nothing new (what most minutes look like).
    started = time.perf_counter()
    stats_refresh(tenant=tenant, now=now + max(OVERLAP["event"], OVERLAP["feedback"]) + dt.timedelta(minutes=1))
    idle = time.perf_counter() - started
    return {
        "rebuild_s": rebuild, "events": events, "deliveries_counted": result.deliveries, "runs": result.runs,
        "stages_s": stages, "incremental_s": incremental, "idle_s": idle,
    }  # fmt: skip


# --- pages ----------------------------------------------------------------------------------------------
def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def time_pages(tenant: Any, repeats: int) -> list[tuple[str, float, float, int]]:
    from django.test import Client
    from rest_framework.test import APIClient

    from analytics.models import CampaignDayStats
    from campaigns.models import Campaign
    from journeys.models import Journey
    from segments.models import Segment
    from tenants.models import ApiKey, Membership
    from tenants.services import api_key_create

    owner = Membership.objects.filter(tenant=tenant).order_by("pk").first()
    assert owner is not None, "the bench tenant has its owner's membership"
    client = Client(HTTP_HOST="localhost")
    client.force_login(owner.user)
    key = ApiKey.objects.filter(tenant=tenant, name=f"{PREFIX}read").first()
    if key is not None:
        key.delete()
    _, secret = api_key_create(tenant=tenant, name=f"{PREFIX}read", scope=ApiKey.Scope.READ, acting=owner)
    api = APIClient(HTTP_HOST="localhost")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    big = Campaign.objects.filter(tenant=tenant, name=f"{PREFIX}March newsletter").first()
    small = Campaign.objects.filter(tenant=tenant, name=f"{PREFIX}Last chance").first()
    journey = Journey.objects.filter(tenant=tenant, name=f"{PREFIX}Welcome").first()
    segments = list(Segment.objects.filter(tenant=tenant, name__startswith=PREFIX).values_list("pk", flat=True))
    assert big and small and journey and CampaignDayStats.objects.filter(tenant=tenant).exists()
    t = f"/t/{tenant.slug}/analytics/"
    pages: list[tuple[str, Callable[[], Any]]] = [
        ("dashboard, last 30 days", lambda: client.get(t)),
        ("dashboard, last 90 days", lambda: client.get(t + "?days=90")),
        (f"campaign results, {big.name.removeprefix(PREFIX)} (1M sent)", lambda: client.get(f"{t}campaigns/{big.pk}/")),
        (f"campaign results, {small.name.removeprefix(PREFIX)} (300k sent)",
         lambda: client.get(f"{t}campaigns/{small.pk}/")),
        ("journey results (3 step campaigns, 450 runs)", lambda: client.get(f"{t}journeys/{journey.pk}/")),
        ("segments side by side, 90 days", lambda: client.get(
            f"{t}segments/?days=90&" + "&".join(f"segment={pk}" for pk in segments))),
        ("API: campaign KPIs (1M sent)", lambda: api.get(f"/api/v1/analytics/campaigns/{big.pk}/")),
        ("API: campaign KPIs without stages", lambda: api.get(f"/api/v1/analytics/campaigns/{big.pk}/?stages=false")),
        ("API: summary, 90 days", lambda: api.get("/api/v1/analytics/summary/?days=90")),
        ("CSV: campaign stages (1M sent)", lambda: client.get(f"{t}campaigns/{big.pk}/export.csv?table=stages")),
    ]  # fmt: skip
    rows = []
    for label, call in pages:
        times = []
        for attempt in range(repeats + 2):
            started = time.perf_counter()
            response = call()
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, (label, response.status_code)
            if attempt >= 2:
                times.append(elapsed)
        rows.append((label, statistics.median(times), percentile(times, 95), len(response.content)))
        print(f"  {label}: {statistics.median(times) * 1000:.0f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slug", default="bench-1m")
    parser.add_argument("--database", help=f"Another database than {base.DB_NAME} (with --build to make its tenant).")
    parser.add_argument("--build", action="store_true", help="Build the 1M tenant first (bench/build_tenant.py).")
    parser.add_argument("--reload", action="store_true", help="Delete this script's data and load it again.")
    parser.add_argument("--delete", action="store_true", help="Delete this script's data and stop.")
    parser.add_argument("--only", choices=("count", "pages"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.build:  # a 1M tenant in a database of this script's own, as bench/build_tenant.py builds it
        import subprocess

        name = args.database or base.DB_NAME
        code = (
            f"import sys; sys.path.insert(0, '.'); from bench import run; run.use_database({name!r}); "
            f"import bench.build_tenant as b; b.DB_NAME = {name!r}; "
            f"sys.argv = ['build_tenant', '--slug', {args.slug!r}]; b.main()"
        )
        subprocess.run([base.PYTHON, "-c", code], cwd=base.ROOT, check=True)
    setup(args.database)
    migrate()
    from analytics.models import StatsCursor
    from campaigns.models import Campaign
    from tenants.context import tenant_context
    from tenants.models import Tenant

    tenant = Tenant.objects.filter(slug=args.slug).first()
    if tenant is None:
        sys.exit(f"No tenant {args.slug!r} in {base.DB_NAME}: build it with bench/build_tenant.py (or --build).")
    if args.delete:
        with tenant_context(tenant.pk):
            delete_ours(tenant)
        print(f"Deleted the {PREFIX}… campaigns, segments and journey and their figures.")
        return
    load_before = os.getloadavg()
    now = dt.datetime.now(dt.UTC)
    load_seconds = None
    with tenant_context(tenant.pk):
        have = Campaign.objects.filter(tenant=tenant, name__startswith=PREFIX).exists()
        if args.reload or not have:
            print("Loading…", flush=True)
            delete_ours(tenant)
            started = time.perf_counter()
            load(tenant, now)
            load_seconds = time.perf_counter() - started
        never_counted = not StatsCursor.objects.filter(tenant=tenant, refreshed_at__isnull=False).exists()
    counting = None
    if args.only == "count" or (args.only is None and (load_seconds is not None or never_counted)):
        analyze()  # outside the tenant's scope: VACUUM cannot run in the transaction a scoped query gets
        print("Counting…", flush=True)
        with tenant_context(tenant.pk):
            counting = count_all(tenant)
        analyze()
    with tenant_context(tenant.pk):
        sizes = volumes(tenant)
        pages = time_pages(tenant, args.repeats) if args.only in (None, "pages") else []
    load_after = os.getloadavg()

    print(f"\n#### Message KPIs · {time.strftime('%Y-%m-%d %H:%M')} UTC · {platform.node()} · {os.cpu_count()} cores")
    print(
        f"Tenant `{tenant.slug}` in `{base.DB_NAME}`; this script's data only (`{PREFIX}…`): "
        + ", ".join(f"{v:,} {k}" for k, v in sizes.items())
        + f". In process, app role with RLS, DEBUG off. Load average (1/5/15 min) before "
        f"{' / '.join(f'{x:.2f}' for x in load_before)}, after {' / '.join(f'{x:.2f}' for x in load_after)}."
    )
    if load_seconds is not None:
        print(f"\nLoaded in {load_seconds:.0f} s (set-based SQL).")
    if counting:
        rate = counting["events"] / counting["rebuild_s"]
        print(
            f"\n| counting | seconds | |\n|---|---:|---|\n"
            f"| rebuild: every outcome, run tally and campaign by stage from the first id | "
            f"{counting['rebuild_s']:.1f} | {counting['events']:,.0f} message events, {rate:,.0f} events/s |\n"
            f"| one 1M-message campaign counted by lifecycle stage | {counting['stages_s']:.2f} | |\n"
            f"| incremental pass after 20,000 new opens and clicks | {counting['incremental_s']:.2f} | |\n"
            f"| the next pass, nothing new | {counting['idle_s']:.3f} | |"
        )
    if pages:
        print(
            f"\n| page (goal < {GOAL_SECONDS:.0f} s) | median ms | p95 ms | bytes | < 1 s |\n|---|---:|---:|---:|:---:|"
        )
        for label, median, p95, size in pages:
            met = "yes" if median < GOAL_SECONDS else "**no**"
            print(f"| {label} | {median * 1000:.0f} | {p95 * 1000:.0f} | {size:,} | {met} |")


if __name__ == "__main__":
    main()
