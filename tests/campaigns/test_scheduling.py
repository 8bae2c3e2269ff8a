"""Scheduling: occurrences in the tenant's zone, one run per occurrence, beat rows beat accepts, the sweep."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from campaigns import scheduling, sending, services
from campaigns.models import Campaign, CampaignRun, Delivery
from campaigns.scheduling import (
    following_occurrence,
    occurrence_now,
    previous_occurrence,
    resume_stalled_runs,
    runs_stalled,
    start_scheduled_run,
)
from segmentor.celery import app
from tenants.context import tenant_context
from tests.campaigns.test_services import ACTOR, campaign_for, refreshed, scheduled
from tests.campaigns.test_services import shop as shop  # the fixture

pytestmark = pytest.mark.django_db
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
UTC = dt.UTC


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0, *,
    zone: dt.tzinfo = UTC,
) -> dt.datetime:  # fmt: skip
    return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=zone)


# --- occurrences ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "now", "expected"),
    [
        # Mondays at 09:00 New York: on a Monday at 09:00:03 it is this Monday's occurrence …
        ("0 9 * * 1", at(2030, 1, 7, 9, 0, 3, zone=NEW_YORK), at(2030, 1, 7, 14, 0)),
        # … at 08:59 the previous Monday's.
        ("0 9 * * 1", at(2030, 1, 7, 8, 59, zone=NEW_YORK), at(2029, 12, 31, 14, 0)),
        # Summer time: 09:00 New York is 13:00 UTC.
        ("0 9 * * *", at(2030, 7, 1, 12, 0), at(2030, 6, 30, 13, 0)),
        # Several hours and minutes: the latest not after now.
        ("0,30 8-18 * * *", at(2030, 1, 7, 15, 45, zone=NEW_YORK), at(2030, 1, 7, 20, 30)),
        # First of the month at 18:30, seen on the 20th.
        ("30 18 1 * *", at(2030, 5, 20, 0, 0, zone=NEW_YORK), at(2030, 5, 1, 22, 30)),
        # Both day fields must match (as Celery beat fires them): Friday the 13th.
        ("0 12 13 * 5", at(2030, 1, 1, 0, 0, zone=NEW_YORK), at(2029, 7, 13, 16, 0)),
    ],
)
def test_previous_occurrence_in_the_tenant_zone(expression, now, expected):
    assert previous_occurrence(expression, at=now, zone=NEW_YORK) == expected


def test_following_occurrence_is_strictly_later():
    assert following_occurrence("0 9 * * 1", after=at(2030, 1, 7, 14, 0), zone=NEW_YORK) == at(2030, 1, 14, 14, 0)
    assert following_occurrence("0 9 * * 1", after=at(2030, 1, 7, 13, 59), zone=NEW_YORK) == at(2030, 1, 7, 14, 0)


@pytest.mark.parametrize(
    ("expression", "message"),
    [("0 9 * *", "Five fields"), ("61 * * * *", "minute field “61”"), ("0 9 * 13 *", "month field “13”"),
     ("0 9 * * 8", "day of week field “8”"), ("", "Five fields")],
)  # fmt: skip
def test_a_bad_crontab_says_which_field(expression, message):
    with pytest.raises(ValidationError) as error:
        scheduling.crontab_fields(expression)
    assert message in error.value.message_dict["crontab"][0]


def test_a_late_tick_still_maps_to_its_occurrence(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        campaign.schedule, campaign.crontab = Campaign.Schedule.RECURRING, "0 9 * * *"
        # Beat fires at 09:00:00 New York; a worker whose clock is 2 s behind, or a queue 40 minutes
        # long, both name the same occurrence.
        early = occurrence_now(campaign, at(2030, 1, 7, 8, 59, 58, zone=NEW_YORK))
        late = occurrence_now(campaign, at(2030, 1, 7, 9, 40, 0, zone=NEW_YORK))
        assert early == late == at(2030, 1, 7, 14, 0)
        campaign.schedule, campaign.send_at = Campaign.Schedule.AT, at(2030, 1, 7, 14, 0, 41, 5)
        assert occurrence_now(campaign) == at(2030, 1, 7, 14, 0)


# --- the beat task ---------------------------------------------------------------------------------
def test_the_beat_task_starts_one_run_per_occurrence(shop, django_capture_on_commit_callbacks):
    tenant, campaign, _, people = shop
    with tenant_context(tenant.id):
        scheduled(campaign, schedule=Campaign.Schedule.RECURRING, crontab="* * * * *")
    # As beat calls it (no tenant set): twice for the same minute, as two beat instances would.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = start_scheduled_run(tenant.id, campaign.pk)
        second = start_scheduled_run(tenant.id, campaign.pk)
    assert first == second is not None
    assert len(callbacks) == 2  # send_run twice is harmless: claims are disjoint
    with tenant_context(tenant.id):
        [run] = CampaignRun.objects.filter(campaign=campaign)
        assert run.scheduled_for.second == 0 and run.scheduled_for.microsecond == 0
        assert Delivery.objects.filter(run=run).count() == len(people)
        # The next occurrence is a run of its own, with its own deliveries.
        later = scheduling.scheduled_run_start(
            campaign=refreshed(campaign), now=timezone.now() + dt.timedelta(minutes=1)
        )
        assert later is not None and later.pk != run.pk and later.number == 2
        assert Delivery.objects.filter(run=later).count() == len(people)


def test_an_at_campaign_runs_once_even_when_beat_fires_again(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        scheduled(campaign, schedule=Campaign.Schedule.AT, send_at=timezone.now() + dt.timedelta(seconds=20))
    for _ in range(3):
        start_scheduled_run(tenant.id, campaign.pk)
    with tenant_context(tenant.id):
        [run] = CampaignRun.objects.filter(campaign=campaign)
        send_at = refreshed(campaign).send_at
        assert send_at is not None and run.scheduled_for == send_at.replace(second=0, microsecond=0)


def test_a_tick_for_a_time_since_moved_later_starts_nothing(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        scheduled(campaign, schedule=Campaign.Schedule.AT, send_at=timezone.now() + dt.timedelta(hours=3))
    # Beat had sent the tick for the old time just before the campaign was moved.
    assert start_scheduled_run(tenant.id, campaign.pk) is None
    with tenant_context(tenant.id):
        assert not CampaignRun.objects.filter(campaign=campaign).exists()


def test_the_beat_task_does_nothing_for_a_paused_or_cancelled_campaign(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        scheduled(campaign, schedule=Campaign.Schedule.RECURRING, crontab="0 9 * * *")
        services.campaign_pause(campaign=campaign, actor=ACTOR)
    assert start_scheduled_run(tenant.id, campaign.pk) is None
    with tenant_context(tenant.id):
        services.campaign_cancel(campaign=campaign, actor=ACTOR)
    assert start_scheduled_run(tenant.id, campaign.pk) is None
    with tenant_context(tenant.id):
        assert not CampaignRun.objects.filter(campaign=campaign).exists()


def test_a_deleted_campaign_leaves_no_beat_row_behind(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        scheduled(campaign, schedule=Campaign.Schedule.RECURRING, crontab="0 9 * * *")
        task_id = refreshed(campaign).periodic_task_id
        campaign_id = campaign.pk
        Campaign.objects.filter(pk=campaign_id).delete()  # e.g. from the admin
    assert PeriodicTask.objects.filter(pk=task_id).exists()
    assert start_scheduled_run(tenant.id, campaign_id) is None
    assert not PeriodicTask.objects.filter(pk=task_id).exists()


def test_beat_reads_the_rows_as_due_at_the_right_time(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        scheduled(campaign, schedule=Campaign.Schedule.AT, send_at=timezone.now() + dt.timedelta(hours=2))
        task = PeriodicTask.objects.get(pk=refreshed(campaign).periodic_task_id)
    entry = ModelEntry(task, app=app)
    due, wait = entry.is_due()
    assert not due and 7000 < wait <= 7200
    # Moved into the past (as if the time had come): due now.
    with tenant_context(tenant.id):
        Campaign.objects.filter(pk=campaign.pk).update(send_at=timezone.now() - dt.timedelta(seconds=5))
        scheduling.schedule_sync(campaign=refreshed(campaign))
    due, _ = ModelEntry(PeriodicTask.objects.get(pk=task.pk), app=app).is_due()
    assert due


def test_next_occurrence_for_the_ui(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        campaign.schedule, campaign.crontab = Campaign.Schedule.RECURRING, "0 9 * * 1"
        assert scheduling.next_occurrence(campaign, at(2030, 1, 8, 0, 0)) == at(2030, 1, 14, 14, 0)
        campaign.crontab = "nonsense"
        assert scheduling.next_occurrence(campaign) is None


# --- the sweep -------------------------------------------------------------------------------------
def test_the_sweep_requeues_runs_nobody_works_on(shop):
    tenant, campaign, segment, _ = shop
    with tenant_context(tenant.id):
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        later = campaign_for(tenant, segment, name="Local", schedule=Campaign.Schedule.LOCAL_TIME)
        waiting = services.campaign_send_now(campaign=later, actor=ACTOR)
        now = timezone.now()
        # Everyone in the local-time run waits for tomorrow morning: nothing due, nothing stalled.
        Delivery.objects.filter(run=waiting).update(not_before=now + dt.timedelta(hours=10))
        assert runs_stalled(tenant=tenant, now=now) == []  # just started
        an_hour_later = now + dt.timedelta(hours=1)
        assert [r.pk for r in runs_stalled(tenant=tenant, now=an_hour_later)] == [run.pk]
        # A claim a minute ago is progress.
        one = Delivery.objects.filter(run=run).order_by("pk")[:1].values("pk")
        Delivery.objects.filter(pk__in=one).update(claimed_at=an_hour_later - dt.timedelta(minutes=1))
        assert runs_stalled(tenant=tenant, now=an_hour_later) == []
        Delivery.objects.filter(run=run).update(claimed_at=timezone.now() - dt.timedelta(hours=2))
        CampaignRun.objects.filter(pk=run.pk).update(started_at=timezone.now() - dt.timedelta(hours=2))
    # As beat's fan-out calls it: the stalled run goes back on the queue (Redis), the waiting one does not.
    assert resume_stalled_runs(tenant.id) == [run.pk]


def test_the_sweep_is_installed_as_a_periodic_task():
    call_command("setup_periodic_tasks", stdout=StringIO())
    task = PeriodicTask.objects.get(task="campaigns.scheduling.resume_stalled_runs_all")
    assert task.enabled and task.crontab is not None


def test_a_recurring_campaign_waits_for_its_next_occurrence_once_every_open_run_is_done(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        scheduled(campaign, schedule=Campaign.Schedule.RECURRING, crontab="* * * * *")
        now = timezone.now()
        first = scheduling.scheduled_run_start(campaign=refreshed(campaign), now=now)
        second = scheduling.scheduled_run_start(campaign=refreshed(campaign), now=now + dt.timedelta(minutes=1))
        assert first is not None and second is not None
        assert refreshed(campaign).status == Campaign.Status.SENDING
        for run in (first, second):
            Delivery.objects.filter(run=run).update(status=Delivery.Status.SENT)
        assert sending.run_finish_if_done(run=first)
        assert refreshed(campaign).status == Campaign.Status.SENDING  # the second run still sends
        assert sending.run_finish_if_done(run=second)
        assert refreshed(campaign).status == Campaign.Status.SCHEDULED
