"""Campaign services: problems, state changes (right and wrong), schedules, estimate, preview, test send."""

from __future__ import annotations

import datetime as dt
import io
import zoneinfo
from collections import Counter

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, PeriodicTask

from campaigns import scheduling, selectors, sending, services
from campaigns.channels.local import ConsoleBackend
from campaigns.models import Campaign, CampaignAudience, CampaignRun, ContactPause, Delivery, Variant
from campaigns.sending import deliveries_claim
from campaigns.tasks import send_run
from contacts.consent import ConsentEvidence, consent_change, suppression_add
from contacts.models import Contact, Suppression
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
API = ConsentEvidence(source="api")


def person(tenant, email: str, *, consent: bool = True, phone: str = "", **extra) -> Contact:
    contact = Contact.objects.create(
        tenant=tenant, email=email, phone=phone, first_name=email.split("@")[0].title() if email else "", **extra
    )
    if consent:
        consent_change(
            contact=contact, channel="email", purpose="marketing", status="granted", evidence=API, actor=ACTOR
        )
    return contact


def campaign_for(tenant, segment, **fields) -> Campaign:
    campaign = Campaign.objects.create(tenant=tenant, name=fields.pop("name", "Spring sale"), **fields)
    CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=segment)
    Variant.objects.create(
        tenant=tenant, campaign=campaign, name="Everyone", subject='Hi {{ contact.first_name | default: "there" }}',
        html_body='<p>Hi {{ contact.first_name }}</p><p><a href="{{ cta.url }}">{{ cta.label }}</a></p>',
        cta_label="Buy now", cta_url="https://shop.example/sale",
    )  # fmt: skip
    return campaign


@pytest.fixture
def shop(world):
    """Tenant A in New York: six contacts in a static segment, one campaign ready to go."""
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        tenant.time_zone = "America/New_York"
        tenant.default_sender_email = "news@shop.example"
        tenant.frequency_cap_messages = 2
        tenant.frequency_cap_days = 7
        tenant.save()
        people = [person(tenant, f"p{i}@example.com") for i in range(6)]
        segment = segment_create(tenant=tenant, actor=ACTOR, name="Everyone", kind=Segment.Kind.STATIC)
        static_members_add(segment=segment, actor=ACTOR, contact_ids=[p.pk for p in people])
        yield tenant, campaign_for(tenant, segment), segment, people


def refreshed(campaign: Campaign) -> Campaign:
    return Campaign.objects.get(pk=campaign.pk)


def scheduled(campaign: Campaign, **fields) -> Campaign:
    """Save the schedule fields as the composer does, then put the campaign on its schedule."""
    for name, value in fields.items():
        setattr(campaign, name, value)
    campaign.save()
    services.campaign_schedule(campaign=campaign, actor=ACTOR)
    return refreshed(campaign)


def status_error(error: pytest.ExceptionInfo[ValidationError]) -> str:
    return " ".join(error.value.message_dict["status"])


def actions(tenant) -> list[str]:
    return list(AuditLog.objects.filter(tenant=tenant).order_by("id").values_list("action", flat=True))


# --- problems ---------------------------------------------------------------------------------
def test_problems_name_the_field_and_the_reason(shop):
    tenant, ready, segment, _ = shop
    with tenant_context(tenant.id):
        assert services.campaign_problems(campaign=ready) == []
        empty = Campaign.objects.create(tenant=tenant, name="Empty", schedule=Campaign.Schedule.AT)
        fields = {p.field for p in services.campaign_problems(campaign=empty)}
        assert fields == {"audience", "variants", "send_at"}

        broken = campaign_for(tenant, segment, name="Broken", schedule=Campaign.Schedule.RECURRING, crontab="0 9 *")
        variant = Variant.objects.get(campaign=broken)
        variant.subject = "Hi {% if contact.first_name %}"
        variant.save()
        problems = services.campaign_problems(campaign=broken)
        assert {(p.field, p.variant_id) for p in problems} == {("subject", variant.pk), ("crontab", None)}
        assert "line 1" in next(p.message for p in problems if p.field == "subject").lower()

        sms = campaign_for(tenant, segment, name="Text", channel="sms")
        assert {p.field for p in services.campaign_problems(campaign=sms)} == {"sms_body", "channel"}

        with pytest.raises(ValidationError) as error:
            services.campaign_schedule(campaign=broken, actor=ACTOR)
        assert set(error.value.message_dict) == {"subject", "crontab"}
        assert refreshed(broken).status == Campaign.Status.DRAFT


