"""A journey's send step on each contact's preferred channel: the config validated, the content asked for
each channel, the engine's batch choosing each contact's channel in one statement (sibling runs for the
other channels), sending through the campaign pipeline, the API and the step editor."""

# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from analytics.preferred_channel import channel_profiles_compute
from campaigns.models import Campaign, CampaignRun, ChannelConfig, Delivery
from campaigns.sending import run_add_contacts, run_family
from campaigns.tasks import send_run
from journeys.engine import enroll
from journeys.models import EnrollmentStep, Journey, Step
from journeys.services import JourneyInvalid, journey_create, journey_problems, journey_start
from journeys.validation import StepSpec, step_problems
from segments.rules import Registry
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.analytics.preferred_channel_data import EXPECTED, PUSH_KINDS, engagement_world
from tests.campaigns.test_channels import SMS_PATH, Reply, provider  # noqa: F401
from tests.campaigns.test_sending_channels import sms_config
from tests.conftest import World
from tests.journeys.conftest import walk

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
NOW = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)  # a weekday afternoon in Berlin: no quiet hours
CONTENT = {"variants": [{"name": "All", "target": "default", "subject": "Hi {{ contact.first_name }}",
                         "html_body": "<p>Hello</p>", "sms_body": "Hi {{ contact.first_name }}: 20% off"}]}  # fmt: skip
JOURNEYS = "/api/v1/journeys/"


def send(key: str, channels: Any, content: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"key": key, "kind": "send", "config": {"channel": "preferred", "channels": channels},
            "exits": {"next": None}, "content": content or CONTENT}  # fmt: skip


def problems_of(config: dict[str, Any], tenant: Any) -> list[tuple[str, str]]:
    spec = StepSpec(key="s1", kind="send", config=config, exits={"next": None})
    return [(p.field, p.message) for p in step_problems(spec, Registry.for_tenant(tenant))]


@pytest.fixture
def shop(world: World):
    tenant = world.tenant_a
    with time_machine.travel(NOW, tick=True), tenant_context(tenant.id):
        tenant.default_sender_email = "news@shop.example"
        tenant.time_zone = "Europe/Berlin"
        tenant.frequency_cap_messages = 0  # the generated history would reach it
        tenant.save()
        people = engagement_world(tenant, NOW)
        channel_profiles_compute(tenant=tenant, now=NOW)
        yield {"tenant": tenant, "people": people}


def test_the_step_config_is_validated(world: World):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        assert problems_of({"channel": "preferred", "channels": ["email", "sms"]}, tenant) == []
        assert problems_of({"channel": "preferred", "channels": ["email", "push", "sms"]}, tenant) == []
        for channels, words in [
            (["email"], "at least two"), (["email", "webhook"], "a webhook reaches a system"),
            (["sms", "sms"], "once"), (None, "A list of channels"), ("email", "A list of channels"),
        ]:  # fmt: skip
            [(field, message)] = problems_of({"channel": "preferred", "channels": channels}, tenant)
            assert field == "config.channels" and words in message
        [(field, message)] = problems_of({"channel": "fax"}, tenant)
        assert field == "config.channel" and "preferred" in message


def test_a_journey_starts_only_with_each_channels_message(shop):
    tenant = shop["tenant"]
    only_email = {"variants": [{"name": "All", "target": "default", "subject": "Hi", "html_body": "<p>Hi</p>"}]}
    journey = journey_create(
        tenant=tenant, actor=ACTOR,
        data={"name": "J", "trigger": "event", "trigger_event": "signup", "steps": [send("s1", ["email", "sms"],
                                                                                          only_email)]},
    )  # fmt: skip
    assert [(p.step, p.field, p.message) for p in journey_problems(journey=journey)] == [
        ("s1", "variants", "Variant “All” (SMS): Write the message.")
    ]
    with pytest.raises(JourneyInvalid):
        journey_start(journey=journey, actor=ACTOR)
    campaign = Step.objects.get(version__journey=journey, key="s1").campaign
    assert (campaign.channel, campaign.preferred_channel, campaign.preferred_channels) == (
        "email",
        True,
        ["email", "sms"],
    )


