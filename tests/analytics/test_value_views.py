"""The customer value page, its CSV downloads, the dashboard summary and the API: who sees what, and the figures."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
import time_machine
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from analytics.value import value_snapshot_forget, value_summary
from segments.models import Segment
from tenants.context import tenant_context
from tests.analytics.value_data import AT, Shop, build_other, build_shop
from tests.conftest import World, api_client

pytestmark = pytest.mark.django_db
CSV_ROUTES = ("value_funnel_csv", "value_flow_csv", "value_clv_stage_csv", "value_clv_segment_csv")


@pytest.fixture
def shop(world: World) -> Iterator[Shop]:
    """The hand-computed shop in tenant A (another shop in B), seen at AT."""
    built = build_shop(world.tenant_a)
    build_other(world.tenant_b)
    with time_machine.travel(AT, tick=False):
        yield built
    value_snapshot_forget(tenant_id=world.tenant_a.pk)
    value_snapshot_forget(tenant_id=world.tenant_b.pk)


def page_url(world: World, name: str = "value") -> str:
    return reverse(f"analytics:{name}", kwargs={"tenant_slug": world.tenant_a.slug})


def csv_rows(response) -> list[list[str]]:
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment; filename=")
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


# --- the page ------------------------------------------------------------------------------------------
def test_the_owner_sees_funnel_flows_and_value_with_charts(shop, world, alice_client: Client):
    response = alice_client.get(page_url(world))
    assert response.status_code == 200
    html = response.content.decode()
    for chart in ("value-funnel-chart", "value-flow-chart", "value-clv-stage-chart", "value-clv-segment-chart"):
        assert f'<script id="{chart}" type="application/json">' in html
        assert f'<canvas data-chart="{chart}"' in html
    assert 'data-testid="total-contacts">12<' in html
    assert 'data-testid="total-revenue">950.00<' in html
    assert 'data-testid="total-predicted-clv">510.56<' in html
    assert 'data-testid="lifespan">3.0 years<' in html
    assert ">515.34<" in html and ">900.00<" in html and ">525.00<" in html  # CLV of stages and of VIPs
    assert f'href="/t/{world.tenant_a.slug}/segments/{shop.vips.pk}/">VIPs</a>' in html
    assert "=Empty" in html
    assert "Tenant B secret segment" not in html and "99999" not in html
    assert "Lead → First-time buyer" in html  # a flow column
    assert "average order value × purchases per buyer per year × expected lifespan in years" in html


def test_the_range_changes_the_flows(shop, world, alice_client: Client):
    days = alice_client.get(page_url(world), {"range": "30d"}).content.decode()
    assert "Last 30 days, by day" in days and 'datetime="2026-05-19"' in days and 'datetime="2026-06-17"' in days
    weeks = alice_client.get(page_url(world), {"range": "52w"}).content.decode()
    assert 'datetime="2025-06-23"' in weeks and 'datetime="2026-06-15"' in weeks


def test_a_bad_range_is_a_form_error_and_the_default_is_shown(shop, world, alice_client: Client):
    response = alice_client.get(page_url(world), {"range": "1000y"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="range-error"' in html and "not one of the available choices" in html
    assert 'datetime="2026-03-30"' in html  # the default twelve weeks
    assert alice_client.get(page_url(world, "value_flow_csv"), {"range": "1000y"}).status_code == 400


def test_a_workspace_without_segments_or_flows(world, alice_client: Client):
    try:
        html = alice_client.get(page_url(world)).content.decode()
    finally:
        value_snapshot_forget(tenant_id=world.tenant_a.pk)
    assert 'data-testid="no-segments"' in html and 'data-testid="no-flows"' in html
    assert 'data-testid="total-contacts">0<' in html


def test_the_viewer_reads_the_page_and_downloads_the_tables(shop, world, bob_client: Client):
    assert bob_client.get(page_url(world)).status_code == 200
    for name in CSV_ROUTES:
        assert bob_client.get(page_url(world, name)).status_code == 200, name


def test_writes_are_refused(shop, world, alice_client: Client, bob_client: Client):
    for name in ("value", *CSV_ROUTES):
        assert bob_client.post(page_url(world, name)).status_code == 403, name
        assert alice_client.post(page_url(world, name)).status_code == 405, name


def test_another_tenant_gets_404_and_sees_only_its_own(shop, world, charlie_client: Client):
    for name in ("value", *CSV_ROUTES):
        assert charlie_client.get(page_url(world, name)).status_code == 404, name
    own = charlie_client.get(reverse("analytics:value", kwargs={"tenant_slug": world.tenant_b.slug}))
    assert own.status_code == 200
    html = own.content.decode()
    assert "Tenant B secret segment" in html and "VIPs" not in html
    assert 'data-testid="total-contacts">1<' in html


def test_queries_are_few_and_do_not_grow_with_segments(
    shop, world, alice_client: Client, django_assert_max_num_queries
):
    # 9 around every page (session, user, tenant, membership twice, savepoints, the session's update);
    # the snapshot: JIT off and back, stages, segment members, segments, flows; then the segment names.
    with django_assert_max_num_queries(17):
        assert alice_client.get(page_url(world)).status_code == 200
    with django_assert_max_num_queries(10):  # the snapshot from the cache: only the segment names
        assert alice_client.get(page_url(world)).status_code == 200
    with tenant_context(world.tenant_a.pk):
        Segment.objects.bulk_create(Segment(tenant=world.tenant_a, name=f"Extra {n}") for n in range(25))
    value_snapshot_forget(tenant_id=world.tenant_a.pk)
    with django_assert_max_num_queries(17):
        html = alice_client.get(page_url(world)).content.decode()
    assert "Extra 24" in html


# --- CSV ---------------------------------------------------------------------------------------------------
def test_clv_by_stage_as_csv(shop, world, alice_client: Client):
    rows = csv_rows(alice_client.get(page_url(world, "value_clv_stage_csv")))
    assert rows[0] == [
        "stage", "stage_label", "contacts", "buyers", "buyer_share", "orders", "revenue", "revenue_per_contact",
        "revenue_per_buyer", "average_order_value", "purchases_per_buyer_per_year", "predicted_clv_per_buyer",
    ]  # fmt: skip
    assert rows[1] == ["new_visitor", "New visitor", "4", "0", "0.0", "0", "0.00", "0.00", "", "", "", ""]
    assert rows[3] == [
        "first_time_buyer", "First-time buyer", "2", "2", "1.0", "2", "100.00", "50.00", "50.00", "50.00", "3.44",
        "515.34",
    ]  # fmt: skip
    assert rows[-1] == [
        "all", "All contacts", "12", "5", "0.4167", "13", "950.00", "79.17", "190.00", "73.08", "2.33", "510.56",
    ]  # fmt: skip
    assert len(rows) == 7


def test_clv_by_segment_as_csv_is_safe_to_open_in_a_spreadsheet(shop, world, alice_client: Client):
    rows = csv_rows(alice_client.get(page_url(world, "value_clv_segment_csv")))
    assert rows[0][:2] == ["segment_id", "segment"]
    assert rows[1] == [
        str(shop.vips.pk), "VIPs", "3", "2", "0.6667", "8", "700.00", "233.33", "350.00", "87.50", "2.00", "525.00",
    ]  # fmt: skip
    # A name a spreadsheet would run as a formula is quoted with an apostrophe.
    assert rows[2][:3] == [str(shop.empty.pk), "'=Empty", "0"]
    assert rows[3][:3] == ["all", "All contacts", "12"]


def test_funnel_and_flows_as_csv(shop, world, alice_client: Client):
    funnel = csv_rows(alice_client.get(page_url(world, "value_funnel_csv")))
    assert funnel[0] == [
        "stage", "stage_label", "contacts_now", "reached_stage_or_later", "conversion_to_next", "at_range_start",
        "entered", "left", "moved_up", "moved_up_share",
    ]  # fmt: skip
    assert funnel[4] == ["repeat_customer", "Repeat customer", "2", "3", "0.3333", "1", "3", "2", "2", "0.5"]
    assert funnel[5] == ["loyal_advocate", "Loyal advocate", "1", "1", "", "0", "2", "1", "0", ""]
    flows = csv_rows(alice_client.get(page_url(world, "value_flow_csv"), {"range": "12w"}))
    assert flows[0] == [
        "period_start", "New contact → New visitor", "New contact → Lead", "New visitor → Lead",
        "Lead → First-time buyer", "First-time buyer → Repeat customer", "Repeat customer → Loyal advocate",
        "Loyal advocate → Repeat customer", "total",
    ]  # fmt: skip
    assert flows[1][0] == "2026-03-30" and flows[12] == ["2026-06-15", "1", "1", "0", "0", "0", "0", "1", "3"]
    assert flows[13] == ["total", "1", "1", "1", "1", "2", "2", "1", "9"]


# --- the dashboard summary ------------------------------------------------------------------------------
def test_the_dashboard_summary_renders_a_funnel_chart_and_clv_by_stage(shop, world):
    with tenant_context(world.tenant_a.pk):
        context = value_summary(world.tenant_a)
    html = render_to_string("analytics/_value_summary.html", {**context, "current_tenant": world.tenant_a})
    assert '<canvas data-chart="value-summary-funnel-chart"' in html
    assert '<script id="value-summary-funnel-chart" type="application/json">' in html
    assert '<tr data-key="first_time_buyer"><th scope="row">First-time buyer</th><td class="num">2</td>' in html
    assert ">515.34<" in html and ">510.56<" in html
    assert f'href="/t/{world.tenant_a.slug}/analytics/value/"' in html


# --- the API ---------------------------------------------------------------------------------------------
def test_api_clv_by_stage_and_segment(shop, world, api_a_read):
    body = api_a_read.get("/api/v1/analytics/value/clv/").json()
    assert body["by"] == "stage" and body["as_of"] == "2026-06-17T12:00:00Z"
    assert body["lifespan"] == {"years": "3.00", "estimated": False, "cohort": 3, "churned": 0, "churn_rate": None}
    ftb = body["rows"][2]
    assert ftb == {
        "stage": "first_time_buyer", "segment_id": None, "name": "First-time buyer", "contacts": 2, "buyers": 2,
        "buyer_share": 1.0, "orders": 2, "revenue": "100.00", "revenue_per_contact": "50.00",
        "revenue_per_buyer": "50.00", "average_order_value": "50.00", "purchases_per_year": "3.44",
        "predicted_clv": "515.34",
    }  # fmt: skip
    assert (body["total"]["contacts"], body["total"]["predicted_clv"], body["total"]["stage"]) == (12, "510.56", None)
    segments = api_a_read.get("/api/v1/analytics/value/clv/", {"by": "segment"}).json()
    assert [(r["segment_id"], r["name"], r["predicted_clv"]) for r in segments["rows"]] == [
        (shop.vips.pk, "VIPs", "525.00"), (shop.empty.pk, "=Empty", None),
    ]  # fmt: skip


def test_api_funnel(shop, world, api_a_read):
    body = api_a_read.get("/api/v1/analytics/value/funnel/").json()
    assert body["range"]["code"] == "12w" and body["range"]["bucket"] == "week"
    assert body["range"]["periods"][0] == "2026-03-30" and len(body["range"]["periods"]) == 12
    assert body["total_contacts"] == 12
    assert body["stages"][3] == {
        "stage": "repeat_customer", "name": "Repeat customer", "contacts": 2, "reached": 3,
        "conversion_to_next": 0.3333, "at_start": 1, "entered": 3, "left": 2, "moved_up": 2, "range_conversion": 0.5,
    }  # fmt: skip
    assert sorted((f["period_start"], f["from_stage"] or "", f["to_stage"], f["contacts"]) for f in body["flows"]) == [
        ("2026-05-04", "repeat_customer", "loyal_advocate", 1),
        ("2026-06-01", "first_time_buyer", "repeat_customer", 2),
        ("2026-06-01", "repeat_customer", "loyal_advocate", 1),
        ("2026-06-08", "lead", "first_time_buyer", 1),
        ("2026-06-08", "new_visitor", "lead", 1),
        ("2026-06-15", "", "lead", 1),
        ("2026-06-15", "", "new_visitor", 1),
        ("2026-06-15", "loyal_advocate", "repeat_customer", 1),
    ]
    days = api_a_read.get("/api/v1/analytics/value/funnel/", {"range": "30d"}).json()
    assert days["range"]["bucket"] == "day" and len(days["range"]["periods"]) == 30


def test_api_bad_input_is_a_400_naming_the_field(shop, world, api_a_read):
    bad_by = api_a_read.get("/api/v1/analytics/value/clv/", {"by": "country"})
    assert bad_by.status_code == 400 and "by" in bad_by.json()["error"]["fields"]
    bad_range = api_a_read.get("/api/v1/analytics/value/funnel/", {"range": "7y"})
    assert bad_range.status_code == 400 and "range" in bad_range.json()["error"]["fields"]


def test_api_keys_see_their_own_tenant_only(shop, world, api_b):
    assert api_client("").get("/api/v1/analytics/value/clv/").status_code == 401
    assert Client().get("/api/v1/analytics/value/funnel/").status_code == 401
    body = api_b.get("/api/v1/analytics/value/clv/", {"by": "segment"}).json()
    assert [row["name"] for row in body["rows"]] == ["Tenant B secret segment"]
    assert body["total"]["revenue"] == "99999.00"
    assert api_b.post("/api/v1/analytics/value/clv/").status_code == 405


def test_the_api_is_in_the_schema_without_warnings(db, tmp_path):
    from django.core.management import call_command

    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", target)
    schema = target.read_text()
    assert "/api/v1/analytics/value/clv/:" in schema and "/api/v1/analytics/value/funnel/:" in schema
    assert "operationId: analytics_value_clv" in schema and "predicted_clv" in schema
