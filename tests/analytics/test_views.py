"""The results pages: the figures on screen, charts, CSV downloads, who may see what, and query counts."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from analytics.rollup import stats_refresh
from campaigns.models import Campaign, Variant
from segments.models import Segment
from tenants.context import tenant_context
from tests.analytics import scenario
from tests.analytics.scenario import NOW, deliver, run_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def winter(world):
    built = scenario.build(world.tenant_a)
    with tenant_context(world.tenant_a.pk):
        stats_refresh(tenant=world.tenant_a, now=NOW)
    with time_machine.travel(NOW, tick=False):
        yield built


def url(name: str, tenant, **kwargs) -> str:
    return reverse(f"analytics:{name}", kwargs={"tenant_slug": tenant.slug, **kwargs})


def text_of(html: str, name: str) -> str:
    match = re.search(rf'data-testid="{name}"[^>]*>([^<]*)<', html)
    assert match, f"no {name}"
    return match.group(1).strip()


def chart(html: str, chart_id: str) -> dict:
    match = re.search(rf'<script id="{chart_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no chart data {chart_id}"
    assert f'<canvas data-chart="{chart_id}"' in html
    return json.loads(match.group(1))


def download(client: Client, world, name: str, table: str, **kwargs) -> list[list[str]]:
    return csv_rows(client.get(url(name, world.tenant_a, **kwargs) + f"?table={table}"))


def csv_rows(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="')
    text = response.content.decode()
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


JANUARY = "start=2026-01-01&end=2026-01-31"


# --- the dashboard ---------------------------------------------------------------------------------------
def test_the_dashboard_shows_tiles_charts_and_tables(winter, world, alice_client: Client):
    from analytics.value import value_snapshot_forget

    value_snapshot_forget(tenant_id=world.tenant_a.pk)  # the test cache is Redis, shared between runs
    response = alice_client.get(url("home", world.tenant_a) + "?" + JANUARY)
    assert response.status_code == 200
    html = response.content.decode()
    assert text_of(html, "kpi-sent") == "15" and text_of(html, "kpi-delivered") == "13"
    assert text_of(html, "kpi-conversions") == "5" and text_of(html, "kpi-revenue") == "210.00"
    assert text_of(html, "kpi-cpc") == "18.00"  # 90 / 5
    assert text_of(html, "kpi-open-rate") == "46.2%"  # 6 / 13
    messages = chart(html, "chart-messages")
    assert messages["type"] == "bar" and len(messages["data"]["labels"]) == 31
    assert messages["data"]["datasets"][0]["data"][9] == 8, "sent on January 10th"
    engagement = chart(html, "chart-engagement")
    assert [d["label"] for d in engagement["data"]["datasets"]][:2] == ["Opened (people)", "Clicked (people)"]
    assert engagement["data"]["datasets"][0]["data"][9:11] == [3, 1]
    conversions = chart(html, "chart-conversions")
    assert conversions["data"]["datasets"][1]["data"][10] == 100.0
    chart(html, "chart-targeting")
    assert 'data-testid="channels-table"' in html and ">SMS flash</a>" in html and ">Welcome</a>" in html
    assert url("campaign", world.tenant_a, campaign_id=winter.sale.pk) in html
    assert url("journey", world.tenant_a, journey_id=winter.welcome.pk) in html
    # Customer-value figures not cached yet: a worker's job (the cache is shared), never this request's.
    assert 'data-testid="value-summary-pending"' in html
    assert "Figures as of" in html
    assert ">Analytics</a>" in html and 'aria-current="page">Analytics' in html


def test_a_wrong_period_is_said_and_the_last_30_days_shown(winter, world, alice_client: Client):
    response = alice_client.get(url("home", world.tenant_a) + "?start=2026-01-31&end=2026-01-01")
    assert response.status_code == 200
    assert "The end comes before the start." in block_of(response.content.decode(), "period-errors")
    assert "2025-12-27 to 2026-01-25" in response.content.decode()
    response = alice_client.get(url("home", world.tenant_a) + "?days=12&start=junk")
    assert response.status_code == 200 and 'data-testid="period-errors"' in response.content.decode()


def block_of(html: str, name: str) -> str:
    start = html.index(f'data-testid="{name}"')
    return html[start : html.index("</div>", start)]


def test_every_dashboard_table_downloads_as_csv(winter, world, alice_client: Client):
    base = url("home_csv", world.tenant_a) + "?" + JANUARY + "&table="
    series = csv_rows(alice_client.get(base + "series"))
    assert series[0][:4] == ["day", "sent", "delivered", "bounced"] and len(series) == 32
    assert series[10][:5] == ["2026-01-10", "8", "6", "2", "0.250000"]
    channels = csv_rows(alice_client.get(base + "channels"))
    assert [r[:3] for r in channels[1:]] == [["email", "Email", "12"], ["sms", "SMS", "3"]]
    campaigns = csv_rows(alice_client.get(base + "campaigns"))
    header = campaigns[0]
    sale = dict(zip(header, campaigns[1], strict=True))
    assert (sale["name"], sale["sent"], sale["conversions"], sale["revenue"]) == ("Winter sale", "8", "4", "200.00")
    assert (sale["ctr"], sale["cost_per_conversion"]) == ("0.333333", "22.50")
    assert csv_rows(alice_client.get(base + "journeys"))[1][1] == "Welcome"
    targeting = csv_rows(alice_client.get(base + "targeting"))
    assert targeting[0][-2:] == ["conversion_rate_low_95", "conversion_rate_high_95"]
    assert [r[0] for r in targeting[1:]] == ["segment", "stage", "targeted", "default"]
    assert csv_rows(alice_client.get(base + "segments"))[1:] == [], "VIP has 2 delivered, fewer than 50"
    bad = alice_client.get(base + "nope")
    assert bad.status_code == 400 and b"table: choose one of" in bad.content


def test_names_cannot_become_spreadsheet_formulas(winter, world, alice_client: Client):
    with tenant_context(world.tenant_a.pk):
        Segment.objects.filter(pk=winter.vip.pk).update(name='=HYPERLINK("https://evil.example","x")')
        Campaign.objects.filter(pk=winter.sale.pk).update(name="@SUM(1+1)")
    rows = csv_rows(
        alice_client.get(url("campaign_csv", world.tenant_a, campaign_id=winter.sale.pk) + "?table=segments")
    )
    assert rows[1][1] == 'Segment: =HYPERLINK("https://evil.example","x")', "a label, not a formula"
    totals = csv_rows(
        alice_client.get(url("campaign_csv", world.tenant_a, campaign_id=winter.sale.pk) + "?table=totals")
    )
    assert totals[1][1] == "'@SUM(1+1)"
    compared = csv_rows(
        alice_client.get(url("segments_csv", world.tenant_a) + f"?table=compared&segment={winter.vip.pk}&{JANUARY}")
    )
    assert compared[1][1].startswith("Segment: =HYPERLINK")
    with tenant_context(world.tenant_a.pk):
        Segment.objects.filter(pk=winter.vip.pk).update(name="+cmd")
        Variant.objects.filter(pk=winter.variants["a"].pk).update(name="-2+3")
    variants = csv_rows(
        alice_client.get(url("campaign_csv", world.tenant_a, campaign_id=winter.sale.pk) + "?table=variants")
    )
    assert [r[1] for r in variants[1:]] == ["VIP", "Leads", "'-2+3", "B"]


# --- a campaign --------------------------------------------------------------------------------------------
def test_a_campaigns_results_page(winter, world, alice_client: Client):
    response = alice_client.get(url("campaign", world.tenant_a, campaign_id=winter.sale.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert text_of(html, "kpi-sent") == "8" and text_of(html, "kpi-delivered") == "6"
    assert text_of(html, "kpi-ctor") == "50.0%" and text_of(html, "kpi-cpc") == "22.50"
    assert text_of(html, "kpi-open-rate-any") == "83.3%"
    assert text_of(html, "conversion-lift") == "+50.0%"
    variants = chart(html, "chart-variants")
    assert variants["data"]["labels"] == ["VIP", "Leads", "A", "B"]
    assert variants["data"]["datasets"][2]["data"] == [50.0, 100.0, 0.0, 100.0], "conversion rates in %"
    assert chart(html, "chart-engagement")["data"]["labels"] == ["2026-01-10", "2026-01-11", "2026-01-12"]
    assert chart(html, "chart-stages")["data"]["labels"][0] == "New visitor"
    chart(html, "chart-targeting")
    assert "Segment: VIP" in html and "Stage: Lead" in html and "Default (everyone else)" in html
    for table in ("variants", "segments", "stages", "targeting", "series"):
        assert f'data-testid="{table}-csv"' in html
    stages = csv_rows(
        alice_client.get(url("campaign_csv", world.tenant_a, campaign_id=winter.sale.pk) + "?table=stages")
    )
    assert [(r[0], r[2]) for r in stages[1:]] == [
        ("new_visitor", "1"), ("lead", "2"), ("first_time_buyer", "2"), ("repeat_customer", "2"),
        ("loyal_advocate", "1"),
    ]  # fmt: skip


def test_the_campaign_and_journey_pages_link_to_their_results(winter, world, alice_client: Client, bob_client: Client):
    for client in (alice_client, bob_client):
        page = reverse("campaigns:detail", kwargs={"tenant_slug": world.tenant_a.slug, "campaign_id": winter.sale.pk})
        detail = client.get(page).content.decode()
        assert url("campaign", world.tenant_a, campaign_id=winter.sale.pk) in detail
    journey = alice_client.get(
        reverse("journeys:detail", kwargs={"tenant_slug": world.tenant_a.slug, "journey_id": winter.welcome.pk})
    ).content.decode()
    assert url("journey", world.tenant_a, journey_id=winter.welcome.pk) in journey


def test_a_journey_steps_campaign_has_no_campaign_results_page(winter, world, alice_client: Client):
    step_campaign = winter.journey_campaigns["j1"]
    assert alice_client.get(url("campaign", world.tenant_a, campaign_id=step_campaign.pk)).status_code == 404


def test_a_journeys_results_page(winter, world, alice_client: Client):
    response = alice_client.get(url("journey", world.tenant_a, journey_id=winter.welcome.pk))
    assert response.status_code == 200
    html = response.content.decode()
    steps = chart(html, "chart-steps")
    assert steps["data"]["labels"] == ["Email s1", "Email s3"]
    assert text_of(html, "kpi-sent") == "4" and text_of(html, "kpi-conversions") == "1"
    rows = download(alice_client, world, "journey_csv", "steps", journey_id=winter.welcome.pk)
    assert [(r[0], r[2], r[3]) for r in rows[1:]] == [("s1", "1 2", "3"), ("s3", "2", "1")]
    stages = csv_rows(
        alice_client.get(url("journey_csv", world.tenant_a, journey_id=winter.welcome.pk) + "?table=stages")
    )
    assert len(stages) == 4


# --- segments side by side ----------------------------------------------------------------------------------
def test_segments_side_by_side(winter, world, alice_client: Client):
    with tenant_context(world.tenant_a.pk):
        lapsed = Segment.objects.get(name="Lapsed")
    response = alice_client.get(
        url("segments", world.tenant_a) + f"?segment={winter.vip.pk}&segment={lapsed.pk}&{JANUARY}"
    )
    assert response.status_code == 200
    html = response.content.decode()
    compare = chart(html, "chart-compare")
    assert compare["data"]["labels"] == ["Segment: Lapsed", "Segment: VIP", "Default variants (generic)"], "by name"
    # Conversion rates: VIP 1 of 2; Lapsed had no messages; every default variant 2 of 9 delivered.
    assert compare["data"]["datasets"][2]["data"] == [None, 50.0, 22.22]
    table = table_of(html, "compared-table")
    assert table.count("<tr>") == 1 + 23
    rows = csv_rows(
        alice_client.get(url("segments_csv", world.tenant_a) + f"?table=compared&segment={winter.vip.pk}&{JANUARY}")
    )
    assert [(r[1], r[2]) for r in rows[1:]] == [("Segment: VIP", "2"), ("Default variants (generic)", "11")]
    hint = alice_client.get(url("segments", world.tenant_a)).content.decode()
    assert 'data-testid="pick-hint"' in hint


def table_of(html: str, name: str) -> str:
    start = html.index(f'data-testid="{name}"')
    return html[start : html.index("</table>", start)]


def test_a_segment_of_another_tenant_or_too_many_is_a_form_error(winter, world, alice_client: Client):
    with tenant_context(world.tenant_b.pk):
        theirs = Segment.objects.create(tenant=world.tenant_b, name="Theirs", kind="static")
    response = alice_client.get(url("segments", world.tenant_a) + f"?segment={theirs.pk}")
    assert response.status_code == 200 and 'data-testid="segment-error"' in response.content.decode()
    assert "Theirs" not in response.content.decode()
    with tenant_context(world.tenant_a.pk):
        many = [Segment.objects.create(tenant=world.tenant_a, name=f"S{i}", kind="static").pk for i in range(9)]
    response = alice_client.get(url("segments", world.tenant_a) + "?" + "&".join(f"segment={pk}" for pk in many))
    assert "Compare at most 8 segments at a time." in response.content.decode()
    assert alice_client.get(url("segments", world.tenant_a) + "?segment=abc").status_code == 200


# --- who may see what -------------------------------------------------------------------------------------------
def pages(world, winter) -> list[str]:
    a = world.tenant_a
    campaign, journey = {"campaign_id": winter.sale.pk}, {"journey_id": winter.welcome.pk}
    return [
        url("home", a), url("home_csv", a) + "?table=series",
        url("campaign", a, **campaign), url("campaign_csv", a, **campaign) + "?table=variants",
        url("journey", a, **journey), url("journey_csv", a, **journey) + "?table=steps",
        url("segments", a) + f"?segment={winter.vip.pk}", url("segments_csv", a) + "?table=all",
    ]  # fmt: skip


def test_a_viewer_reads_every_page_and_nothing_is_written(winter, world, bob_client: Client):
    for page in pages(world, winter):
        assert bob_client.get(page).status_code == 200, page
        assert bob_client.post(page).status_code == 403, page


def test_another_tenant_sees_nothing(winter, world, charlie_client: Client):
    for page in pages(world, winter):
        assert charlie_client.get(page).status_code == 404, page
    b = world.tenant_b
    for name, kwargs in (
        ("campaign", {"campaign_id": winter.sale.pk}), ("campaign_csv", {"campaign_id": winter.sale.pk}),
        ("journey", {"journey_id": winter.welcome.pk}), ("journey_csv", {"journey_id": winter.welcome.pk}),
    ):  # fmt: skip
        assert charlie_client.get(url(name, b, **kwargs) + "?table=steps").status_code == 404
    board = charlie_client.get(url("home", b) + "?" + JANUARY).content.decode()
    assert text_of(board, "kpi-sent") == "0" and "Winter sale" not in board


# --- query counts ---------------------------------------------------------------------------------------------------
def test_queries_stay_few_and_do_not_grow_with_campaigns(
    winter, world, alice_client: Client, django_assert_max_num_queries
):
    def counts() -> list[int]:
        out = []
        for page in pages(world, winter):
            with CaptureQueriesContext(connection) as captured:
                assert alice_client.get(page).status_code == 200
            out.append(len(captured))
        return out

    counts()  # the first request of a session does more (its session row)
    before = counts()
    assert max(before) <= 20, before
    with tenant_context(world.tenant_a.pk):
        for n in range(5):
            campaign = Campaign.objects.create(tenant=world.tenant_a, name=f"More {n}", channel="email", cost=5)
            variant = Variant.objects.create(tenant=world.tenant_a, campaign=campaign, name="All")
            run = run_of(campaign, NOW)
            deliver(run, winter.contacts[1], variant)
        stats_refresh(tenant=world.tenant_a, now=NOW)
    assert counts() == before


def test_the_dashboard_shows_customer_value_once_a_worker_computed_it(
    winter, world, alice_client: Client, monkeypatch, django_capture_on_commit_callbacks
):
    from analytics import tasks
    from analytics.value import value_snapshot_forget

    value_snapshot_forget(tenant_id=world.tenant_a.pk)
    queued: list[int] = []
    monkeypatch.setattr(tasks.value_refresh, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        first = alice_client.get(url("home", world.tenant_a)).content.decode()
    assert 'data-testid="value-summary-pending"' in first and queued == [world.tenant_a.pk]
    tasks.value_refresh(world.tenant_a.pk)  # the worker
    second = alice_client.get(url("home", world.tenant_a)).content.decode()
    assert 'data-testid="value-summary"' in second and 'data-chart="value-summary-funnel-chart"' in second
    value_snapshot_forget(tenant_id=world.tenant_a.pk)