def test_the_engine_sends_each_contact_on_their_channel_through_the_pipeline(shop, provider, smtp):
    provider.route(SMS_PATH, lambda request: Reply.json(201, {"sid": f"SM{len(provider.requests)}"}))
    tenant = shop["tenant"]
    sms_config(tenant, provider)
    journey = journey_create(
        tenant=tenant, actor=ACTOR,
        data={"name": "J", "trigger": "event", "trigger_event": "signup", "steps": [send("s1", ["sms", "email"])]},
    )  # fmt: skip
    journey = journey_start(journey=journey, actor=ACTOR)
    everyone = [c for contacts in shop["people"].values() for c in contacts]
    at = dt.datetime.now(tz=dt.UTC)
    with tenant_context(tenant.id):
        enroll(journey=journey, contact_ids=[c.pk for c in everyone], now=at)
        walk(tenant, at)
        step = Step.objects.get(version=journey.live_version, key="s1")
        [run] = CampaignRun.objects.filter(campaign_id=step.campaign_id)
        rows = {d.contact_id: d for d in Delivery.objects.filter(run_id__in=run_family(run))}
        assert len(rows) == len(everyone)
        for kind, contacts in shop["people"].items():
            expected = EXPECTED[kind]
            if kind in PUSH_KINDS:
                expected = ("email", "most_engaged")
            elif kind in ("quiet", "no_consent"):
                expected = ("sms", expected[1])  # the step's order starts with SMS
            for contact in contacts:
                assert (rows[contact.pk].chosen_channel, rows[contact.pk].channel_reason) == expected, kind
        sibling = Campaign.objects.get(sibling_of_id=step.campaign_id)
        assert sibling.channel == "email" and sibling.kind == "journey"
        # Each walk's history points at the contact's delivery, wherever it went.
        history = dict(EnrollmentStep.objects.filter(step=step).values_list("enrollment__contact_id", "delivery_id"))
        assert history == {pk: d.pk for pk, d in rows.items()}
        for each in run_family(run).values_list("pk", flat=True):
            send_run(tenant.pk, each)
    by_sms = {
        c.phone for c in everyone if rows[c.pk].chosen_channel == "sms" and rows[c.pk].channel_reason != "no_consent"
    }
    texts = {parse_qs(r.body.decode())["To"][0] for r in provider.requests}
    assert texts == by_sms and len(by_sms) == 2 * 3  # the SMS and imported SMS fans, and those who never engaged
    by_email = {c.email for c in everyone if rows[c.pk].chosen_channel == "email"}
    assert {m["To"] for m in smtp.inbox.wait_for(len(by_email))} == by_email


def test_a_later_batch_of_the_same_moment_reuses_the_runs_and_never_sends_twice(shop):
    tenant = shop["tenant"]
    ChannelConfig.objects.create(tenant=tenant, channel="sms", backend=ChannelConfig.Backend.CONSOLE)
    journey = journey_start(
        journey=journey_create(
            tenant=tenant, actor=ACTOR,
            data={"name": "J", "trigger": "event", "trigger_event": "signup", "steps": [send("s1", ["email", "sms"])]},
        ),
        actor=ACTOR,
    )  # fmt: skip
    step = Step.objects.get(version=journey.live_version, key="s1")
    fans = [c.pk for c in shop["people"]["sms_fan"]] + [c.pk for c in shop["people"]["email_fan"]]
    first = run_add_contacts(campaign_id=step.campaign_id, contact_ids=fans[:3], now=NOW)
    again = run_add_contacts(campaign_id=step.campaign_id, contact_ids=fans, now=NOW)
    assert set(first) == set(fans[:3]) and set(again) == set(fans[3:])
    [run] = CampaignRun.objects.filter(campaign_id=step.campaign_id)
    [sibling_run] = CampaignRun.objects.filter(parent=run)
    assert run.audience_size == 4 and sibling_run.audience_size == 2
    assert Delivery.objects.filter(run=sibling_run).count() == 2


