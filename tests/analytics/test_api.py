"""The message KPI endpoints: the hand-computed figures (tests/analytics/scenario.py), bad input, isolation."""

from __future__ import annotations

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from analytics.rollup import stats_refresh
from tenants.context import tenant_context
from tests.analytics import scenario
from tests.analytics.scenario import NOW

pytestmark = pytest.mark.django_db
BASE = "/api/v1/analytics/"
JANUARY = "start=2026-01-01&end=2026-01-31"


@pytest.fixture
def winter(world):
    built = scenario.build(world.tenant_a)
    with tenant_context(world.tenant_a.pk):
        stats_refresh(tenant=world.tenant_a, now=NOW)
    with time_machine.travel(NOW, tick=False):
        yield built


def ok(response) -> dict:
    assert response.status_code == 200, response.content
    return response.json()


def test_a_campaigns_figures(winter, api_a: APIClient):
    body = ok(api_a.get(f"{BASE}campaigns/{winter.sale.pk}/"))
    assert body["campaign"] == {"id": winter.sale.pk, "name": "Winter sale", "channel": "email"}
    totals = body["totals"]
    assert {k: totals[k] for k in ("sent", "delivered", "bounced", "opened", "opened_any", "clicked", "clicks")} == {
        "sent": 8, "delivered": 6, "bounced": 2, "opened": 4, "opened_any": 5, "clicked": 2, "clicks": 3,
    }  # fmt: skip
    assert (totals["engaged"], totals["unsubscribed"], totals["complained"], totals["conversions"]) == (5, 1, 1, 4)
    assert (totals["revenue"], totals["cost"], totals["cost_per_conversion"]) == ("200.00", "90.00", "22.50")
    assert totals["ctr"] == pytest.approx(2 / 6) and totals["click_to_open"] == 0.5
    assert totals["conversion_rate"] == pytest.approx(4 / 6) and totals["engagement_rate"] == pytest.approx(5 / 6)
    assert totals["unsubscribe_rate"] == pytest.approx(1 / 6) and totals["complaint_rate"] == pytest.approx(1 / 6)
    assert [(v["name"], v["target"], v["kpis"]["sent"], v["kpis"]["conversions"]) for v in body["variants"]] == [
        ("VIP", "Segment: VIP", 2, 1), ("Leads", "Stage: Lead", 2, 2),
        ("A", "Default (everyone else)", 2, 0), ("B", "Default (everyone else)", 2, 1),
    ]  # fmt: skip
    assert body["variants"][2]["kpis"]["cost_per_conversion"] is None
    assert [(r["key"], r["kind"], r["segment_id"]) for r in body["segments"]] == [
        (f"segment:{winter.vip.pk}", "segment", winter.vip.pk), ("stage:lead", "stage", None),
        ("default", "default", None),
    ]  # fmt: skip
    assert [(r["key"], r["kpis"]["sent"]) for r in body["stages"]] == [
        ("new_visitor", 1), ("lead", 2), ("first_time_buyer", 2), ("repeat_customer", 2), ("loyal_advocate", 1)
    ]  # fmt: skip
    targeting = body["targeting"]
    assert targeting["conversion_lift"] == pytest.approx(0.5) and targeting["ctr_lift"] is None
    assert targeting["targeted_conversion"]["rate"] == 0.75
    assert targeting["targeted_conversion"]["low"] == pytest.approx(0.3006, abs=1e-4)
    assert targeting["p_value"] == pytest.approx(0.5403, abs=1e-4)
    assert [(d["day"], d["kpis"]["opened"], d["kpis"]["conversions"]) for d in body["series"]] == [
        ("2026-01-10", 3, 2), ("2026-01-11", 1, 1), ("2026-01-12", 0, 1)
    ]  # fmt: skip
    assert body["as_of"] is not None
    assert ok(api_a.get(f"{BASE}campaigns/{winter.sale.pk}/?stages=false"))["stages"] == []


def test_a_journeys_figures_per_step(winter, api_a: APIClient):
    body = ok(api_a.get(f"{BASE}journeys/{winter.welcome.pk}/"))
    assert body["journey"] == {"id": winter.welcome.pk, "name": "Welcome", "status": "live"}
    assert [(s["key"], s["versions"], s["channel"], s["kpis"]["sent"], s["kpis"]["opened"]) for s in body["steps"]] == [
        ("s1", [1, 2], "email", 3, 2), ("s3", [2], "email", 1, 0)
    ]  # fmt: skip
    assert body["totals"]["conversions"] == 1 and body["totals"]["revenue"] == "10.00"
    assert len(body["stages"]) == 3


