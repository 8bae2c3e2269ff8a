"""The platform admin for campaigns: inlines checked within the campaign's tenant, templates at their line,
state actions through the services, read-only runs and deliveries, write-only provider secrets."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.db import models
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignAudience,
    CampaignRun,
    ChannelConfig,
    ContactPause,
    Delivery,
    DeliveryFeedback,
    Variant,
)
from contacts.models import Contact
from segments.models import Segment
from segments.services import segment_create
from tenants.admin import PlatformAdmin
from tenants.audit import Actor
from tenants.context import platform_access, tenant_context
from tenants.models import AuditLog, Tenant, User
from tests.conftest import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
MODELS: list[type[models.Model]] = [Campaign, CampaignRun, Delivery, ChannelConfig, DeliveryFeedback, ContactPause]


@pytest.fixture
def staff_client(world: World) -> Client:
    staff = User.objects.create_superuser("staff@segmentor.example", "a-long-password")
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture(autouse=True)
def as_platform():
    """The test itself reads every tenant's rows, as the admin does (row-level security applies to tests too)."""
    with platform_access():
        yield


def admin_url(model: type[models.Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def fill(tenant: Tenant) -> Campaign:
    """A campaign with audience and a variant, a run with deliveries, feedback, a pause and a provider account."""
    with tenant_context(tenant.id):
        segment = segment_create(tenant=tenant, actor=ACTOR, name="Everyone", kind=Segment.Kind.STATIC)
        contacts = [Contact.objects.create(tenant=tenant, email=f"c{i}@{tenant.slug}.example") for i in range(3)]
        campaign = Campaign.objects.create(tenant=tenant, name=f"Newsletter {tenant.name}")
        CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=segment)
        variant = Variant.objects.create(
            tenant=tenant, campaign=campaign, name="All", subject="Hi", html_body="<p>x</p>"
        )
        run = CampaignRun.objects.create(
            tenant=tenant, campaign=campaign, number=1, status="sending", scheduled_for=timezone.now(), audience_size=3
        )
        deliveries = [
            Delivery.objects.create(tenant=tenant, run=run, contact=contact, variant=variant) for contact in contacts
        ]
        Delivery.objects.filter(pk=deliveries[0].pk).update(status="sent", sent_at=timezone.now())
        Delivery.objects.filter(pk=deliveries[1].pk).update(status="skipped", skip_reason="no_consent")
        DeliveryFeedback.objects.create(
            tenant=tenant, delivery=deliveries[0], contact=contacts[0], channel="email", kind="bounce_hard",
            provider="test", provider_event_id=f"ev-{tenant.slug}", occurred_at=timezone.now(),
        )  # fmt: skip
        ContactPause.objects.create(tenant=tenant, contact=contacts[2], until=timezone.now() + dt.timedelta(days=30))
        ChannelConfig.objects.create(
            tenant=tenant, channel="webhook", backend="webhook", secret=f"whsec-{tenant.slug}-do-not-show"
        )
        return campaign


@pytest.fixture
def filled(world: World) -> tuple[Campaign, Campaign]:
    return fill(world.tenant_a), fill(world.tenant_b)


def campaign_form(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    """The add/change form of a campaign with no inline rows, as a browser posts it."""
    data: dict[str, Any] = {
        "tenant": tenant.pk, "name": "Admin campaign", "description": "", "channel": "email", "purpose": "marketing",
        "goal_event": "purchase", "attribution_window_hours": 120, "cost": "0", "throttle_per_minute": 0,
        "schedule": "now", "send_at_0": "", "send_at_1": "", "crontab": "", "local_time": "", "sender_name": "",
        "sender_email": "", "reply_to": "", "sms_sender": "", "webhook_url": "",
        "audience-TOTAL_FORMS": 0, "audience-INITIAL_FORMS": 0, "audience-MIN_NUM_FORMS": 0,
        "audience-MAX_NUM_FORMS": 1000,
        "variants-TOTAL_FORMS": 0, "variants-INITIAL_FORMS": 0, "variants-MIN_NUM_FORMS": 0,
        "variants-MAX_NUM_FORMS": 1000,
    }  # fmt: skip
    return {**data, **changes}


def variant_row(index: int, **fields: Any) -> dict[str, Any]:
    row = {
        "name": "All", "position": index, "target": "default", "target_segment": "", "target_stage": "",
        "weight": 100, "subject": "Hello", "preheader": "", "html_body": "<p>Hi</p>", "text_body": "",
        "sms_body": "", "push_title": "", "push_body": "", "push_deep_link": "", "webhook_payload": "",
        "cta_label": "", "cta_url": "", **fields,
    }  # fmt: skip
    return {f"variants-{index}-{key}": value for key, value in row.items()}


def test_every_campaigns_model_is_registered_with_the_platform_admin():
    for model in MODELS:
        assert isinstance(site._registry[model], PlatformAdmin), model


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_changelists_and_change_pages_render_every_tenants_rows(
    world: World, staff_client: Client, filled, model: type[models.Model], django_assert_max_num_queries
):
    with django_assert_max_num_queries(25):
        changelist = staff_client.get(admin_url(model, "changelist"))
    assert changelist.status_code == 200
    assert {row.tenant_id for row in changelist.context["cl"].result_list} == {world.tenant_a.id, world.tenant_b.id}
    row = model.all_tenants.order_by("pk").first()  # type: ignore[attr-defined]
    page = staff_client.get(admin_url(model, "change", row.pk))
    assert page.status_code == 200
    assert b"do-not-show" not in page.content


def test_deliveries_filter_by_status_and_skip_reason_without_counting_the_table(
    world: World, staff_client: Client, filled
):
    response = staff_client.get(
        admin_url(Delivery, "changelist") + "?status__exact=skipped&skip_reason__exact=no_consent"
    )
    rows = response.context["cl"].result_list
    assert len(rows) == 2 and {row.skip_reason for row in rows} == {"no_consent"}
    assert response.context["cl"].show_full_result_count is False
    assert staff_client.get(admin_url(Delivery, "add")).status_code == 403
    delivery = Delivery.all_tenants.order_by("pk").first()
    assert staff_client.post(admin_url(Delivery, "change", delivery.pk), {"status": "sent"}).status_code == 403


def test_a_run_shows_its_progress(world: World, staff_client: Client, filled):
    run = CampaignRun.all_tenants.get(tenant=world.tenant_a)
    body = staff_client.get(admin_url(CampaignRun, "change", run.pk)).content.decode()
    assert "2 of 3 settled" in body and "pending 1" in body and "sent 1" in body and "skipped 1" in body


def test_a_template_error_is_shown_at_its_line_and_nothing_is_saved(world: World, staff_client: Client, filled):
    broken = "<p>Hello</p>\n<p>{{ contact.first_name </p>"
    data = campaign_form(world.tenant_a, **{"variants-TOTAL_FORMS": 1}, **variant_row(0, html_body=broken))
    response = staff_client.post(admin_url(Campaign, "add"), data)
    assert response.status_code == 200
    errors = [
        str(e)
        for form in response.context["inline_admin_formsets"][1].formset.forms
        for e in form.errors.get("html_body", [])
    ]
    assert len(errors) == 1 and errors[0].startswith("Line 2:"), errors
    assert "Line 2:" in response.content.decode()
    assert not Campaign.all_tenants.filter(name="Admin campaign").exists()


def test_adding_a_campaign_saves_inlines_in_its_tenant(world: World, staff_client: Client, filled):
    segment_a = Segment.all_tenants.get(tenant=world.tenant_a)
    data = campaign_form(
        world.tenant_a, **{"variants-TOTAL_FORMS": 1, "audience-TOTAL_FORMS": 1, "audience-0-segment": segment_a.pk},
        **variant_row(0, subject="Hi {{ contact.first_name }}"),
    )  # fmt: skip
    response = staff_client.post(admin_url(Campaign, "add"), data)
    assert response.status_code == 302, response.context and response.context["errors"]
    campaign = Campaign.all_tenants.get(name="Admin campaign")
    assert campaign.tenant_id == world.tenant_a.id and campaign.status == "draft"
    assert list(CampaignAudience.all_tenants.filter(campaign=campaign).values_list("tenant_id", "segment_id")) == [
        (world.tenant_a.id, segment_a.pk)
    ]
    assert Variant.all_tenants.get(campaign=campaign).tenant_id == world.tenant_a.id
    assert AuditLog.all_tenants.filter(tenant=world.tenant_a, action="campaign.created", object_id=str(campaign.pk))


def test_a_segment_of_another_tenant_is_refused_in_the_inline(world: World, staff_client: Client, filled):
    segment_b = Segment.all_tenants.get(tenant=world.tenant_b)
    data = campaign_form(world.tenant_a, **{"audience-TOTAL_FORMS": 1, "audience-0-segment": segment_b.pk})
    response = staff_client.post(admin_url(Campaign, "add"), data)
    assert response.status_code == 200
    assert f"No segment with id {segment_b.pk} in this workspace." in response.content.decode()
    assert not Campaign.all_tenants.filter(name="Admin campaign").exists()


def test_a_bad_crontab_and_a_past_send_at_are_form_errors(world: World, staff_client: Client, filled):
    response = staff_client.post(
        admin_url(Campaign, "add"), campaign_form(world.tenant_a, schedule="recurring", crontab="0 9 * *")
    )
    assert "Five fields" in " ".join(response.context["adminform"].form.errors["crontab"])
    response = staff_client.post(
        admin_url(Campaign, "add"),
        campaign_form(world.tenant_a, schedule="at", send_at_0="2020-01-01", send_at_1="09:00:00"),
    )
    assert response.context["adminform"].form.errors["send_at"] == ["Must be in the future."]


def test_a_sent_campaign_is_read_only(world: World, staff_client: Client, filled):
    campaign, _ = filled
    Campaign.all_tenants.filter(pk=campaign.pk).update(status="sent")
    page = staff_client.get(admin_url(Campaign, "change", campaign.pk))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    response = staff_client.post(admin_url(Campaign, "change", campaign.pk), campaign_form(world.tenant_a))
    assert response.status_code == 403
    assert Campaign.all_tenants.get(pk=campaign.pk).name != "Admin campaign"


def test_pause_and_cancel_actions_go_through_the_services(world: World, staff_client: Client, filled):
    campaign_a, campaign_b = filled
    Campaign.all_tenants.filter(pk=campaign_a.pk).update(status="sending")
    response = staff_client.post(
        admin_url(Campaign, "changelist"),
        {"action": "pause_campaigns", "_selected_action": [campaign_a.pk, campaign_b.pk]},
        follow=True,
    )
    notes = [str(m) for m in response.context["messages"]]
    assert "Paused 1 campaign(s)." in notes
    assert any(note.startswith(f"Left {campaign_b.name}: A draft campaign cannot be paused") for note in notes)
    assert Campaign.all_tenants.get(pk=campaign_a.pk).status == "paused"
    assert CampaignRun.all_tenants.get(campaign=campaign_a).status == "paused"
    assert AuditLog.all_tenants.filter(tenant=world.tenant_a, action="campaign.paused").exists()

    staff_client.post(
        admin_url(Campaign, "changelist"), {"action": "cancel_campaigns", "_selected_action": [campaign_a.pk]}
    )
    assert Campaign.all_tenants.get(pk=campaign_a.pk).status == "cancelled"
    assert not Delivery.all_tenants.filter(run__campaign=campaign_a, status="pending").exists()


def test_a_provider_secret_is_write_only_and_settings_are_checked(world: World, staff_client: Client, filled):
    config = ChannelConfig.all_tenants.get(tenant=world.tenant_a)
    page = staff_client.get(admin_url(ChannelConfig, "change", config.pk)).content.decode()
    assert 'type="password"' in page and "whsec-" not in page

    form = {"tenant": world.tenant_a.pk, "channel": "webhook", "backend": "webhook", "settings": "{}", "secret": ""}
    assert staff_client.post(admin_url(ChannelConfig, "change", config.pk), form).status_code == 302
    assert ChannelConfig.all_tenants.get(pk=config.pk).secret == f"whsec-{world.tenant_a.slug}-do-not-show"
    cleared = staff_client.post(admin_url(ChannelConfig, "change", config.pk), {**form, "clear_secret": "on"})
    assert "Required for the webhook backend (the signing secret)." in cleared.content.decode()

    sms = {"tenant": world.tenant_a.pk, "channel": "sms", "backend": "twilio", "settings": '{"account_sid": "AC1"}'}
    refused = staff_client.post(admin_url(ChannelConfig, "add"), sms).content.decode()
    assert "settings.base_url: Required for the twilio backend." in refused
    assert "Required for the twilio backend (the auth token)." in refused
    settings_ = '{"account_sid": "AC1", "base_url": "https://api.example.com", "sender": "Shop"}'
    added = staff_client.post(admin_url(ChannelConfig, "add"), {**sms, "settings": settings_, "secret": "tok"})
    assert added.status_code == 302
    saved = ChannelConfig.all_tenants.get(tenant=world.tenant_a, channel="sms")
    assert saved.secret == "tok" and saved.settings["sender"] == "Shop"
    assert AuditLog.all_tenants.filter(tenant=world.tenant_a, action="channel_config.saved").count() == 2


def test_tenant_members_are_not_let_into_the_campaigns_admin(world: World, alice_client: Client, filled):
    response = alice_client.get(admin_url(Campaign, "changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