# --- the API and the editor -----------------------------------------------------------------------------
def test_the_api_adds_a_preferred_channel_step_and_names_bad_settings(shop, api_a: APIClient):
    body = {"name": "API", "trigger": "event", "trigger_event": "signup", "steps": [send("s1", ["email", "sms"])]}
    created = api_a.post(JOURNEYS, body, format="json")
    assert created.status_code == 201, created.content
    [step] = created.json()["steps"]
    assert step["config"] == {"channel": "preferred", "channels": ["email", "sms"]}
    assert step["content"]["variants"][0]["sms_body"] == CONTENT["variants"][0]["sms_body"]
    bad = api_a.post(JOURNEYS, {**body, "name": "Bad", "steps": [send("s1", ["email", "webhook"])]}, format="json")
    assert bad.status_code == 400 and any("channels" in field for field in bad.json()["error"]["fields"])
    assert not Journey.objects.filter(name="Bad").exists()


def url(name: str, journey: Journey, **kwargs: Any) -> str:
    return reverse(f"journeys:{name}", kwargs={"tenant_slug": journey.tenant.slug, "journey_id": journey.pk, **kwargs})


VARIANT = {
    "variants-TOTAL_FORMS": "1", "variants-INITIAL_FORMS": "0", "variants-0-name": "Everyone",
    "variants-0-target": "default", "variants-0-weight": "100", "variants-0-subject": "Still thinking?",
    "variants-0-html_body": "<p>Hi</p>",
}  # fmt: skip


def test_the_step_editor_chooses_the_channels_and_asks_for_each_message(shop, alice_client: Client):
    tenant = shop["tenant"]
    journey = journey_create(
        tenant=tenant, actor=ACTOR, data={"name": "Edited", "trigger": "event", "trigger_event": "signup"}
    )
    journey.tenant = tenant
    new = url("step_create", journey)
    page = alice_client.get(new, {"kind": "send:preferred", "after": "", "exit": "next"})
    assert page.status_code == 200 and 'data-testid="preferred-channel"' in page.content.decode()
    assert "SMS: Message" in page.content.decode() and "Email: Subject" in page.content.decode()
    place = {"kind": "send", "channel": "preferred", "after": "", "exit": "next"}
    missing = alice_client.post(new, {**place, "channels": ["email", "sms"], **VARIANT})
    assert missing.status_code == 400
    assert "SMS: Write the message." in missing.content.decode()
    # The message is asked for the channels posted (push instead of SMS: the push fields, not the SMS one).
    push = alice_client.post(new, {**place, "channels": ["email", "push"], **VARIANT})
    assert push.status_code == 400 and "Push: A push needs a title, a body or both." in push.content.decode()
    assert "Push: Title" in push.content.decode() and "SMS: Message" not in push.content.decode()
    one = alice_client.post(new, {**place, "channels": ["email"], **VARIANT, "variants-0-sms_body": "Hi"})
    assert one.status_code == 400 and "at least two channels" in one.content.decode()
    saved = alice_client.post(
        new, {**place, "channels": ["email", "sms"], "first": "sms", **VARIANT, "variants-0-sms_body": "Hi"}
    )
    assert saved.status_code == 302, saved.content.decode()
    step = Step.objects.get(version__journey=journey, key="s1")
    assert step.config == {"channel": "preferred", "channels": ["sms", "email"]}
    assert (step.campaign.channel, step.campaign.preferred_channels) == ("sms", ["sms", "email"])
    detail = alice_client.get(reverse("journeys:detail", kwargs={"tenant_slug": tenant.slug, "journey_id": journey.pk}))
    assert "Preferred channel: SMS, Email" in detail.content.decode()
