"""The A/B test pages, API and admin: who may see and change what, and what a person sees."""

# Fixtures shared between these modules are imported by name, which pytest needs and ruff flags.
# ruff: noqa: F811

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import re

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from analytics import stats
from analytics.experiments import experiment_decide
from analytics.models import Experiment
from campaigns.models import Campaign, ChannelConfig, Delivery, Variant
from campaigns.sending import run_start
from tenants.context import platform_access, tenant_context
from tenants.models import AuditLog
from tests.analytics.test_experiments import ACTOR, T0, ab_campaign, configure, engage, people, sent_of
from tests.campaigns.test_sending_channels import shop  # noqa: F401
from tests.conftest import api_client

pytestmark = pytest.mark.django_db
SETTINGS = {
    "tested": "subject", "test_share": "20", "metric": "click", "duration_hours": "24",
    "significance_level": "0.950", "method": "z_test", "fallback": "control",
}  # fmt: skip


def page(slug: str, campaign_id: int, name: str = "experiment") -> str:
    return reverse(f"analytics:{name}", kwargs={"tenant_slug": slug, "campaign_id": campaign_id})


def chart_of(html: str) -> dict:
    found = re.search(r'<script id="experiment-chart" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the chart's data is in the page"
    return json.loads(found.group(1))


@pytest.fixture
def tested(shop):
    """Tenant A's campaign with a test under way: 200 contacts, arms A and B, human clicks on B."""
    contacts = people(shop, 200)
    campaign, (a, b) = ab_campaign(shop, contacts, "Alpha", "Beta")
    experiment = configure(campaign, a, test_share=50, duration_hours=24)
    with time_machine.travel(T0, tick=False):
        run = run_start(campaign=campaign)
    Delivery.objects.filter(run=run, variant__isnull=False).update(status="sent", sent_at=T0)
    engage(sent_of(run, a), 3)
    engage(sent_of(run, b), 25)
    experiment.refresh_from_db()
    return campaign, a, b, run, experiment


# --- pages ------------------------------------------------------------------------------------------------
def test_a_campaign_without_a_test_offers_to_set_one_up(world, shop, alice_client: Client, bob_client: Client):
    contacts = people(shop, 5)
    campaign, (_a, _b) = ab_campaign(shop, contacts, "Alpha", "Beta")
    response = alice_client.get(page(shop.slug, campaign.pk))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="experiment-none"' in body and "Set up an A/B test" in body
    assert "Set up an A/B test" not in bob_client.get(page(shop.slug, campaign.pk)).content.decode()

    content_step = alice_client.get(reverse("campaigns:content", kwargs={"tenant_slug": shop.slug,
                                                                        "campaign_id": campaign.pk}))  # fmt: skip
    assert f'href="{page(shop.slug, campaign.pk)}" data-testid="ab-test-link"' in content_step.content.decode()

    lonely = ab_campaign(shop, contacts, "Only")[0]
    body = alice_client.get(page(shop.slug, lonely.pk)).content.decode()
    assert "Add a second variant for the same target" in body and "Set up an A/B test" not in body
    settings_page = alice_client.get(page(shop.slug, lonely.pk, "experiment_settings")).content.decode()
    assert 'data-testid="experiment-no-arms"' in settings_page


def test_an_editor_sets_up_the_test_and_sees_the_service_errors(world, shop, alice_client: Client):
    contacts = people(shop, 5)
    campaign, (a, b) = ab_campaign(shop, contacts, "Alpha", "Beta")
    url = page(shop.slug, campaign.pk, "experiment_settings")
    form = alice_client.get(url)
    assert form.status_code == 200 and 'data-testid="experiment-save"' in form.content.decode()

    bad = alice_client.post(url, {**SETTINGS, "control": a.pk, "test_share": "0"})
    assert bad.status_code == 400 and "Ensure this value is greater than or equal to 1." in bad.content.decode()
    Variant.objects.filter(pk=b.pk).update(subject="Alpha")
    same = alice_client.post(url, {**SETTINGS, "control": a.pk})
    assert same.status_code == 400 and "have the same subject" in same.content.decode()
    hours = alice_client.post(url, {**SETTINGS, "control": a.pk, "tested": "send_time", f"hour_{a.pk}": "9"})
    assert hours.status_code == 400 and "Give each variant an hour from 0 to 23: “Beta”" in hours.content.decode()
    assert not Experiment.objects.filter(campaign=campaign).exists()

    saved = alice_client.post(url, {**SETTINGS, "control": a.pk, "tested": "cta", "metric": "open"})
    assert saved.status_code == 400, "the CTAs are the same too"
    Variant.objects.filter(pk=b.pk).update(cta_label="Buy now")
    saved = alice_client.post(url, {**SETTINGS, "control": b.pk, "tested": "cta", "metric": "open"})
    assert saved.status_code == 302 and saved["Location"] == page(shop.slug, campaign.pk)
    experiment = Experiment.objects.get(campaign=campaign)
    assert (experiment.control_id, experiment.tested, experiment.metric, experiment.status) == (
        b.pk, "cta", "open", "draft",
    )  # fmt: skip
    log = AuditLog.objects.get(tenant=shop, action="experiment.created")
    assert log.actor_user == world.alice and log.data["control"] == b.pk
    body = alice_client.get(page(shop.slug, campaign.pk)).content.decode()
    assert "Draft" in body and "The test starts with the campaign's next send" in body
    assert re.search(r"<li>Beta <small class=\"muted\">\(control\)</small>", body)
    assert alice_client.get(url).content.decode().count("selected>Beta") == 1

    Variant.objects.filter(pk=a.pk).update(target="stage", target_stage="lead")
    assert 'data-testid="experiment-invalid"' in alice_client.get(page(shop.slug, campaign.pk)).content.decode()
    removed = alice_client.post(page(shop.slug, campaign.pk, "experiment_delete"))
    assert removed.status_code == 302 and not Experiment.objects.filter(campaign=campaign).exists()


def test_the_result_page_shows_rates_intervals_and_the_decision(world, shop, tested, alice_client: Client):
    campaign, a, b, run, experiment = tested
    sent_a, sent_b = len(sent_of(run, a)), len(sent_of(run, b))
    response = alice_client.get(page(shop.slug, campaign.pk))
    body = response.content.decode()
    assert response.status_code == 200 and 'data-testid="experiment-interim"' in body
    assert 'data-testid="experiment-decide"' in body and 'data-chart="experiment-chart"' in body
    chart = chart_of(body)
    rate, interval = chart["data"]["datasets"]
    assert chart["data"]["labels"] == ["Alpha", "Beta"]
    assert rate["data"] == [round(300 / sent_a, 2), round(2500 / sent_b, 2)]
    wilson = stats.wilson_interval(25, sent_b)
    assert interval["data"][1] == [round(wilson.low * 100, 2), round(wilson.high * 100, 2)]
    assert interval["grouped"] is False
    assert f"{2500 / sent_b:.1f} %" in body and "vendor/chartjs/chart.umd.min.js" in body

    decided = alice_client.post(page(shop.slug, campaign.pk, "experiment_decide"))
    assert decided.status_code == 302
    experiment.refresh_from_db()
    assert experiment.status == "sent" and experiment.winner_id == b.pk and experiment.decided_by == world.alice
    body = alice_client.get(page(shop.slug, campaign.pk)).content.decode()
    assert 'data-testid="experiment-decision"' in body and "Winner: Beta" in body
    assert experiment.reason in html.unescape(body) and "by alice@a.example" in body
    assert 'aria-current="true"' in body and 'data-testid="experiment-decide"' not in body
    again = alice_client.post(page(shop.slug, campaign.pk, "experiment_decide"), follow=True)
    assert "Only a test under way can be decided" in again.content.decode()
    settings_page = alice_client.get(page(shop.slug, campaign.pk, "experiment_settings")).content.decode()
    assert "This test has started" in settings_page and '<fieldset class="plain" disabled>' in settings_page


def test_the_figures_download_as_csv_with_formulas_escaped(shop, tested, alice_client: Client):
    campaign, a, b, run, experiment = tested
    Variant.objects.filter(pk=a.pk).update(name="=HYPERLINK(1)")
    experiment_decide(experiment=experiment, actor=ACTOR)
    response = alice_client.get(page(shop.slug, campaign.pk, "experiment_csv"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode().lstrip("\ufeff"))))
    assert rows[0] == ["variant_id", "name", "sent", "successes", "rate", "ci_low", "ci_high", "p_value",
                       "probability_best", "winner"]  # fmt: skip
    sent_b = len(sent_of(run, b))
    assert rows[1][1] == "'=HYPERLINK(1)" and rows[1][9] == "false"
    assert rows[2][:4] == [str(b.pk), "Beta", str(sent_b), "25"] and rows[2][9] == "true"
    assert float(rows[2][4]) == pytest.approx(25 / sent_b, abs=1e-6) and rows[2][7] == ""


