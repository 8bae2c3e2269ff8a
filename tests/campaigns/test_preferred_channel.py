"""Campaigns on each contact's preferred channel: the choice at the snapshot on generated engagement (with the
reason and the scores), consent checked again at sending, sending end to end (email to aiosmtpd, SMS to a
local provider), the results by channel, and the composer, API and admin with per-channel content."""

# Fixtures shared between these modules are imported by name, which pytest needs and ruff flags.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from analytics.experiments import ExperimentSettings, experiment_configure
from analytics.models import ChannelProfile
from analytics.preferred_channel import CHANNELS, channel_profiles_compute, choose_channel
from analytics.rollup import stats_refresh
from analytics.selectors import campaign_results
from campaigns import services
from campaigns.models import Campaign, CampaignRun, ChannelConfig, Delivery, Variant
from campaigns.sending import run_family, run_start
from campaigns.tasks import send_run
from contacts.consent import consent_change, suppression_add
from contacts.models import ConsentState, Contact, Suppression
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.analytics.preferred_channel_data import API, EXPECTED, PUSH_KINDS, engagement_world
from tests.campaigns.test_channels import SMS_PATH, Provider, Reply, provider  # noqa: F401
from tests.campaigns.test_sending_channels import sms_config
from tests.conftest import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
# A weekday afternoon in Berlin (the workspace's zone): outside the quiet hours.
NOW = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)
CONTENT = {
    "subject": "Hi {{ contact.first_name }}", "html_body": "<p>Hello {{ contact.first_name }}</p>",
    "sms_body": "Hi {{ contact.first_name }}, 20% off today", "push_title": "20% off", "push_body": "Today only",
}  # fmt: skip
CAMPAIGNS = "/api/v1/campaigns/"


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=True):
        yield NOW


@pytest.fixture
def shop(world: World, clock):
    """Tenant A with the generated engagement world profiled, no frequency cap (the history would reach it)."""
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        tenant.default_sender_email = "news@shop.example"
        tenant.time_zone = "Europe/Berlin"
        tenant.frequency_cap_messages = 0
        tenant.save()
        people = engagement_world(tenant, NOW)
        channel_profiles_compute(tenant=tenant, now=NOW)
        everyone = [c for contacts in people.values() for c in contacts]
        segment = segment_create(tenant=tenant, actor=ACTOR, name="Everyone", kind=Segment.Kind.STATIC)
        static_members_add(segment=segment, actor=ACTOR, contact_ids=[c.pk for c in everyone])
        yield {"tenant": tenant, "people": people, "segment": segment}


def preferred_campaign(shop: dict[str, Any], channels: list[str], **content: Any) -> Campaign:
    campaign, _ = services.campaign_create(
        tenant=shop["tenant"], actor=ACTOR,
        data={
            "name": "Summer sale", "preferred_channel": True, "preferred_channels": channels,
            "audience": {"include": [shop["segment"].pk], "exclude": []},
            "variants": [{"name": "Everyone", "target": "default", **(content or CONTENT)}],
        },
    )  # fmt: skip
    return campaign


def deliveries_of(run: CampaignRun) -> dict[int, Delivery]:
    return {d.contact_id: d for d in Delivery.objects.filter(run_id__in=run_family(run))}


def available(contact: Contact, channels: list[str]) -> list[str]:
    granted = set(
        ConsentState.objects.filter(contact=contact, purpose="marketing", status="granted").values_list(
            "channel", flat=True
        )
    )
    address = {"email": bool(contact.email), "sms": bool(contact.phone), "push": bool(contact.push_tokens)}
    return [c for c in channels if c in granted and address[c]]