def test_the_series_and_the_summary(winter, api_a: APIClient):
    series = ok(api_a.get(f"{BASE}series/?{JANUARY}"))
    assert series["period"] == {"start": "2026-01-01", "end": "2026-01-31"} and len(series["days"]) == 31
    tenth = series["days"][9]
    assert tenth["day"] == "2026-01-10"
    assert (tenth["kpis"]["sent"], tenth["kpis"]["opened"], tenth["kpis"]["clicked"]) == (8, 3, 2)
    assert (tenth["kpis"]["conversions"], tenth["kpis"]["revenue"]) == (2, "50.00")
    week = ok(api_a.get(f"{BASE}series/?days=7"))
    assert week["period"] == {"start": "2026-01-19", "end": "2026-01-25"}
    assert [d["kpis"]["sent"] for d in week["days"]] == [0, 3, 0, 0, 0, 0, 0]
    summary = ok(api_a.get(f"{BASE}summary/?{JANUARY}"))
    assert summary["totals"]["sent"] == 15 and summary["totals"]["revenue"] == "210.00"
    assert [(c["key"], c["kpis"]["sent"]) for c in summary["channels"]] == [("email", 12), ("sms", 3)]
    assert [c["name"] for c in summary["campaigns"]] == ["Winter sale", "SMS flash"]
    assert [(j["key"], j["name"]) for j in summary["journeys"]] == [(str(winter.welcome.pk), "Welcome")]
    assert summary["top_segments"] == [], "fewer than 50 delivered"
    assert summary["targeting"]["rows"][2]["key"] == "targeted"


def test_segments_side_by_side(winter, api_a: APIClient):
    from segments.models import Segment

    with tenant_context(winter.tenant.pk):
        lapsed = Segment.objects.get(name="Lapsed")
    body = ok(api_a.get(f"{BASE}segments/?segment={lapsed.pk}&segment={winter.vip.pk}&segment=999999&{JANUARY}"))
    assert [(r["name"], r["kpis"]["sent"]) for r in body["segments"]] == [("Segment: Lapsed", 0), ("Segment: VIP", 2)]
    assert body["default"]["sent"] == 11 and body["default"]["conversions"] == 2
    every = ok(api_a.get(f"{BASE}segments/?{JANUARY}"))
    assert [r["name"] for r in every["segments"]] == ["Segment: VIP"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start=2026-01-31&end=2026-01-01", "end"),
        ("start=2026-01-01", "end"),
        ("end=2026-01-01", "start"),
        ("start=2020-01-01&end=2026-01-01", "end"),
        ("start=yesterday&end=2026-01-01", "start"),
        ("days=0", "days"),
        ("days=99999999999999999999", "days"),
        ("days=abc", "days"),
    ],
)
def test_a_bad_period_is_a_400_naming_the_field(winter, api_a: APIClient, query: str, field: str):
    for endpoint in ("series/", "summary/", "segments/"):
        response = api_a.get(f"{BASE}{endpoint}?{query}")
        assert response.status_code == 400, (endpoint, query)
        assert field in response.json()["error"]["fields"]


def test_bad_segment_ids_are_a_400(winter, api_a: APIClient):
    assert "segment" in api_a.get(f"{BASE}segments/?segment=abc").json()["error"]["fields"]
    many = "&".join(f"segment={n}" for n in range(1, 30))
    assert api_a.get(f"{BASE}segments/?{many}").status_code == 400


def test_a_read_key_reads_and_nothing_else_is_allowed(winter, api_a_read: APIClient):
    for path in (
        f"campaigns/{winter.sale.pk}/", f"journeys/{winter.welcome.pk}/", "series/", "summary/", "segments/"
    ):  # fmt: skip
        assert api_a_read.get(BASE + path).status_code == 200
        assert api_a_read.post(BASE + path, {}, format="json").status_code in (403, 405)


def test_another_tenant_gets_404_and_its_own_empty_figures(winter, api_b: APIClient):
    assert api_b.get(f"{BASE}campaigns/{winter.sale.pk}/").status_code == 404
    assert api_b.get(f"{BASE}journeys/{winter.welcome.pk}/").status_code == 404
    summary = ok(api_b.get(f"{BASE}summary/?{JANUARY}"))
    assert summary["totals"]["sent"] == 0 and summary["campaigns"] == []
    segments = ok(api_b.get(f"{BASE}segments/?segment={winter.vip.pk}"))
    assert segments["segments"] == [], "A's segment is unknown to B"


def test_a_journey_steps_campaign_is_not_a_campaign_here(winter, api_a: APIClient):
    step = winter.journey_campaigns["j1"]
    assert api_a.get(f"{BASE}campaigns/{step.pk}/").status_code == 404


def test_queries_are_bounded(winter, api_a: APIClient):
    for path in (f"campaigns/{winter.sale.pk}/", f"journeys/{winter.welcome.pk}/", "summary/", "segments/"):
        with CaptureQueriesContext(connection) as captured:
            ok(api_a.get(BASE + path))
        assert len(captured) <= 16, (path, len(captured))


def test_the_schema_documents_the_endpoints_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(target))
    schema = target.read_text()
    for path in ("summary/", "series/", "segments/", "campaigns/{campaign_id}/", "journeys/{journey_id}/"):
        assert f"/api/v1/analytics/{path}:" in schema
    assert "click_to_open" in schema and "conversion_lift" in schema