def test_the_viewer_reads_but_cannot_change_or_decide(shop, tested, bob_client: Client):
    campaign, a, _b, _run, experiment = tested
    body = bob_client.get(page(shop.slug, campaign.pk)).content.decode()
    assert 'data-testid="experiment-table"' in body and 'data-testid="experiment-decide"' not in body
    settings_page = bob_client.get(page(shop.slug, campaign.pk, "experiment_settings"))
    assert settings_page.status_code == 200 and 'data-testid="read-only"' in settings_page.content.decode()
    assert bob_client.get(page(shop.slug, campaign.pk, "experiment_csv")).status_code == 200
    for name in ("experiment_settings", "experiment_decide", "experiment_delete"):
        assert bob_client.post(page(shop.slug, campaign.pk, name), {**SETTINGS, "control": a.pk}).status_code == 403
    experiment.refresh_from_db()
    assert experiment.status == "testing"


def test_another_tenant_and_journey_steps_get_404(world, shop, tested, charlie_client: Client, alice_client: Client):
    campaign = tested[0]
    for name in ("experiment", "experiment_settings", "experiment_csv"):
        assert charlie_client.get(page(shop.slug, campaign.pk, name)).status_code == 404
        assert charlie_client.get(page(world.tenant_b.slug, campaign.pk, name)).status_code == 404
    for name in ("experiment_settings", "experiment_decide", "experiment_delete"):
        assert charlie_client.post(page(world.tenant_b.slug, campaign.pk, name)).status_code == 404
    Campaign.objects.filter(pk=campaign.pk).update(kind=Campaign.Kind.JOURNEY)
    assert alice_client.get(page(shop.slug, campaign.pk)).status_code == 404