# --- the snapshot --------------------------------------------------------------------------------------
def test_the_snapshot_chooses_each_contacts_channel_with_the_reason_and_scores(shop):
    campaign = preferred_campaign(shop, ["email", "sms"])
    assert (campaign.channel, campaign.preferred_channels) == ("email", ["email", "sms"])
    run = run_start(campaign=campaign)
    rows = deliveries_of(run)
    sibling = Campaign.objects.get(sibling_of=campaign)
    assert (sibling.kind, sibling.channel, sibling.preferred_channel, sibling.cost) == ("journey", "sms", False, 0)
    [sibling_run] = CampaignRun.objects.filter(campaign=sibling)
    [copy] = Variant.objects.filter(campaign=sibling)
    original = Variant.objects.get(campaign=campaign)
    assert copy.copy_of_id == original.pk and copy.sms_body == original.sms_body
    profiles = {p.contact_id: p for p in ChannelProfile.objects.all()}
    for kind, contacts in shop["people"].items():
        expected = ("email", "most_engaged") if kind in PUSH_KINDS else EXPECTED[kind]
        for contact in contacts:
            delivery = rows[contact.pk]
            assert (delivery.chosen_channel, delivery.channel_reason) == expected, kind
            # Another channel's messages are the sibling's, with the copy of the variant.
            if delivery.chosen_channel == "sms":
                assert (delivery.run_id, delivery.variant_id) == (sibling_run.pk, copy.pk)
            else:
                assert (delivery.run_id, delivery.variant_id) == (run.pk, original.pk)
            # The SQL in the snapshot agrees with the Python rule, scores included.
            profile = profiles.get(contact.pk)
            scores = {c: getattr(profile, f"{c}_score") if profile else 0.0 for c in CHANNELS}
            choice = choose_channel(
                order=["email", "sms"], available=available(contact, ["email", "sms"]), scores=scores
            )
            assert (delivery.chosen_channel, delivery.channel_reason, delivery.channel_scores) == (
                choice.channel, choice.reason, choice.scores
            )  # fmt: skip
    fan = rows[shop["people"]["sms_fan"][0].pk]
    assert fan.channel_scores is not None and fan.channel_scores["sms"] > fan.channel_scores["email"] == 0
    assert fan.channel_reason_text.startswith("most engaged: SMS 0.")
    assert rows[shop["people"]["email_only"][0].pk].channel_scores == {"email": 0.0}
    run.refresh_from_db()
    sibling_run.refresh_from_db()
    assert run.audience_size == len(rows) and sibling_run.audience_size == 2 * 2 and sibling_run.parent_id == run.pk


def test_three_channels_in_the_campaigns_order(shop):
    campaign = preferred_campaign(shop, ["sms", "push", "email"])
    run = run_start(campaign=campaign)
    rows = deliveries_of(run)
    people = shop["people"]
    assert campaign.channel == "sms"
    assert {rows[c.pk].chosen_channel for c in people["push_fan"]} == {"push"}
    # Without engagement the first of the order; with consent for one channel only, that one.
    assert {(rows[c.pk].chosen_channel, rows[c.pk].channel_reason) for c in people["quiet"]} == {
        ("sms", "no_engagement")
    }
    assert {rows[c.pk].chosen_channel for c in people["email_only"]} == {"email"}
    assert {rows[c.pk].chosen_channel for c in people["no_consent"]} == {"sms"}
    assert set(Campaign.objects.filter(sibling_of=campaign).values_list("channel", flat=True)) == {"push", "email"}


def test_consent_withdrawn_after_profiling_counts_at_the_snapshot_and_again_at_sending(shop, provider, smtp):
    provider.reply(SMS_PATH, Reply.json(201, {"sid": "SM1"}))
    sms_config(shop["tenant"], provider)
    before, after = shop["people"]["sms_fan"]
    consent_change(contact=before, channel="sms", purpose="marketing", status="withdrawn", evidence=API, actor=ACTOR)
    campaign = preferred_campaign(shop, ["email", "sms"])
    run = run_start(campaign=campaign)
    rows = deliveries_of(run)
    # Withdrawn before the snapshot: the only channel left.
    assert (rows[before.pk].chosen_channel, rows[before.pk].channel_reason) == ("email", "only_consented")
    # Withdrawn after it: chosen SMS, and not sent on SMS.
    assert rows[after.pk].chosen_channel == "sms"
    consent_change(contact=after, channel="sms", purpose="marketing", status="withdrawn", evidence=API, actor=ACTOR)
    for each in run_family(run).values_list("pk", flat=True):
        send_run(shop["tenant"].pk, each)
    skipped = Delivery.objects.get(pk=rows[after.pk].pk)
    assert (skipped.status, skipped.skip_reason) == ("skipped", "no_consent")
    sent_to = {parse_qs(r.body.decode())["To"][0] for r in provider.requests}
    assert sent_to == {c.phone for c in shop["people"]["sms_imported"]}  # not the SMS fans
    assert Delivery.objects.get(pk=rows[before.pk].pk).status == "sent"