def test_a_send_at_in_the_past_is_refused(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        campaign.schedule, campaign.send_at = Campaign.Schedule.AT, timezone.now() - dt.timedelta(hours=1)
        campaign.save()
        with pytest.raises(ValidationError) as error:
            services.campaign_schedule(campaign=campaign, actor=ACTOR)
        assert "passed" in error.value.message_dict["send_at"][0]
        assert not PeriodicTask.objects.filter(name__startswith="campaign ").exists()


# --- send now, pause, resume, cancel -----------------------------------------------------------
def test_send_now_snapshots_and_queues_the_run_after_commit(shop, world, django_capture_on_commit_callbacks):
    tenant, campaign, _, people = shop
    with tenant_context(tenant.id):
        with django_capture_on_commit_callbacks() as callbacks:
            run = services.campaign_send_now(campaign=campaign, actor=Actor.for_user(world.alice))
        assert len(callbacks) == 1  # send_run, only once the snapshot is committed
        assert run.audience_size == len(people)
        assert Delivery.objects.filter(run=run, status=Delivery.Status.PENDING).count() == len(people)
        assert refreshed(campaign).status == Campaign.Status.SENDING
        log = AuditLog.objects.get(tenant=tenant, action="campaign.sent_now")
        assert log.actor_user == world.alice and log.data == {"run": run.pk, "audience": len(people)}

        with pytest.raises(ValidationError) as error:
            services.campaign_send_now(campaign=campaign, actor=Actor.for_user(world.alice))
        assert "sending campaign cannot be sent now" in status_error(error)
        assert CampaignRun.objects.filter(campaign=campaign).count() == 1


def test_pause_stops_the_run_and_resume_queues_it_again(shop, django_capture_on_commit_callbacks):
    tenant, campaign, _, people = shop
    with tenant_context(tenant.id):
        with pytest.raises(ValidationError) as error:
            services.campaign_pause(campaign=campaign, actor=ACTOR)
        assert "draft campaign cannot be paused" in status_error(error)
        with pytest.raises(ValidationError):
            services.campaign_resume(campaign=campaign, actor=ACTOR)

        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        services.campaign_pause(campaign=campaign, actor=ACTOR)
        assert campaign.status == refreshed(campaign).status == Campaign.Status.PAUSED
        assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.PAUSED
        # The queued task finds the run paused and sends nothing; claims take nothing from it.
        assert send_run(tenant.id, run.pk) == {}
        assert deliveries_claim(run=CampaignRun.objects.get(pk=run.pk)) == []
        assert Delivery.objects.filter(run=run, status=Delivery.Status.PENDING).count() == len(people)
        with pytest.raises(ValidationError) as error:
            services.campaign_pause(campaign=campaign, actor=ACTOR)
        assert "paused campaign cannot be paused" in status_error(error)

        with django_capture_on_commit_callbacks() as callbacks:
            services.campaign_resume(campaign=campaign, actor=ACTOR)
        assert len(callbacks) == 1
        assert refreshed(campaign).status == Campaign.Status.SENDING
        assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.SENDING
        with pytest.raises(ValidationError) as error:
            services.campaign_resume(campaign=campaign, actor=ACTOR)
        assert "sending campaign cannot be resumed" in status_error(error)
        assert actions(tenant)[-3:] == ["campaign.sent_now", "campaign.paused", "campaign.resumed"]


def test_cancel_skips_what_is_pending_and_is_final(shop):
    tenant, campaign, _, people = shop
    with tenant_context(tenant.id):
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        services.campaign_pause(campaign=campaign, actor=ACTOR)
        services.campaign_cancel(campaign=campaign, actor=ACTOR)
        assert refreshed(campaign).status == Campaign.Status.CANCELLED
        assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.CANCELLED
        skipped = Delivery.objects.filter(run=run, status=Delivery.Status.SKIPPED, skip_reason="cancelled")
        assert skipped.count() == len(people)
        for change in (services.campaign_cancel, services.campaign_pause, services.campaign_resume):
            with pytest.raises(ValidationError) as error:
                change(campaign=campaign, actor=ACTOR)
            assert "cancelled campaign cannot be" in status_error(error)
        with pytest.raises(ValidationError):
            services.campaign_send_now(campaign=campaign, actor=ACTOR)
        with pytest.raises(ValidationError):
            services.campaign_schedule(campaign=campaign, actor=ACTOR)
        assert "campaign.cancelled" in actions(tenant)


def test_a_sent_campaign_cannot_be_cancelled_paused_or_scheduled(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENT)
        for change in (
            services.campaign_cancel, services.campaign_pause, services.campaign_resume, services.campaign_schedule,
            services.campaign_send_now,
        ):  # fmt: skip
            with pytest.raises(ValidationError) as error:
                change(campaign=campaign, actor=ACTOR)
            assert "sent campaign cannot be" in status_error(error)


# --- schedules ---------------------------------------------------------------------------------
def test_at_creates_a_one_off_clocked_task_and_editing_moves_it(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        # A naive time from a form is wall-clock time in the tenant's zone (New York, UTC-5 in January).
        send_at = scheduling.aware_in_tenant_zone(dt.datetime(2031, 1, 15, 9, 0), tenant)
        scheduled(campaign, schedule=Campaign.Schedule.AT, send_at=send_at)
        campaign = refreshed(campaign)
        assert campaign.status == Campaign.Status.SCHEDULED
        assert campaign.send_at == dt.datetime(2031, 1, 15, 14, 0, tzinfo=dt.UTC)
        task = PeriodicTask.objects.get(pk=campaign.periodic_task_id)
        assert task.task == "campaigns.scheduling.start_scheduled_run"
        assert task.one_off and task.enabled and task.crontab is None
        assert task.clocked.clocked_time == dt.datetime(2031, 1, 15, 14, 0, tzinfo=dt.UTC)
        assert task.args == f"[{tenant.id}, {campaign.pk}]"
        first_clock = task.clocked_id

        # Editing the time (aware, as forms send it) updates the same row and drops the old clock.
        campaign.send_at = dt.datetime(2031, 2, 1, 8, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))
        campaign.save()
        services.campaign_schedule(campaign=campaign, actor=ACTOR)
        task = PeriodicTask.objects.get(pk=task.pk)
        assert task.clocked.clocked_time == dt.datetime(2031, 2, 1, 7, 30, tzinfo=dt.UTC)
        assert not ClockedSchedule.objects.filter(pk=first_clock).exists()
        assert PeriodicTask.objects.filter(name__startswith="campaign ").count() == 1

        services.campaign_cancel(campaign=campaign, actor=ACTOR)
        assert not PeriodicTask.objects.filter(pk=task.pk).exists()
        assert not ClockedSchedule.objects.filter(pk=task.clocked_id).exists()
        assert refreshed(campaign).periodic_task_id is None


def test_recurring_uses_a_crontab_in_the_tenant_zone(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        # A schedule row shared with another task must survive the campaign's changes.
        shared = CrontabSchedule.objects.create(minute="0", hour="9", day_of_week="1", timezone="America/New_York")
        other = PeriodicTask.objects.create(name="someone else", task="x.y", crontab=shared)

        scheduled(campaign, schedule=Campaign.Schedule.RECURRING, crontab="0 9 * * 1")
        campaign = refreshed(campaign)
        task = PeriodicTask.objects.get(pk=campaign.periodic_task_id)
        assert campaign.status == Campaign.Status.SCHEDULED and not task.one_off and task.clocked is None
        assert task.crontab_id == shared.pk
        assert str(task.crontab.timezone) == "America/New_York"

        campaign.crontab = "30 18 1 * *"
        campaign.save()
        services.campaign_schedule(campaign=campaign, actor=ACTOR)
        task = PeriodicTask.objects.get(pk=task.pk)
        cron = task.crontab
        assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == (
            "30", "18", "1", "*", "*"
        )  # fmt: skip
        assert str(cron.timezone) == "America/New_York"
        assert CrontabSchedule.objects.filter(pk=shared.pk).exists()  # still used by the other task

        campaign.crontab = "0 25 * * *"
        campaign.save()
        with pytest.raises(ValidationError) as error:
            services.campaign_schedule(campaign=campaign, actor=ACTOR)
        assert "hour field “25”" in error.value.message_dict["crontab"][0]
        assert PeriodicTask.objects.get(pk=task.pk).crontab_id == cron.pk  # unchanged

        services.campaign_cancel(campaign=campaign, actor=ACTOR)
        assert not PeriodicTask.objects.filter(pk=task.pk).exists()
        assert not CrontabSchedule.objects.filter(pk=cron.pk).exists()
        assert PeriodicTask.objects.filter(pk=other.pk, crontab=shared).exists()


def test_pausing_a_scheduled_campaign_stops_its_beat_row(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        scheduled(campaign, schedule=Campaign.Schedule.RECURRING, crontab="0 9 * * *")
        services.campaign_pause(campaign=campaign, actor=ACTOR)
        task = PeriodicTask.objects.get(pk=refreshed(campaign).periodic_task_id)
        assert not task.enabled
        services.campaign_resume(campaign=campaign, actor=ACTOR)
        assert PeriodicTask.objects.get(pk=task.pk).enabled
        assert refreshed(campaign).status == Campaign.Status.SCHEDULED


def test_now_and_local_time_without_a_date_start_at_once(shop, django_capture_on_commit_callbacks):
    tenant, campaign, segment, people = shop
    with tenant_context(tenant.id):
        with django_capture_on_commit_callbacks() as callbacks:
            services.campaign_schedule(campaign=campaign, actor=ACTOR)  # schedule "now"
        assert len(callbacks) == 1
        assert refreshed(campaign).status == Campaign.Status.SENDING
        assert CampaignRun.objects.filter(campaign=campaign).count() == 1

        local = campaign_for(tenant, segment, name="Local", schedule=Campaign.Schedule.LOCAL_TIME)
        with pytest.raises(ValidationError) as error:
            services.campaign_schedule(campaign=local, actor=ACTOR)
        assert "local_time" in error.value.message_dict
        local.local_time = dt.time(9, 0)
        local.save()
        services.campaign_schedule(campaign=local, actor=ACTOR)
        assert refreshed(local).status == Campaign.Status.SENDING
        assert CampaignRun.objects.get(campaign=local).audience_size == len(people)


def test_local_time_with_a_later_date_waits_for_it(shop):
    tenant, _, segment, _ = shop
    with tenant_context(tenant.id):
        local = campaign_for(
            tenant, segment, name="Local", schedule=Campaign.Schedule.LOCAL_TIME, local_time=dt.time(9, 0),
            send_at=dt.datetime(2031, 3, 1, 0, 0, tzinfo=dt.UTC),
        )  # fmt: skip
        services.campaign_schedule(campaign=local, actor=ACTOR)
        local = refreshed(local)
        assert local.status == Campaign.Status.SCHEDULED
        assert PeriodicTask.objects.get(pk=local.periodic_task_id).clocked.clocked_time == local.send_at
        assert not CampaignRun.objects.filter(campaign=local).exists()


# --- audience estimate -------------------------------------------------------------------------
def test_the_estimate_counts_each_reason_once_in_the_senders_order(shop):
    tenant, campaign, segment, people = shop
    with tenant_context(tenant.id):
        now = timezone.now()
        no_consent = person(tenant, "nc@example.com", consent=False)
        suppressed = person(tenant, "sup@example.com")
        suppression_add(tenant=tenant, channel="email", address="sup@example.com", reason=Suppression.Reason.MANUAL)
        paused = person(tenant, "pause@example.com")
        ContactPause.objects.create(tenant=tenant, contact=paused, until=now + dt.timedelta(days=3))
        expired_pause = person(tenant, "back@example.com")
        ContactPause.objects.create(tenant=tenant, contact=expired_pause, until=now - dt.timedelta(days=1))
        no_address = person(tenant, "", consent=False, phone="+4915112345678")
        # Suppressed and without consent: counted once, under the reason checked first (consent).
        both = person(tenant, "both@example.com", consent=False)
        suppression_add(tenant=tenant, channel="email", address="both@example.com", reason=Suppression.Reason.MANUAL)
        erased = person(tenant, "gone@example.com")
        Contact.objects.filter(pk=erased.pk).update(erased_at=now)
        # Two messages this week reach the cap of 2; a third message a month ago does not count.
        capped, under_cap = people[0], people[1]
        old_run = CampaignRun.objects.create(
            tenant=tenant, campaign=campaign, number=1, scheduled_for=now, status=CampaignRun.Status.DONE
        )
        older_run = CampaignRun.objects.create(
            tenant=tenant, campaign=campaign, number=2, scheduled_for=now - dt.timedelta(days=30)
        )
        for run, contact, when in (
            (old_run, capped, now - dt.timedelta(days=1)),
            (older_run, capped, now - dt.timedelta(days=2)),
            (old_run, under_cap, now - dt.timedelta(days=1)),
            (older_run, under_cap, now - dt.timedelta(days=30)),
        ):
            Delivery.objects.create(tenant=tenant, run=run, contact=contact, status="sent", sent_at=when)
        extra = [no_consent, suppressed, paused, expired_pause, no_address, both, erased]
        static_members_add(segment=segment, actor=ACTOR, contact_ids=[c.pk for c in extra])
        # Someone outside the audience changes nothing.
        person(tenant, "outsider@example.com", consent=False)

        estimate = services.audience_estimate(campaign=campaign)
        assert estimate.as_dict() == {
            "total": 12,  # six people and six of the extra (the erased contact is out)
            "no_address": 1,
            "no_consent": 2,
            "suppressed": 1,
            "paused": 1,
            "frequency_capped": 1,
            "excluded": 6,
            "sendable": 6,  # five of the six people, and the contact whose pause ended
        }
        # The sender, checking at the moment of sending, skips the same contacts for the same reasons.
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        sending.deliveries_send(run=run, ids=deliveries_claim(run=run, size=100), backend=ConsoleBackend(io.StringIO()))
        skipped = Counter(Delivery.objects.filter(run=run, status="skipped").values_list("skip_reason", flat=True))
        reasons = {"no_address", "no_consent", "suppressed", "paused"}
        assert {reason: skipped[reason] for reason in reasons} == {
            reason: estimate.as_dict()[reason] for reason in reasons
        }
        assert skipped["frequency_cap"] == estimate.frequency_capped
        assert Delivery.objects.filter(run=run, status="sent").count() == estimate.sendable


def test_the_estimate_for_sms_looks_at_phones_and_sms_consent(shop):
    tenant, campaign, segment, _ = shop
    with tenant_context(tenant.id):
        campaign.channel = "sms"
        campaign.save()
        texter = person(tenant, "t@example.com", consent=False, phone="+4915112345678")
        consent_change(contact=texter, channel="sms", purpose="marketing", status="granted", evidence=API, actor=ACTOR)
        static_members_add(segment=segment, actor=ACTOR, contact_ids=[texter.pk])
        estimate = services.audience_estimate(campaign=campaign)
        assert (estimate.total, estimate.no_address, estimate.no_consent, estimate.sendable) == (7, 6, 0, 1)


# --- preview and test --------------------------------------------------------------------------
def test_preview_renders_for_a_contact_with_template_warnings(shop):
    tenant, campaign, _, people = shop
    with tenant_context(tenant.id):
        variant = Variant.objects.get(campaign=campaign)
        variant.html_body += "<p>{{ contact.shoe_size }}</p>"
        variant.save()
        preview = services.campaign_preview(campaign=campaign, variant=variant, contact=people[2])
        assert preview.subject == "Hi P2"
        assert "Hi P2" in preview.html and "https://shop.example/sale" in preview.html
        assert "Hi P2" in preview.text
        assert any("contact.shoe_size" in w for w in preview.warnings)
        assert not preview.errors
        assert not Delivery.objects.exists()
        # No segment chosen yet: nobody to count, nobody left out.
        empty = Campaign.objects.create(tenant=tenant, name="Empty")
        assert services.audience_estimate(campaign=empty).as_dict()["total"] == 0

        variant.subject = "{% if %}"
        preview = services.campaign_preview(campaign=campaign, variant=variant, contact=people[2])
        assert preview.errors and not preview.html


def test_send_test_reaches_the_inbox_and_records_no_delivery(shop, smtp, world):
    tenant, campaign, _, people = shop
    with tenant_context(tenant.id):
        variant = Variant.objects.get(campaign=campaign)
        result = services.campaign_send_test(
            campaign=campaign,
            variant=variant,
            contact=people[3],
            to=" Alice@A.example ",
            actor=Actor.for_user(world.alice),
        )
        assert result.ok, result.error
        [message] = smtp.inbox.wait_for(1)
        assert message["To"] == "alice@a.example"
        assert message["Subject"] == "[Test] Hi P3"
        assert "Hi P3" in message.as_string()
        assert not Delivery.objects.exists() and not CampaignRun.objects.exists()
        log = AuditLog.objects.get(tenant=tenant, action="campaign.test_sent")
        assert log.data["contact"] == people[3].pk and "alice" not in str(log.data)

        with pytest.raises(ValidationError) as error:
            services.campaign_send_test(
                campaign=campaign, variant=variant, contact=None, to="not-an-address", actor=None
            )
        assert "to" in error.value.message_dict
        assert len(smtp.inbox.messages) == 1


def test_preview_and_test_refuse_another_campaigns_variant(shop):
    tenant, campaign, segment, _ = shop
    with tenant_context(tenant.id):
        other = campaign_for(tenant, segment, name="Other")
        foreign = Variant.objects.get(campaign=other)
        with pytest.raises(ValidationError) as error:
            services.campaign_preview(campaign=campaign, variant=foreign, contact=None)
        assert "variant" in error.value.message_dict


# --- selectors -----------------------------------------------------------------------------------
def test_campaign_list_filters_by_status_channel_and_name(shop, world):
    tenant, campaign, segment, _ = shop
    with tenant_context(tenant.id):
        texts = campaign_for(tenant, segment, name="Winter texts", channel="sms", description="cold")
        services.campaign_send_now(campaign=campaign, actor=ACTOR)
        names = lambda **kw: [c.name for c in selectors.campaign_list(tenant=tenant, **kw)]  # noqa: E731
        assert names() == ["Winter texts", "Spring sale"]
        assert names(status="sending") == ["Spring sale"]
        assert names(channel="sms") == ["Winter texts"]
        assert names(search="COLD") == names(search=" winter ") == ["Winter texts"]
        runs = {c.pk: c.run_count for c in selectors.campaign_list(tenant=tenant)}  # type: ignore[attr-defined]
        assert (runs[campaign.pk], runs[texts.pk]) == (1, 0)
    with tenant_context(world.tenant_b.id):
        assert list(selectors.campaign_list(tenant=world.tenant_b)) == []


def test_delivery_list_and_runs_for_the_campaign_page(shop, django_assert_max_num_queries):
    tenant, campaign, _, people = shop
    with tenant_context(tenant.id):
        Contact.objects.filter(pk=people[0].pk).update(email="")
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        Delivery.objects.filter(run=run, contact=people[0]).update(status="skipped", skip_reason="no_address")
        Delivery.objects.filter(run=run, contact=people[1]).update(status="sent")
        with django_assert_max_num_queries(1):
            log = [
                (d.contact.email, d.status, getattr(d.variant, "name", "")) for d in selectors.delivery_list(run=run)
            ]
        # Deliveries come in id order, which the snapshot does not tie to the contacts' order.
        assert len(log) == len(people) and ("p1@example.com", "sent", "Everyone") in log
        skipped = selectors.delivery_list(run=run, status="skipped", skip_reason="no_address")
        assert [d.contact_id for d in skipped] == [people[0].pk]
        assert not selectors.delivery_list(run=run, skip_reason="suppressed").exists()
        with django_assert_max_num_queries(1):
            [run] = selectors.campaign_runs(campaign=campaign)
        counts = {name: getattr(run, f"{name}_count") for name in ("sent", "skipped", "pending", "failed")}
        assert counts == {"sent": 1, "skipped": 1, "pending": 4, "failed": 0}


def test_an_empty_audience_has_an_estimate_of_zero_and_no_sample_contact(shop):
    tenant, campaign, _, _ = shop
    with tenant_context(tenant.id):
        empty = segment_create(tenant=tenant, actor=ACTOR, name="Nobody", kind=Segment.Kind.STATIC)
        CampaignAudience.objects.filter(campaign=campaign).update(segment=empty)
        estimate = services.audience_estimate(campaign=campaign)
        assert (estimate.total, estimate.sendable) == (0, 0)
        variant = Variant.objects.get(campaign=campaign)
        # As the pages do: with nobody in the audience, the preview renders as the workspace's first contact.
        preview = services.campaign_preview(campaign=campaign, variant=variant, contact=None)
        assert preview.subject
        Contact.objects.all().delete()
        with pytest.raises(ValidationError) as error:
            services.campaign_preview(campaign=campaign, variant=variant, contact=None)
        assert "contact" in error.value.message_dict


def test_the_estimate_counts_a_selection_before_it_is_saved(shop):
    tenant, campaign, segment, _ = shop
    with tenant_context(tenant.id):
        saved = services.audience_estimate(campaign=campaign)
        empty = segment_create(tenant=tenant, actor=ACTOR, name="Nobody", kind=Segment.Kind.STATIC)
        assert services.audience_estimate(campaign=campaign, include=[empty.pk], exclude=[]).total == 0
        assert services.audience_estimate(campaign=campaign, include=[segment.pk], exclude=[segment.pk]).total == 0
        again = services.audience_estimate(campaign=campaign, include=[segment.pk], exclude=[])
        assert (again.total, again.sendable, again.no_consent) == (saved.total, saved.sendable, saved.no_consent)
        assert list(CampaignAudience.objects.filter(campaign=campaign).values_list("segment_id", flat=True)) == [
            segment.pk
        ]  # nothing written