# --- API ----------------------------------------------------------------------------------------------------
def api(campaign_id: int, decide: bool = False) -> str:
    return f"/api/v1/campaigns/{campaign_id}/experiment/" + ("decide/" if decide else "")


def test_the_api_sets_up_reads_decides_and_removes(world, shop, api_a, api_a_read):
    contacts = people(shop, 120)
    campaign, (a, b) = ab_campaign(shop, contacts, "Alpha", "Beta")
    empty = api_a_read.get(api(campaign.pk))
    assert empty.status_code == 200
    assert empty.json()["configured"] is False and empty.json()["candidates"] == [a.pk, b.pk]

    refused = api_a.put(api(campaign.pk), {"control": a.pk, "test_share": 0, "metric": "sometimes"}, format="json")
    assert refused.status_code == 400 and set(refused.json()["error"]["fields"]) == {"test_share", "metric"}
    other = ab_campaign(shop, contacts, "Other")[1][0]
    refused = api_a.put(api(campaign.pk), {"control": other.pk}, format="json")
    assert refused.json()["error"]["fields"] == {"control": ["Choose the control: one of this campaign's variants."]}
    refused = api_a.put(api(campaign.pk), {"control": a.pk, "arm_send_hours": {"x": 3}}, format="json")
    assert refused.status_code == 400 and "arm_send_hours" in refused.json()["error"]["fields"]
    assert api_a_read.put(api(campaign.pk), {"control": a.pk}, format="json").status_code == 403

    saved = api_a.put(api(campaign.pk), {"control": a.pk, "test_share": 50, "method": "bayesian"}, format="json")
    assert saved.status_code == 200
    document = saved.json()
    assert (document["configured"], document["status"], document["method"], document["test_share"]) == (
        True, "draft", "bayesian", 50,
    )  # fmt: skip
    assert document["significance_level"] == "0.950" and document["metric"] == "click"
    assert [arm["variant"] for arm in document["arms"]] == [a.pk, b.pk] and document["arms"][0]["target"] == "default"
    assert AuditLog.objects.get(tenant=shop, action="experiment.created").actor_label.startswith("api key A write")

    not_yet = api_a.post(api(campaign.pk, decide=True))
    assert not_yet.status_code == 400 and "status" in not_yet.json()["error"]["fields"]
    with time_machine.travel(T0, tick=False):
        run = run_start(campaign=campaign)
    Delivery.objects.filter(run=run, variant__isnull=False).update(status="sent", sent_at=T0)
    engage(sent_of(run, b), 10)
    testing = api_a_read.get(api(campaign.pk)).json()
    assert testing["status"] == "testing" and testing["held"] == Delivery.objects.filter(
        run=run, variant__isnull=True
    ).count()  # fmt: skip
    assert [row["successes"] for row in testing["results"]] == [0, 10] and testing["decision"] is None
    assert api_a.delete(api(campaign.pk)).status_code == 400, "a started test stays"

    decided = api_a.post(api(campaign.pk, decide=True))
    assert decided.status_code == 200
    decision = decided.json()["decision"]
    assert decision["winner"] == b.pk and decision["significant"] is True and decision["automatic"] is False
    assert decision["probability"] == pytest.approx(decided.json()["results"][1]["probability_best"])
    assert decided.json()["held"] == 0 and decision["released"] > 0

    fresh = ab_campaign(shop, contacts, "X", "Y")[0]
    api_a.put(api(fresh.pk), {"control": Variant.objects.filter(campaign=fresh).first().pk}, format="json")
    assert api_a.delete(api(fresh.pk)).status_code == 204
    assert api_a.delete(api(fresh.pk)).status_code == 404