def test_a_suppressed_address_is_not_chosen_the_next_reachable_channel_is(shop):
    """An SMS fan whose number is suppressed gets the campaign by email (consented too), not a skipped SMS."""
    fan = shop["people"]["sms_fan"][0]
    suppression_add(tenant=shop["tenant"], channel="sms", address=fan.phone, reason=Suppression.Reason.MANUAL)
    campaign = preferred_campaign(shop, ["email", "sms"])
    rows = deliveries_of(run_start(campaign=campaign))
    assert (rows[fan.pk].chosen_channel, rows[fan.pk].channel_reason) == ("email", "only_consented")
    assert rows[fan.pk].score_sms is None  # not a channel it could go by
    other = shop["people"]["sms_fan"][1]
    assert rows[other.pk].chosen_channel == "sms"


# --- sending end to end ----------------------------------------------------------------------------------
def test_sent_end_to_end_each_channel_through_its_provider_and_counted_by_channel(
    shop, provider, smtp, django_capture_on_commit_callbacks, alice_client: Client
):
    provider.route(SMS_PATH, lambda request: Reply.json(201, {"sid": f"SM{len(provider.requests)}"}))
    sms_config(shop["tenant"], provider)
    campaign = preferred_campaign(shop, ["email", "sms"])
    with django_capture_on_commit_callbacks(execute=False) as queued:
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
    sends = [c for c in queued if "send" in getattr(c, "__qualname__", "")]  # not the facts' token (a partial)
    assert len(sends) == 2  # the campaign's run and its SMS sibling's
    rows = deliveries_of(run)
    sibling_run = CampaignRun.objects.get(parent=run)
    send_run(shop["tenant"].pk, run.pk)
    assert Campaign.objects.get(pk=campaign.pk).status == "sending"  # its SMS are not out yet
    send_run(shop["tenant"].pk, sibling_run.pk)
    assert Campaign.objects.get(pk=campaign.pk).status == "sent"
    people = shop["people"]
    by_email = {"email_fan", "lapsed_sms", "quiet", "email_only", "no_phone", "push_fan"}
    emails = smtp.inbox.wait_for(2 * len(by_email))
    assert {m["To"] for m in emails} == {c.email for k in by_email for c in people[k]}
    assert {m["Subject"] for m in emails} >= {f"Hi {people['quiet'][0].first_name}"}
    texts = {parse_qs(r.body.decode())["To"][0]: parse_qs(r.body.decode())["Body"][0] for r in provider.requests}
    assert set(texts) == {c.phone for k in ("sms_fan", "sms_imported") for c in people[k]}
    assert all(body.startswith("Hi ") and "20% off today" in body for body in texts.values())
    statuses = {
        (d.chosen_channel, d.status, d.skip_reason) for d in Delivery.objects.filter(run_id__in=run_family(run))
    }
    assert statuses == {("email", "sent", ""), ("sms", "sent", ""), ("email", "skipped", "no_consent")}
    assert rows[people["no_consent"][0].pk].channel_reason == "no_consent"

    # The results count the siblings' messages as the campaign's, and by the channel chosen.
    stats_refresh(tenant=shop["tenant"])
    results = campaign_results(campaign=Campaign.objects.select_related("tenant").get(pk=campaign.pk))
    by_channel = {row.key: row.kpis.sent for row in results.channels}
    assert by_channel == {"email": 2 * len(by_email), "sms": 4}
    assert results.totals.sent == 2 * len(by_email) + 4
    assert [row.kpis.sent for row in results.variants] == [2 * len(by_email) + 4]
    tenant = shop["tenant"]
    page = alice_client.get(
        reverse("analytics:campaign", kwargs={"tenant_slug": tenant.slug, "campaign_id": campaign.pk})
    )
    assert page.status_code == 200 and 'data-testid="channels-table"' in page.content.decode()
    csv = alice_client.get(
        reverse("analytics:campaign_csv", kwargs={"tenant_slug": tenant.slug, "campaign_id": campaign.pk}),
        {"table": "channels"},
    )
    assert csv.status_code == 200 and "SMS" in csv.content.decode()
    # The run's page and its API list every delivery with the channel and why.
    run_page = alice_client.get(
        reverse("campaigns:run", kwargs={"tenant_slug": tenant.slug, "campaign_id": campaign.pk, "run_id": run.pk})
    )
    assert run_page.content.decode().count('data-testid="delivery-channel"') == len(rows)
    assert "most engaged: SMS" in run_page.content.decode()


