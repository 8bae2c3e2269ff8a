"""The campaign pages: list, the composer's steps, live count, preview, test send, schedule, review,
the campaign page's actions, progress and delivery log, permissions and tenant isolation."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.models import Campaign, CampaignAudience, CampaignRun, Delivery, Variant
from campaigns.sending import run_start
from contacts.consent import ConsentEvidence, consent_change, suppression_add
from contacts.models import Contact, Suppression
from segments.models import Segment
from segments.services import segment_create, segment_refresh, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog, Tenant
from tests.conftest import World

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")
API = ConsentEvidence(source="api")
EVERYONE = {"all": [{"type": "field", "field": "email", "op": "is_set"}]}
GERMANS = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}


# --- helpers -----------------------------------------------------------------------------------
def url(name: str, campaign: Campaign | None = None, *, tenant: Tenant | None = None, **kwargs: Any) -> str:
    if campaign is not None:
        kwargs["campaign_id"] = campaign.pk
        tenant = tenant or campaign.tenant
    assert tenant is not None
    return reverse(f"campaigns:{name}", kwargs={"tenant_slug": tenant.slug, **kwargs})


def text(response: Any) -> str:
    return response.content.decode()


def reload(obj: Any) -> Any:
    with tenant_context(obj.tenant_id):
        return type(obj).objects.get(pk=obj.pk)


def person(tenant: Tenant, email: str, *, consent: bool = True, **extra: Any) -> Contact:
    contact = Contact.objects.create(tenant=tenant, email=email, first_name=email.split("@")[0].title(), **extra)
    if consent:
        consent_change(
            contact=contact, channel="email", purpose="marketing", status="granted", evidence=API, actor=SYSTEM
        )
    return contact


@pytest.fixture
def shop(world: World) -> dict[str, Any]:
    """Tenant A: five people with email (one without consent, one suppressed), two segments, a blocklist."""
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        tenant.default_sender_email = "news@shop.example"
        tenant.time_zone = "Europe/Berlin"
        tenant.save()
        people = {
            "ann": person(tenant, "ann@example.com", country="DE", lifecycle_stage="lead"),
            "ben": person(tenant, "ben@example.com", country="DE"),
            "cid": person(tenant, "cid@example.com", consent=False),
            "dan": person(tenant, "dan@example.com"),
            "eve": person(tenant, "eve@example.com"),
        }
        suppression_add(tenant=tenant, channel="email", address="dan@example.com", reason=Suppression.Reason.MANUAL)
        everyone = segment_create(tenant=tenant, actor=SYSTEM, name="Everyone with email", rules=EVERYONE)
        germans = segment_create(tenant=tenant, actor=SYSTEM, name="Germans", rules=GERMANS)
        for segment in (everyone, germans):
            segment_refresh(segment=segment)
        blocklist = segment_create(tenant=tenant, actor=SYSTEM, name="Do not mail", kind=Segment.Kind.STATIC)
        static_members_add(segment=blocklist, actor=SYSTEM, contact_ids=[people["eve"].pk])
    return {"tenant": tenant, "people": people, "everyone": everyone, "germans": germans, "blocklist": blocklist}


def draft(shop: dict[str, Any], *, name: str = "Spring sale", audience: bool = True, **fields: Any) -> Campaign:
    tenant = shop["tenant"]
    with tenant_context(tenant.id):
        campaign = Campaign.objects.create(tenant=tenant, name=name, **fields)
        if audience:
            CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=shop["everyone"])
            CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=shop["blocklist"], exclude=True)
        if campaign.channel == "email":
            Variant.objects.create(
                tenant=tenant, campaign=campaign, name="Everyone", target=Variant.Target.DEFAULT,
                subject='Hi {{ contact.first_name | default: "there" }}',
                html_body='<p>Hello {{ contact.first_name }}</p><p><a href="{{ cta.url }}">{{ cta.label }}</a></p>',
                cta_label="Buy now", cta_url="https://shop.example/sale",
            )  # fmt: skip
    campaign.tenant = tenant
    return campaign


EMAIL_VARIANT = {
    "name": "Leads",
    "target": "stage",
    "target_stage": "lead",
    "weight": "100",
    "subject": "Hi {{ contact.first_name }}",
    "preheader": "",
    "html_body": "<p>Hello {{ contact.first_name }}</p>",
    "text_body": "",
    "cta_label": "Start free trial",
    "cta_url": "https://shop.example/trial",
}


# --- list ----------------------------------------------------------------------------------------
def test_the_list_shows_each_campaign_with_its_last_run_and_filters(
    world: World, alice_client: Client, shop, django_assert_max_num_queries
):
    sale = draft(shop)
    draft(shop, name="Autumn SMS", channel="sms", audience=False)
    with tenant_context(world.tenant_b.id):
        Campaign.objects.create(tenant=world.tenant_b, name="B's secret campaign")
    with tenant_context(sale.tenant_id):
        run = run_start(campaign=sale)
        Delivery.objects.filter(run=run, contact=shop["people"]["ann"]).update(status="sent", sent_at=timezone.now())
    with django_assert_max_num_queries(15):
        response = alice_client.get(url("list", tenant=world.tenant_a))
    assert response.status_code == 200
    body = text(response)
    assert "B's secret campaign" not in body
    rows = {row["campaign"].name: row for row in response.context["rows"]}
    assert set(rows) == {"Spring sale", "Autumn SMS"}
    assert rows["Spring sale"]["run"].pk == run.pk
    assert rows["Spring sale"]["sent"] == 1 and rows["Spring sale"]["audience_size"] == 4  # eve is excluded
    assert "1 / 4" in body and f"#{run.number}" in body
    assert rows["Autumn SMS"]["run"] is None and "never" in body

    only_sms = alice_client.get(url("list", tenant=world.tenant_a), {"channel": "sms"})
    assert [r["campaign"].name for r in only_sms.context["rows"]] == ["Autumn SMS"]
    sending = alice_client.get(url("list", tenant=world.tenant_a), {"status": "sending"})
    assert [r["campaign"].name for r in sending.context["rows"]] == ["Spring sale"]
    searched = alice_client.get(url("list", tenant=world.tenant_a), {"q": "autumn"}, HTTP_HX_REQUEST="true",
                                HTTP_HX_TARGET="campaign-results")  # fmt: skip
    assert [r["campaign"].name for r in searched.context["rows"]] == ["Autumn SMS"]
    assert "<html" not in text(searched)  # the fragment only
    bad = alice_client.get(url("list", tenant=world.tenant_a), {"status": "exploded"})
    assert bad.status_code == 400 and "Select a valid choice" in text(bad)


# --- step 1: basics ------------------------------------------------------------------------------
def test_create_a_draft_then_go_back_and_forth_keeping_the_data(world: World, alice_client: Client, shop):
    basics = {
        "name": "Welcome", "description": "", "channel": "email", "purpose": "marketing", "goal_event": "purchase",
        "attribution_window_hours": "72", "cost": "120.50", "throttle_per_minute": "0",
    }  # fmt: skip
    assert alice_client.get(url("create", tenant=world.tenant_a)).status_code == 200
    response = alice_client.post(url("create", tenant=world.tenant_a), {**basics, "go": "next"})
    with tenant_context(world.tenant_a.id):
        campaign = Campaign.objects.get(name="Welcome")
    assert response.status_code == 302 and response["Location"] == url("audience", campaign)
    assert campaign.status == "draft" and campaign.created_by == world.alice and str(campaign.cost) == "120.50"

    # The audience step saves, and "back" returns to the basics with what was saved.
    response = alice_client.post(
        url("audience", campaign), {"include": [shop["germans"].pk], "exclude": [], "go": "prev"}
    )
    assert response["Location"] == url("basics", campaign)
    page = alice_client.get(url("basics", campaign))
    assert page.context["form"].initial["attribution_window_hours"] == 72
    again = alice_client.get(url("audience", campaign))
    assert again.context["form"].initial["include"] == [shop["germans"].pk]
    assert again.context["estimate"].total == 2  # the saved audience is counted in the page (no JavaScript needed)

    # Leave the draft, then resume it from the list.
    response = alice_client.post(url("basics", campaign), {**basics, "name": "Welcome series", "go": "leave"})
    assert response["Location"] == url("detail", campaign)
    listed = text(alice_client.get(url("list", tenant=world.tenant_a)))
    assert "Welcome series" in listed and url("basics", campaign) in listed
    with tenant_context(world.tenant_a.id):
        assert AuditLog.objects.filter(action="campaign.created", object_id=str(campaign.pk)).exists()


def test_basics_errors_are_shown_on_the_form(world: World, alice_client: Client, shop):
    response = alice_client.post(
        url("create", tenant=world.tenant_a),
        {"name": "", "channel": "pigeon", "purpose": "marketing", "attribution_window_hours": "0", "cost": "-1",
         "throttle_per_minute": "0"},
    )  # fmt: skip
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert set(errors) >= {"name", "channel", "attribution_window_hours", "cost"}
    with tenant_context(world.tenant_a.id):
        assert not Campaign.objects.exists()


# --- step 2: audience and the live count -------------------------------------------------------
def test_the_live_count_shows_the_exclusions_and_saves_nothing(world: World, alice_client: Client, shop):
    campaign = draft(shop, audience=False)
    selection = {"include": [shop["everyone"].pk], "exclude": [shop["blocklist"].pk]}
    response = alice_client.post(url("estimate", campaign), selection)
    assert response.status_code == 200
    estimate = response.context["estimate"]
    # ann, ben, cid, dan (eve is on the blocklist); cid has no consent, dan is suppressed.
    assert (estimate.total, estimate.no_consent, estimate.suppressed, estimate.sendable) == (4, 1, 1, 2)
    body = text(response)
    assert re.search(r'data-testid="estimate-sendable">2<', body)
    assert re.search(r'data-testid="estimate-no-consent">−1<', body)
    with tenant_context(world.tenant_a.id):
        assert not CampaignAudience.objects.filter(campaign=campaign).exists()  # counted, rolled back

    alice_client.post(url("audience", campaign), {**selection, "go": "next"})
    with tenant_context(world.tenant_a.id):
        saved = {(a.segment_id, a.exclude) for a in CampaignAudience.objects.filter(campaign=campaign)}
    assert saved == {(shop["everyone"].pk, False), (shop["blocklist"].pk, True)}
    germans_only = alice_client.post(url("estimate", campaign), {"include": [shop["germans"].pk]})
    assert germans_only.context["estimate"].total == 2


def test_a_segment_cannot_be_included_and_excluded(world: World, alice_client: Client, shop):
    campaign = draft(shop, audience=False)
    both = {"include": [shop["germans"].pk], "exclude": [shop["germans"].pk]}
    response = alice_client.post(url("audience", campaign), both)
    assert response.status_code == 400 and "both included and excluded: Germans" in text(response)
    assert alice_client.post(url("estimate", campaign), both).status_code == 400
    with tenant_context(world.tenant_b.id):
        other = segment_create(tenant=world.tenant_b, actor=SYSTEM, name="B's", rules=GERMANS)
    response = alice_client.post(url("audience", campaign), {"include": [other.pk]})
    assert response.status_code == 400 and "Select a valid choice" in text(response)


# --- step 3: content -----------------------------------------------------------------------------
def test_a_template_error_is_shown_at_its_line_and_nothing_is_saved(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    broken = {**EMAIL_VARIANT, "html_body": "<p>Hello</p>\n{% if contact.first_name %}\n<p>no end</p>"}
    response = alice_client.post(url("variant_create", campaign), broken)
    assert response.status_code == 400
    [error] = response.context["form"].errors["html_body"]
    assert error == "At the end (line 3): expected tag endif, found end of expression"
    assert "At the end (line 3)" in text(response)
    unclosed = alice_client.post(
        url("variant_create", campaign), {**EMAIL_VARIANT, "subject": "Hi\n{{ contact.first_name"}
    )
    assert unclosed.context["form"].errors["subject"] == ["Line 2: expected '}}', found end of file"]
    with tenant_context(world.tenant_a.id):
        assert not Variant.objects.filter(campaign=campaign, name="Leads").exists()
    missing = alice_client.post(url("variant_create", campaign), {**EMAIL_VARIANT, "subject": "", "target_stage": ""})
    assert set(missing.context["form"].errors) >= {"subject", "target_stage"}


def test_unknown_variables_are_warned_and_the_variant_is_saved_before_the_default(
    world: World, alice_client: Client, shop
):
    campaign = draft(shop)
    data = {**EMAIL_VARIANT, "subject": "Hi {{ contact.nickname }}", "go": "content"}
    response = alice_client.post(url("variant_create", campaign), data, follow=True)
    assert response.status_code == 200
    body = text(response)
    assert "Unknown variable: {{ contact.nickname }} renders empty." in body
    with tenant_context(world.tenant_a.id):
        order = list(Variant.objects.filter(campaign=campaign).order_by("position").values_list("name", flat=True))
    assert order == ["Leads", "Everyone"]  # the default catches the rest, so it stays last

    # Move up and down: the order is editable, the default stays last.
    germans = {**data, "name": "Germans", "target": "segment", "target_segment": shop["germans"].pk, "subject": "Hallo"}
    alice_client.post(url("variant_create", campaign), germans)
    with tenant_context(world.tenant_a.id):
        leads = Variant.objects.get(campaign=campaign, name="Leads")
        order = list(Variant.objects.filter(campaign=campaign).order_by("position").values_list("name", flat=True))
    assert order == ["Leads", "Germans", "Everyone"]
    alice_client.post(url("variant_move", campaign, variant_id=leads.pk), {"direction": "down"})
    with tenant_context(world.tenant_a.id):
        order = list(Variant.objects.filter(campaign=campaign).order_by("position").values_list("name", flat=True))
    assert order == ["Germans", "Leads", "Everyone"]
    assert (
        alice_client.post(url("variant_move", campaign, variant_id=leads.pk), {"direction": "sideways"}).status_code
        == 302
    )


def test_sms_length_warning_and_limit(world: World, alice_client: Client, shop):
    campaign = draft(shop, channel="sms", audience=False)
    long = {"name": "Everyone", "target": "default", "weight": "100", "sms_body": "Sale! " * 30, "go": "content"}
    response = alice_client.post(url("variant_create", campaign), long, follow=True)
    assert "sent as 2 SMS segments" in text(response)
    with tenant_context(world.tenant_a.id):
        assert Variant.objects.filter(campaign=campaign, name="Everyone").exists()
    too_long = {**long, "name": "Novel", "sms_body": "x" * 2000}
    response = alice_client.post(url("variant_create", campaign), too_long)
    assert response.status_code == 400 and "Too long: 14 segments" in text(response)
    # The live count in the preview: one emoji makes it UCS-2.
    response = alice_client.post(url("preview", campaign), {**long, "sms_body": "Hi 😀"})
    assert response.context["sms_length"] == ("UCS-2", 5, 1)
    assert "5 characters · UCS-2 · 1 segment" in text(response)


def test_the_cta_is_suggested_by_stage(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    content = text(alice_client.get(url("content", campaign)))
    assert f'{url("variant_create", campaign)}?stage=lead">Lead</a>' in content
    page = alice_client.get(url("variant_create", campaign), {"stage": "lead"})
    assert page.context["suggested_cta"] == "Start free trial"
    assert page.context["cta_by_stage"]["new_visitor"] == "Learn more"
    assert page.context["cta_by_stage"]["first_time_buyer"] == "Buy now"
    assert 'id="cta-by-stage"' in text(page)


def test_the_preview_renders_the_unsaved_variant_as_the_chosen_contact(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    data = {**EMAIL_VARIANT, "subject": "Hi {{ contact.first_name }}, {{ contact.shoe_size }}"}
    response = alice_client.post(url("preview", campaign), {**data, "preview_contact": "ben@example.com"})
    assert response.status_code == 200
    preview = response.context["preview"]
    assert preview.subject == "Hi Ben,"
    assert "Hello Ben" in preview.html
    body = text(response)
    assert "Preview as Ben" in body and "Unknown variable: {{ contact.shoe_size }}" in body
    # By id, and an unknown contact is an error in the fragment, not a 500.
    ann = shop["people"]["ann"]
    by_id = alice_client.post(url("preview", campaign), {**data, "preview_contact": str(ann.pk)})
    assert by_id.context["preview"].subject == "Hi Ann,"
    with tenant_context(world.tenant_b.id):
        stranger = Contact.objects.create(tenant=world.tenant_b, email="zed@b.example", first_name="Zed")
    for who in ("nobody@example.com", str(stranger.pk)):
        response = alice_client.post(url("preview", campaign), {**data, "preview_contact": who})
        assert response.status_code == 400 and "No contact with this id or email." in text(response)
    broken = alice_client.post(url("preview", campaign), {**data, "subject": "{{ contact.first_name "})
    assert "preview" not in broken.context and "Subject" in text(broken)


def test_the_email_html_is_framed_with_a_policy_of_its_own(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    data = {**EMAIL_VARIANT, "html_body": '<p style="color: red">Hello {{ contact.first_name }}</p>'}
    response = alice_client.post(url("email_frame", campaign), {**data, "preview_contact": "ben@example.com"})
    assert response.status_code == 200
    body = text(response)
    assert '<p style="color: red">Hello Ben</p>' in body
    policy = response["Content-Security-Policy"]
    assert "style-src 'unsafe-inline'" in policy and "script-src 'none'" in policy and "sandbox" in policy
    assert "frame-ancestors 'self'" in policy and response["X-Frame-Options"] == "SAMEORIGIN"
    # The pages themselves keep the strict policy.
    page = alice_client.get(url("variant_create", campaign))
    assert "unsafe-inline" not in page["Content-Security-Policy"]
    broken = alice_client.post(url("email_frame", campaign), {**data, "html_body": "{% if %}"})
    assert broken.status_code == 200 and "Hello" not in text(broken)


def test_send_a_test_to_yourself_reaches_the_smtp_server(world: World, alice_client: Client, shop, smtp):
    campaign = draft(shop)
    with tenant_context(world.tenant_a.id):
        variant = Variant.objects.get(campaign=campaign)
    data = {
        **EMAIL_VARIANT,
        "variant_id": str(variant.pk),
        "preview_contact": "ann@example.com",
        "to": "x@evil.example",
    }
    response = alice_client.post(url("send_test", campaign), data)
    assert response.status_code == 200, text(response)
    assert f"Test sent to {world.alice.email}" in text(response)
    [message] = smtp.inbox.wait_for(1)
    assert message["To"] == world.alice.email  # never the address typed in the form
    assert message["Subject"] == "[Test] Hi Ann"


def test_a_test_sms_needs_a_phone_number(world: World, alice_client: Client, shop):
    campaign = draft(shop, channel="sms", audience=False)
    data = {"name": "Everyone", "target": "default", "weight": "100", "sms_body": "Hi", "to": "not a number"}
    response = alice_client.post(url("send_test", campaign), data)
    assert response.status_code == 400 and "international format" in text(response)


def test_the_sender_is_saved_on_the_content_step(world: World, alice_client: Client, shop):
    campaign = draft(shop, channel="webhook", audience=False)
    bad = alice_client.post(url("content", campaign), {"webhook_url": "http://example.com/hook"})
    assert bad.status_code == 400 and "https://" in text(bad)
    good = alice_client.post(url("content", campaign), {"webhook_url": "https://example.com/hook", "go": "next"})
    assert good["Location"] == url("schedule", campaign)
    assert reload(campaign).webhook_url == "https://example.com/hook"


# --- step 4: schedule ----------------------------------------------------------------------------
def test_schedule_errors_past_date_bad_crontab_missing_time(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    past = alice_client.post(url("schedule", campaign), {"schedule": "at", "send_at": "2020-01-01T09:00"})
    assert past.status_code == 400 and "This time has passed" in text(past)
    cron = alice_client.post(url("schedule", campaign), {"schedule": "recurring", "crontab": "61 * * * *"})
    assert cron.status_code == 400 and "does not parse" in text(cron)
    local = alice_client.post(url("schedule", campaign), {"schedule": "local_time", "local_time": ""})
    assert local.status_code == 400 and "Choose the local time" in text(local)
    assert reload(campaign).schedule == "now"


def test_a_time_is_read_in_the_tenants_zone_and_a_crontab_is_explained(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    when = (timezone.now() + dt.timedelta(days=3)).astimezone(berlin).replace(second=0, microsecond=0)
    response = alice_client.post(
        url("schedule", campaign), {"schedule": "at", "send_at": when.strftime("%Y-%m-%dT%H:%M"), "go": "next"}
    )
    assert response["Location"] == url("review", campaign)
    assert reload(campaign).send_at == when
    page = alice_client.get(url("schedule", campaign))
    assert when.strftime("%Y-%m-%dT%H:%M") in text(page)  # shown back in the tenant's zone

    alice_client.post(url("schedule", campaign), {"schedule": "recurring", "crontab": "0  9 * * 1"})
    assert reload(campaign).crontab == "0 9 * * 1"
    explained = alice_client.post(url("crontab", campaign), {"crontab": "30 8 * * 1-5"})
    assert "At 08:30, Monday through Friday" in text(explained)
    assert "does not parse" in text(alice_client.post(url("crontab", campaign), {"crontab": "nonsense"}))


# --- step 5: review and send ---------------------------------------------------------------------
def test_the_review_lists_problems_with_links_to_their_step(world: World, alice_client: Client, shop):
    campaign = draft(shop, audience=False)
    with tenant_context(world.tenant_a.id):
        variant = Variant.objects.get(campaign=campaign)
        Variant.objects.filter(pk=variant.pk).update(subject="")
    response = alice_client.get(url("review", campaign))
    assert response.status_code == 200
    problems = {p["message"]: p["url"] for p in response.context["problems"]}
    assert problems["Choose at least one segment to send to."] == url("audience", campaign)
    [subject_url] = [u for m, u in problems.items() if "subject" in m.lower()]
    assert subject_url == url("variant_edit", campaign, variant_id=variant.pk)
    assert 'data-testid="send-button" disabled' in text(response)
    refused = alice_client.post(url("send", campaign), follow=True)
    assert "Choose at least one segment" in text(refused)
    assert reload(campaign).status == "draft"


def test_send_now_starts_a_run_and_the_campaign_page_shows_its_progress(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    review = alice_client.get(url("review", campaign))
    assert review.context["problems"] == [] and review.context["estimate"].sendable == 2
    response = alice_client.post(url("send", campaign))
    assert response["Location"] == url("detail", campaign)
    assert reload(campaign).status == "sending"
    with tenant_context(world.tenant_a.id):
        run = CampaignRun.objects.get(campaign=campaign)
    page = alice_client.get(url("detail", campaign))
    body = text(page)
    assert page.context["progress"].total == 4 and page.context["progress"].pending == 4
    assert f'hx-get="{url("run_progress", campaign, run_id=run.pk)}"' in body and 'hx-trigger="every 2s"' in body
    # A campaign that is sending cannot be edited any more.
    assert alice_client.get(url("content", campaign))["Location"] == url("detail", campaign)


def test_scheduling_shows_the_schedule_and_the_next_run(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    when = (
        (timezone.now() + dt.timedelta(days=2)).astimezone(berlin).replace(hour=9, minute=30, second=0, microsecond=0)
    )
    alice_client.post(url("schedule", campaign), {"schedule": "at", "send_at": when.strftime("%Y-%m-%dT%H:%M")})
    assert alice_client.post(url("send", campaign))["Location"] == url("detail", campaign)
    saved = reload(campaign)
    assert saved.status == "scheduled" and saved.periodic_task_id
    page = alice_client.get(url("detail", campaign))
    body = text(page)
    assert f"{when:%Y-%m-%d} 09:30 (Europe/Berlin)" in body
    assert page.context["next_run"] == when
    assert re.search(rf'data-testid="next-run">{when:%Y-%m-%d} 09:30<', body)

    # Recurring: the next run comes from the crontab, in the tenant's zone.
    alice_client.post(url("schedule", campaign), {"schedule": "recurring", "crontab": "0 9 * * 1"})
    alice_client.post(url("send", campaign))
    page = alice_client.get(url("detail", campaign))
    next_run = page.context["next_run"].astimezone(berlin)
    assert (next_run.weekday(), next_run.hour, next_run.minute) == (0, 9, 0)
    assert "Recurring: at 09:00, only on monday" in text(page).replace("Monday", "monday")
    with tenant_context(world.tenant_a.id):
        assert PeriodicTask.objects.filter(pk=reload(campaign).periodic_task_id, crontab__isnull=False).exists()

    # Saving "now" on the schedule step would send at once: that takes the confirmed "Send now" button.
    refused = alice_client.post(url("schedule", campaign), {"schedule": "now"})
    assert refused.status_code == 400 and "use “Send now”" in text(refused)
    assert reload(campaign).status == "scheduled"
    assert url("send", campaign) in text(page) and 'data-testid="send-now"' in text(page)
    assert alice_client.post(url("send", campaign), {"now": "1"})["Location"] == url("detail", campaign)
    assert reload(campaign).status == "sending" and reload(campaign).crontab == "0 9 * * 1"


# --- the campaign page: actions, progress, delivery log -----------------------------------------
def sending_campaign(world: World, alice_client: Client, shop) -> tuple[Campaign, CampaignRun]:
    campaign = draft(shop)
    alice_client.post(url("send", campaign))
    with tenant_context(world.tenant_a.id):
        return reload(campaign), CampaignRun.objects.get(campaign=campaign)


def test_pause_resume_and_cancel(world: World, alice_client: Client, shop):
    campaign, run = sending_campaign(world, alice_client, shop)
    page = text(alice_client.get(url("detail", campaign)))
    assert url("pause", campaign) in page and url("resume", campaign) not in page
    response = alice_client.post(url("pause", campaign), follow=True)
    assert "Paused" in text(response)
    assert reload(campaign).status == "paused" and reload(run).status == "paused"
    assert url("resume", campaign) in text(response)
    wrong = alice_client.post(url("pause", campaign), follow=True)  # a paused campaign cannot be paused
    assert wrong.status_code == 200 and "cannot be paused" in text(wrong)
    alice_client.post(url("resume", campaign))
    assert reload(campaign).status == "sending" and reload(run).status == "sending"
    alice_client.post(url("cancel", campaign))
    assert reload(campaign).status == "cancelled"
    with tenant_context(world.tenant_a.id):
        assert set(Delivery.objects.filter(run=run).values_list("skip_reason", flat=True)) == {"cancelled"}


def test_the_progress_fragment_counts_and_stops_polling_when_done(world: World, alice_client: Client, shop):
    campaign, run = sending_campaign(world, alice_client, shop)
    people = shop["people"]
    with tenant_context(world.tenant_a.id):
        Delivery.objects.filter(run=run, contact=people["ann"]).update(status="sent", sent_at=timezone.now())
        Delivery.objects.filter(run=run, contact=people["cid"]).update(status="skipped", skip_reason="no_consent")
    response = alice_client.get(url("run_progress", campaign, run_id=run.pk), HTTP_HX_REQUEST="true")
    assert "HX-Trigger" not in response
    progress = response.context["progress"]
    assert (progress.sent, progress.skipped, progress.failed, progress.pending, progress.total) == (1, 1, 0, 2, 4)
    assert progress.percent == 50 and 'hx-trigger="every 2s"' in text(response)
    assert '<progress value="2" max="4"' in text(response)
    with tenant_context(world.tenant_a.id):
        Delivery.objects.filter(run=run, status="pending").update(status="failed", error="550 no such user")
        CampaignRun.objects.filter(pk=run.pk).update(status="done")
    done = alice_client.get(url("run_progress", campaign, run_id=run.pk), HTTP_HX_REQUEST="true")
    assert done.context["progress"].percent == 100 and "every 2s" not in text(done)
    assert done["HX-Trigger"] == "run-settled"  # the page reloads its status and delivery log
    assert re.search(r'data-testid="progress-percent">100%<', text(done))


def test_the_campaign_and_run_pages_do_not_query_per_row(
    world: World, alice_client: Client, shop, django_assert_max_num_queries
):
    campaign, run = sending_campaign(world, alice_client, shop)
    with django_assert_max_num_queries(16):
        page = alice_client.get(url("detail", campaign))
    assert len(page.context["deliveries"]) == 4
    with django_assert_max_num_queries(14):
        alice_client.get(url("run", campaign, run_id=run.pk))


def test_the_delivery_log_filters_and_pages_by_keyset(world: World, alice_client: Client, shop, monkeypatch):
    monkeypatch.setattr("campaigns.views.DELIVERY_PAGE_SIZE", 2)
    campaign, run = sending_campaign(world, alice_client, shop)
    people = shop["people"]
    with tenant_context(world.tenant_a.id):
        Delivery.objects.filter(run=run, contact=people["cid"]).update(status="skipped", skip_reason="no_consent")
        Delivery.objects.filter(run=run, contact=people["dan"]).update(status="skipped", skip_reason="suppressed")
        Delivery.objects.filter(run=run, contact=people["ben"]).update(status="failed", error="550 mailbox unknown")
        ids = list(Delivery.objects.filter(run=run).order_by("id").values_list("id", flat=True))
    log = url("run", campaign, run_id=run.pk)
    first = alice_client.get(log)
    assert [d.pk for d in first.context["deliveries"]] == ids[:2]
    assert first.context["next_url"] == f"{log}?after={ids[1]}"
    second = alice_client.get(first.context["next_url"], HTTP_HX_REQUEST="true", HTTP_HX_TARGET="delivery-log")
    assert [d.pk for d in second.context["deliveries"]] == ids[2:] and second.context["next_url"] is None
    assert "<html" not in text(second)
    skipped = alice_client.get(log, {"status": "skipped"})
    assert {d.contact_id for d in skipped.context["deliveries"]} == {people["cid"].pk, people["dan"].pk}
    suppressed = alice_client.get(log, {"status": "skipped", "skip_reason": "suppressed"})
    [row] = suppressed.context["deliveries"]
    assert row.contact_id == people["dan"].pk and "Suppressed" in text(suppressed)
    failed = text(alice_client.get(log, {"status": "failed"}))
    assert "550 mailbox unknown" in failed and f"/contacts/{people['ben'].pk}/" in failed
    assert alice_client.get(log, {"status": "lost"}).status_code == 400
    assert alice_client.get(log, {"after": "-3"}).status_code == 400


# --- permissions and isolation -----------------------------------------------------------------
def test_a_viewer_reads_but_cannot_write(world: World, bob_client: Client, shop):
    campaign = draft(shop)
    assert bob_client.get(url("list", tenant=world.tenant_a)).status_code == 200
    page = bob_client.get(url("detail", campaign))
    assert page.status_code == 200 and url("basics", campaign) not in text(page)
    assert bob_client.get(url("basics", campaign)).status_code == 403  # the composer is for editors
    posts = [
        url("create", tenant=world.tenant_a), url("basics", campaign), url("audience", campaign),
        url("estimate", campaign), url("preview", campaign), url("send_test", campaign), url("schedule", campaign),
        url("send", campaign), url("pause", campaign), url("resume", campaign), url("cancel", campaign),
    ]  # fmt: skip
    for target in posts:
        assert bob_client.post(target, {"name": "Hijack"}).status_code == 403, target
    assert reload(campaign).status == "draft" and reload(campaign).name == "Spring sale"


def test_another_tenants_campaign_is_a_404(world: World, alice_client: Client, charlie_client: Client, shop):
    campaign = draft(shop)
    with tenant_context(world.tenant_b.id):
        theirs = Campaign.objects.create(tenant=world.tenant_b, name="Theirs")
    for name in ("detail", "basics", "audience", "content", "schedule", "review"):
        assert alice_client.get(url(name, theirs, tenant=world.tenant_a)).status_code == 404, name
        assert charlie_client.get(url(name, campaign)).status_code == 404, name
    assert alice_client.post(url("send", theirs, tenant=world.tenant_a)).status_code == 404
    with tenant_context(world.tenant_a.id):
        variant = Variant.objects.get(campaign=campaign)
        other = Campaign.objects.create(tenant=world.tenant_a, name="Other")
    # A variant of another campaign of the same tenant is not reachable through this one.
    assert alice_client.get(url("variant_edit", other, variant_id=variant.pk)).status_code == 404


# --- other channels ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("channel", "content", "shown"),
    [
        ("push", {"push_title": "Hi {{ contact.first_name }}", "push_body": "Sale", "push_deep_link": "app://sale"},
         "Hi Ann"),
        ("webhook", {"webhook_payload": '{"name": "{{ contact.first_name }}"}'}, "&quot;name&quot;: &quot;Ann&quot;"),
        ("sms", {"sms_body": "Hi {{ contact.first_name }}"}, "Hi Ann"),
    ],
)  # fmt: skip
def test_each_channel_has_its_fields_and_preview(world: World, alice_client: Client, shop, channel, content, shown):
    campaign = draft(shop, channel=channel, audience=False, webhook_url="https://example.com/hook")
    page = alice_client.get(url("variant_create", campaign))
    assert set(page.context["form"].fields) >= set(content) and "subject" not in page.context["form"].fields
    data = {"name": "Everyone", "target": "default", "weight": "100", **content, "preview_contact": "ann@example.com"}
    response = alice_client.post(url("preview", campaign), data)
    assert response.status_code == 200 and shown in text(response), text(response)
    saved = alice_client.post(url("variant_create", campaign), {**data, "go": "content"})
    assert saved.status_code == 302
    with tenant_context(world.tenant_a.id):
        assert Variant.objects.filter(campaign=campaign, name="Everyone").exists()


def test_ab_variants_share_a_target_and_show_their_weights(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    for name, weight in (("Leads A", "30"), ("Leads B", "70")):
        alice_client.post(url("variant_create", campaign), {**EMAIL_VARIANT, "name": name, "weight": weight})
    page = alice_client.get(url("content", campaign))
    rows = {row["variant"].name: row for row in page.context["rows"]}
    assert rows["Leads A"]["ab"] and rows["Leads B"]["ab"] and not rows["Everyone"]["ab"]
    assert text(page).count(">A/B<") == 2
    bad = alice_client.post(url("variant_create", campaign), {**EMAIL_VARIANT, "weight": "0"})
    assert bad.status_code == 400 and "Between 1 and 1000." in text(bad)


def test_a_local_time_schedule_is_reviewed_in_words(world: World, alice_client: Client, shop):
    campaign = draft(shop)
    alice_client.post(url("schedule", campaign), {"schedule": "local_time", "local_time": "09:00"})
    review = alice_client.get(url("review", campaign))
    assert "At 09:00 in each recipient&#x27;s time zone" in text(review)
    assert "Schedule</button>" in text(review)