def test_the_api_answers_404_for_another_tenant(world, shop, api_b):
    contacts = people(shop, 5)
    campaign, (a, _b) = ab_campaign(shop, contacts, "Alpha", "Beta")
    configure(campaign, a)
    assert api_b.get(api(campaign.pk)).status_code == 404
    assert api_b.put(api(campaign.pk), {"control": a.pk}, format="json").status_code == 404
    assert api_b.delete(api(campaign.pk)).status_code == 404
    assert api_b.post(api(campaign.pk, decide=True)).status_code == 404
    assert api_client("").get(api(campaign.pk)).status_code == 401
    assert Experiment.objects.get(campaign=campaign).status == "draft"


def test_the_openapi_schema_documents_the_endpoints(db):
    schema = Client().get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert {"get", "put", "delete"} <= set(paths["/api/v1/campaigns/{campaign_id}/experiment/"])
    assert paths["/api/v1/campaigns/{campaign_id}/experiment/decide/"]["post"]["operationId"] == (
        "campaigns_experiment_decide"
    )


# --- admin --------------------------------------------------------------------------------------------------
def test_staff_see_every_tenants_tests_and_decide_one(world, shop, tested, settings):
    _campaign, _a, b, _run, experiment = tested
    with tenant_context(world.tenant_b.id):
        other = ab_campaign(world.tenant_b, people(world.tenant_b, 4, "q"), "P", "Q")
        configure(other[0], other[1][0])
    staff = get_user_model().objects.create_superuser("staff@segmentor.example", "a-long-password")
    client = Client()
    client.force_login(staff)
    changelist = client.get(reverse("admin:analytics_experiment_changelist"))
    assert changelist.status_code == 200
    assert {row.tenant_id for row in changelist.context["cl"].result_list} == {world.tenant_a.id, world.tenant_b.id}
    assert client.get(reverse("admin:analytics_experiment_change", args=[experiment.pk])).status_code == 200
    response = client.post(
        reverse("admin:analytics_experiment_changelist"),
        {"action": "decide_now", "_selected_action": [experiment.pk]},
        follow=True,
    )
    assert "Decided 1 test(s)." in response.content.decode()
    with platform_access():
        decided = Experiment.all_tenants.get(pk=experiment.pk)
    assert decided.status == "sent" and decided.decided_by_id == staff.pk and decided.winner_id == b.pk
    assert dt.datetime.now(dt.UTC) - decided.decided_at < dt.timedelta(minutes=5)