def test_pause_resume_and_cancel_reach_the_messages_on_other_channels(shop, django_capture_on_commit_callbacks):
    ChannelConfig.objects.create(tenant=shop["tenant"], channel="sms", backend=ChannelConfig.Backend.CONSOLE)
    campaign = preferred_campaign(shop, ["email", "sms"])
    with django_capture_on_commit_callbacks(execute=False):
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
    sibling_run = CampaignRun.objects.get(parent=run)
    services.campaign_pause(campaign=campaign, actor=ACTOR)
    assert CampaignRun.objects.get(pk=sibling_run.pk).status == "paused"
    assert send_run(shop["tenant"].pk, sibling_run.pk) == {}
    with django_capture_on_commit_callbacks(execute=False) as queued:
        services.campaign_resume(campaign=campaign, actor=ACTOR)
    assert len(queued) == 2 and CampaignRun.objects.get(pk=sibling_run.pk).status == "sending"
    services.campaign_cancel(campaign=campaign, actor=ACTOR)
    assert set(Delivery.objects.filter(run=sibling_run).values_list("skip_reason", flat=True)) == {"cancelled"}


def test_the_estimate_counts_who_has_no_consented_channel(shop):
    campaign = preferred_campaign(shop, ["email", "sms"])
    estimate = services.audience_estimate(campaign=campaign)
    assert estimate.total == 2 * len(EXPECTED) and estimate.no_consent == 2  # the no_consent kind
    assert estimate.no_address == 0 and estimate.sendable == estimate.total - 2


def test_an_ab_test_and_the_preferred_channel_exclude_each_other(shop):
    campaign = preferred_campaign(shop, ["email", "sms"])
    with pytest.raises(ValidationError) as error:
        experiment_configure(campaign=campaign, settings=ExperimentSettings(control_id=None), actor=ACTOR)
    assert "preferred channel" in error.value.message_dict["campaign"][0]


def test_content_and_providers_are_required_for_each_channel(shop):
    campaign = preferred_campaign(shop, ["email", "sms", "push"], subject="Hi", html_body="<p>Hi</p>")
    problems = {(p.field, p.message) for p in services.campaign_problems(campaign=campaign)}
    assert ("sms_body", "Variant “Everyone” (SMS): Write the message.") in problems
    assert ("push_title", "Variant “Everyone” (Push): A push needs a title, a body or both.") in problems
    assert ("preferred_channels", "Set up a SMS provider in the settings first.") in problems
    with pytest.raises(ValidationError) as error:
        services.campaign_send_now(campaign=campaign, actor=ACTOR)
    assert "sms_body" in error.value.message_dict
    for bad, message in [(["email"], "at least two"), (["email", "webhook"], "a webhook reaches a system"),
                         (["email", "email"], "once"), ("email", "A list of channels")]:  # fmt: skip
        with pytest.raises(ValidationError) as error:
            services.campaign_update(campaign=campaign, actor=ACTOR, data={"preferred_channels": bad})
        assert message in error.value.message_dict["preferred_channels"][0]