# --- channel tests -------------------------------------------------------------------------------------------
def test_an_editor_chooses_each_variants_channel(shop, alice_client: Client):
    contacts = people(shop, 5)
    campaign, (a, b) = ab_campaign(shop, contacts, "Alpha", "Beta")
    ChannelConfig.objects.create(
        tenant=shop, channel="sms", backend="twilio", secret="t",
        settings={"base_url": "https://sms.example/2010-04-01", "account_sid": "AC1", "sender": "+15550001111"},
    )  # fmt: skip
    url = page(shop.slug, campaign.pk, "experiment_settings")
    form = alice_client.get(url).content.decode()
    assert 'data-testid="experiment-channels"' in form and f'name="channel_{b.pk}"' in form
    chosen = {**SETTINGS, "control": a.pk, "tested": "channel", "metric": "conversion"}
    one = alice_client.post(url, {**chosen, f"channel_{a.pk}": "email", f"channel_{b.pk}": "email"})
    assert one.status_code == 400 and "at least two different channels" in one.content.decode()
    fax = alice_client.post(url, {**chosen, f"channel_{b.pk}": "fax"})
    assert fax.status_code == 400 and "Select a valid choice" in fax.content.decode()
    saved = alice_client.post(url, {**chosen, f"channel_{b.pk}": "sms"})
    assert saved.status_code == 302
    experiment = Experiment.objects.get(campaign=campaign)
    assert (experiment.tested, experiment.arm_channels) == ("channel", {str(a.pk): "email", str(b.pk): "sms"})
    body = alice_client.get(page(shop.slug, campaign.pk)).content.decode()
    assert re.findall(r'data-testid="experiment-arm-channel">([^<]+)<', body) == ["Email", "SMS"]
    again = alice_client.get(url).content.decode()
    assert re.search(rf'name="channel_{b.pk}"[^>]*>.*?<option value="sms" selected>', again, re.S)


def test_the_api_sets_up_a_channel_test(shop, api_a, api_a_read):
    contacts = people(shop, 5)
    campaign, (a, b) = ab_campaign(shop, contacts, "Alpha", "Beta")
    ChannelConfig.objects.create(
        tenant=shop, channel="sms", backend="twilio", secret="t",
        settings={"base_url": "https://sms.example/2010-04-01", "account_sid": "AC1", "sender": "+15550001111"},
    )  # fmt: skip
    body = {"control": a.pk, "tested": "channel", "metric": "conversion"}
    one = api_a.put(api(campaign.pk), body, format="json")
    assert one.status_code == 400 and one.json()["error"]["fields"]["arm_channels"] == [
        "Give the variants at least two different channels: a channel test compares channels."
    ]
    bad = api_a.put(api(campaign.pk), {**body, "arm_channels": {str(b.pk): "fax"}}, format="json")
    assert bad.status_code == 400 and "arm_channels" in bad.json()["error"]["fields"]
    saved = api_a.put(api(campaign.pk), {**body, "arm_channels": {str(b.pk): "sms"}}, format="json")
    assert saved.status_code == 200
    arms = api_a_read.get(api(campaign.pk)).json()["arms"]
    assert [(arm["variant"], arm["channel"]) for arm in arms] == [(a.pk, "email"), (b.pk, "sms")]