# --- the API ---------------------------------------------------------------------------------------------
def test_the_api_creates_a_preferred_channel_campaign_with_content_per_channel(shop, api_a: APIClient):
    body = {
        "name": "By API", "preferred_channel": True, "preferred_channels": ["sms", "email"],
        "audience": {"include": [shop["segment"].pk]},
        "variants": [{"name": "All", "target": "default", **CONTENT}],
    }  # fmt: skip
    created = api_a.post(CAMPAIGNS, body, format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert (data["channel"], data["preferred_channel"], data["preferred_channels"]) == ("sms", True, ["sms", "email"])
    assert data["variants"][0]["sms_body"] == CONTENT["sms_body"]
    preview = api_a.post(
        f"{CAMPAIGNS}{data['id']}/preview/", {"contact_id": shop["people"]["quiet"][0].pk, "channel": "email"},
        format="json",
    )  # fmt: skip
    assert preview.status_code == 200 and preview.json()["channel"] == "email"
    assert preview.json()["subject"].startswith("Hi ")
    wrong = api_a.post(
        f"{CAMPAIGNS}{data['id']}/preview/", {"contact_id": shop["people"]["quiet"][0].pk, "channel": "push"},
        format="json",
    )  # fmt: skip
    assert wrong.status_code == 400 and "channel" in wrong.json()["error"]["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"preferred_channel": True, "preferred_channels": ["email", "webhook"]}, "preferred_channels"),
        ({"preferred_channel": True, "preferred_channels": ["email"]}, "preferred_channels"),
        ({"preferred_channel": True}, "preferred_channels"),
        ({"preferred_channel": True, "preferred_channels": "email,sms"}, "preferred_channels"),
        ({"preferred_channel": True, "preferred_channels": [1, 2]}, "preferred_channels"),
        ({"preferred_channel": "sometimes", "preferred_channels": ["email", "sms"]}, "preferred_channel"),
    ],
)
def test_the_api_answers_400_for_bad_channel_settings(shop, api_a: APIClient, body: dict, field: str):
    response = api_a.post(CAMPAIGNS, {"name": "Bad", **body}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not Campaign.objects.filter(name="Bad").exists()


def test_the_api_lists_each_delivery_with_its_channel_and_reason(shop, api_a: APIClient):
    campaign = preferred_campaign(shop, ["email", "sms"])
    run = run_start(campaign=campaign)
    listed = api_a.get(f"{CAMPAIGNS}{campaign.pk}/runs/{run.pk}/deliveries/", {"page_size": 100})
    assert listed.status_code == 200
    rows = {row["contact_id"]: row for row in listed.json()["results"]}
    assert len(rows) == 2 * len(EXPECTED)  # the sibling's SMS too
    fan = rows[shop["people"]["sms_fan"][0].pk]
    assert (fan["chosen_channel"], fan["channel_reason"]) == ("sms", "most_engaged")
    assert fan["channel_reason_text"].startswith("most engaged: SMS")
    runs = api_a.get(f"{CAMPAIGNS}{campaign.pk}/runs/").json()["results"]
    assert [r["id"] for r in runs] == [run.pk] and sum(runs[0]["progress"].values()) == len(rows)


# --- the composer ----------------------------------------------------------------------------------------
def url(name: str, tenant: Any, **kwargs: Any) -> str:
    return reverse(f"campaigns:{name}", kwargs={"tenant_slug": tenant.slug, **kwargs})


BASICS = {
    "name": "Composed", "description": "", "purpose": "marketing", "goal_event": "purchase",
    "attribution_window_hours": "72", "cost": "0", "throttle_per_minute": "0",
}  # fmt: skip


def test_the_composer_creates_a_preferred_channel_campaign_and_asks_for_each_channels_message(
    shop, alice_client: Client
):
    tenant = shop["tenant"]
    page = alice_client.get(url("create", tenant))
    assert 'data-testid="preferred-channel"' in page.content.decode()
    response = alice_client.post(
        url("create", tenant),
        {**BASICS, "channel": "preferred", "preferred_channels": ["email", "sms"], "preferred_first": "sms"},
    )
    campaign = Campaign.objects.get(name="Composed")
    assert response.status_code == 302
    assert (campaign.channel, campaign.preferred_channel, campaign.preferred_channels) == (
        "sms",
        True,
        ["sms", "email"],
    )
    again = alice_client.get(url("basics", tenant, campaign_id=campaign.pk))
    assert again.context["form"].initial["channel"] == "preferred"

    form = alice_client.get(url("variant_create", tenant, campaign_id=campaign.pk))
    assert {"subject", "html_body", "sms_body"} <= set(form.context["form"].fields)
    assert "push_title" not in form.context["form"].fields
    assert form.content.decode().count('data-testid="content-channel"') == 2
    variant = {"name": "Everyone", "target": "default", "weight": "100", "subject": "Hi", "html_body": "<p>Hi</p>"}
    missing = alice_client.post(url("variant_create", tenant, campaign_id=campaign.pk), variant)
    assert missing.status_code == 400
    assert missing.context["form"].errors["sms_body"] == ["SMS: Write the message."]
    saved = alice_client.post(url("variant_create", tenant, campaign_id=campaign.pk), {**variant, "sms_body": "Hi!"})
    assert saved.status_code == 302 and Variant.objects.get(campaign=campaign).sms_body == "Hi!"
    # The preview renders the channel asked for.
    preview = alice_client.post(
        url("preview", tenant, campaign_id=campaign.pk),
        {**variant, "sms_body": "Hi!", "channel": "email", "preview_contact": shop["people"]["quiet"][0].email},
    )
    assert preview.status_code == 200 and preview.context["preview"].channel == "email"
    sms = alice_client.post(
        url("preview", tenant, campaign_id=campaign.pk),
        {**variant, "sms_body": "Hi!", "channel": "sms", "preview_contact": shop["people"]["quiet"][0].email},
    )
    assert 'data-testid="preview-sms"' in sms.content.decode()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"channel": "preferred", "preferred_channels": ["email"]}, "preferred_channels"),
        (
            {"channel": "preferred", "preferred_channels": ["email", "sms"], "preferred_first": "push"},
            "preferred_first",
        ),
        ({"channel": "preferred", "preferred_channels": ["email", "webhook"]}, "preferred_channels"),
        ({"channel": "telegram"}, "channel"),
    ],
)
def test_the_composer_shows_bad_channel_settings_on_the_form(shop, alice_client: Client, data: dict, field: str):
    response = alice_client.post(url("create", shop["tenant"]), {**BASICS, **data})
    assert response.status_code == 400 and field in response.context["form"].errors
    assert not Campaign.objects.filter(name="Composed").exists()


def test_a_sent_campaign_keeps_how_it_chose_its_channel(shop):
    campaign = preferred_campaign(shop, ["email", "sms"])
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)
    campaign.refresh_from_db()
    with pytest.raises(ValidationError) as error:
        services.campaign_update(campaign=campaign, actor=ACTOR, data={"preferred_channel": False})
    assert "Only a draft" in error.value.message_dict["preferred_channel"][0]


def test_the_admin_saves_the_preferred_channel_and_refuses_a_bad_one(shop, world: World):
    from campaigns.admin import CampaignAdminForm

    base = {
        "tenant": shop["tenant"].pk, "name": "Admin", "channel": "sms", "purpose": "marketing", "goal_event": "",
        "attribution_window_hours": 120, "cost": 0, "throttle_per_minute": 0, "schedule": "now",
        "preferred_channel": True,
    }  # fmt: skip
    form = CampaignAdminForm(data={**base, "preferred_channels": '["email", "sms"]'})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["channel"] == "email"
    bad = CampaignAdminForm(data={**base, "preferred_channels": '["email", "webhook"]'})
    assert not bad.is_valid() and "preferred_channels" in bad.errors


def test_the_campaign_list_shows_the_campaign_and_not_its_siblings(shop, alice_client: Client):
    campaign = preferred_campaign(shop, ["email", "sms"])
    run_start(campaign=campaign)
    listed = alice_client.get(url("list", shop["tenant"])).content.decode()
    assert "Summer sale" in listed and "Preferred channel: Email, SMS" in listed
    assert "preferred channel: SMS" not in listed  # the sibling's name
