"""When campaigns send: django-celery-beat rows per campaign, the beat task, and a safety sweep.

Each scheduled campaign owns one ``PeriodicTask`` (``Campaign.periodic_task``) that calls
``start_scheduled_run(tenant_id, campaign_id)``:

- ``at``: a ``ClockedSchedule`` at ``campaign.send_at`` and a one-off task. ``send_at`` is stored
  aware; a form or API input without an offset is wall-clock time in the tenant's time zone: read
  it with ``aware_in_tenant_zone`` (or with the tenant's zone activated) before saving.
- ``recurring``: a ``CrontabSchedule`` from ``campaign.crontab`` (five fields: minute hour
  day-of-month month day-of-week, evaluated in the tenant's time zone; like Celery, a day must
  match both day fields). Each occurrence is a new ``CampaignRun`` with its own deliveries.
- ``local_time``: one run whose deliveries wait (``not_before``) for the next ``local_time`` in
  each recipient's zone. It starts at ``send_at`` when that is in the future (a clocked one-off
  task), else at once; ``run_start`` sets each delivery's ``not_before``.
- ``now``: no beat row; the service starts the run at once.

Exactly once per occurrence: the beat task passes ``scheduled_for`` (the occurrence, truncated to
the minute) to ``run_start``, and ``CampaignRun`` is unique per (tenant, campaign, scheduled_for), so
two beat instances or a redelivered task find the run that exists and send nothing twice.

Schedule rows (``ClockedSchedule``, ``CrontabSchedule``) may be shared with other tasks (beat's
own commands look them up by value), so they are never edited in place: a changed schedule points
the task at another row, and a row that no task uses any more is deleted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zoneinfo
from typing import Any

from celery.schedules import ParseException
from celery.schedules import crontab as celery_crontab
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q, Subquery
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, PeriodicTask

from campaigns import sending
from campaigns.models import Campaign, CampaignRun, Delivery
from segmentor.celery import app, fan_out, tenant_task
from tenants.models import Tenant

logger = logging.getLogger(__name__)

TASK_NAME = "campaigns.scheduling.start_scheduled_run"
# A beat tick reaches the worker a moment after the occurrence; a worker clock slightly behind
# beat's must still find the occurrence that fired, not the one before it.
CLOCK_TOLERANCE = dt.timedelta(seconds=5)
# A one-off tick for a time further ahead than this is stale: the campaign was moved to later.
EARLY = dt.timedelta(minutes=1)
# How far back to look for the last occurrence of a crontab (29 February on a Monday recurs
# every 28 years at worst; anything rarer is not a campaign schedule).
LOOKBACK_DAYS = 366 * 28
# A sending run whose deliveries nobody claimed for this long has lost its task.
STALLED_AFTER = dt.timedelta(minutes=15)


# --- time zones and crontabs ---------------------------------------------------------------------
def tenant_zone(tenant: Tenant) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(tenant.time_zone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def aware_in_tenant_zone(value: dt.datetime, tenant: Tenant) -> dt.datetime:
    """Return ``value`` unchanged when aware; read a naive value as wall-clock time in the tenant's zone."""
    if timezone.is_aware(value):
        return value
    return timezone.make_aware(value, tenant_zone(tenant))


def crontab_fields(expression: str) -> tuple[str, str, str, str, str]:
    """Split and check a five-field crontab; raise ValidationError on ``crontab`` with the reason."""
    parts = (expression or "").split()
    if len(parts) != 5:
        raise ValidationError(
            {
                "crontab": "Five fields separated by spaces: minute hour day-of-month month day-of-week "
                "(e.g. “0 9 * * 1” for Mondays at 09:00)."
            }
        )
    minute, hour, day_of_month, month, day_of_week = parts
    names = ("minute", "hour", "day of month", "month", "day of week")
    for name, value in zip(names, parts, strict=True):
        try:
            options: dict[str, Any] = {_CELERY_FIELD[name]: value}
            celery_crontab(**options)
        except (ValueError, ParseException, IndexError, KeyError) as error:
            raise ValidationError({"crontab": f"The {name} field “{value}” is not valid: {error}."}) from None
    return minute, hour, day_of_month, month, day_of_week


_CELERY_FIELD = {
    "minute": "minute",
    "hour": "hour",
    "day of month": "day_of_month",
    "month": "month_of_year",
    "day of week": "day_of_week",
}


def _cron(expression: str) -> Any:
    minute, hour, day_of_month, month, day_of_week = crontab_fields(expression)
    return celery_crontab(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week
    )


def _day_matches(cron: Any, day: dt.date) -> bool:
    # Celery's rule (beat fires by it): the month, the day of month and the weekday must all match.
    return day.month in cron.month_of_year and day.day in cron.day_of_month and day.isoweekday() % 7 in cron.day_of_week


def _occurrence(expression: str, moment: dt.datetime, zone: dt.tzinfo, *, forward: bool) -> dt.datetime | None:
    """Walk day by day from ``moment`` (in ``zone``) to the nearest firing time, backwards or forwards."""
    cron = _cron(expression)
    local = moment.astimezone(zone).replace(second=0, microsecond=0)
    now = (local.hour, local.minute)
    day, step = local.date(), dt.timedelta(days=1 if forward else -1)
    for _ in range(LOOKBACK_DAYS):
        if _day_matches(cron, day):
            today = day == local.date()
            for h in sorted(cron.hour, reverse=not forward):
                # Forwards: strictly after the moment; backwards: at or before it.
                minutes = [m for m in cron.minute if not today or ((h, m) > now if forward else (h, m) <= now)]
                if minutes:
                    wall = dt.datetime.combine(day, dt.time(h, min(minutes) if forward else max(minutes)), tzinfo=zone)
                    return wall.astimezone(dt.UTC)
        day += step
    return None


def previous_occurrence(expression: str, *, at: dt.datetime, zone: dt.tzinfo) -> dt.datetime | None:
    """The latest time at or before ``at`` that the crontab fires (in ``zone``), in UTC to the minute."""
    return _occurrence(expression, at, zone, forward=False)


def following_occurrence(expression: str, *, after: dt.datetime, zone: dt.tzinfo) -> dt.datetime | None:
    """The first time strictly after ``after`` that the crontab fires (in ``zone``), in UTC to the minute."""
    return _occurrence(expression, after, zone, forward=True)


def occurrence_now(campaign: Campaign, now: dt.datetime | None = None) -> dt.datetime:
    """The occurrence a beat tick arriving now stands for, truncated to the minute (the run's key)."""
    now = now or timezone.now()
    if campaign.schedule == Campaign.Schedule.RECURRING:
        found = previous_occurrence(campaign.crontab, at=now + CLOCK_TOLERANCE, zone=tenant_zone(campaign.tenant))
        moment = found or now
    elif campaign.schedule in (Campaign.Schedule.AT, Campaign.Schedule.LOCAL_TIME) and campaign.send_at:
        moment = campaign.send_at
    else:
        moment = now
    return moment.astimezone(dt.UTC).replace(second=0, microsecond=0)


# --- beat rows ---------------------------------------------------------------------------------
def periodic_task_name(campaign: Campaign) -> str:
    return f"campaign {campaign.tenant_id}:{campaign.pk}"


def needs_beat(campaign: Campaign, now: dt.datetime | None = None) -> bool:
    """Whether the campaign's schedule waits for beat (else the service starts the run at once)."""
    now = now or timezone.now()
    if campaign.schedule in (Campaign.Schedule.AT, Campaign.Schedule.RECURRING):
        return True
    return campaign.schedule == Campaign.Schedule.LOCAL_TIME and campaign.send_at is not None and campaign.send_at > now


def schedule_sync(*, campaign: Campaign, enabled: bool = True) -> PeriodicTask | None:
    """Create or update the campaign's beat row for its schedule (or remove it for "now").

    Call inside the service's transaction, with the campaign row locked.
    """
    if not needs_beat(campaign):
        schedule_remove(campaign=campaign)
        return None
    task = PeriodicTask.objects.filter(pk=campaign.periodic_task_id).first() if campaign.periodic_task_id else None
    old_clocked, old_crontab = (task.clocked_id, task.crontab_id) if task else (None, None)
    clocked: ClockedSchedule | None = None
    cron: CrontabSchedule | None = None
    if campaign.schedule == Campaign.Schedule.RECURRING:
        minute, hour, day_of_month, month, day_of_week = crontab_fields(campaign.crontab)
        cron = _crontab_row(
            minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week,
            timezone=str(tenant_zone(campaign.tenant)),
        )  # fmt: skip
    else:
        assert campaign.send_at is not None
        clocked = ClockedSchedule.objects.filter(clocked_time=campaign.send_at).order_by("pk").first()
        clocked = clocked or ClockedSchedule.objects.create(clocked_time=campaign.send_at)
    values: dict[str, Any] = {
        "name": periodic_task_name(campaign),
        "task": TASK_NAME,
        "args": json.dumps([campaign.tenant_id, campaign.pk]),
        "kwargs": "{}",
        "clocked": clocked,
        "crontab": cron,
        "interval": None,
        "solar": None,
        "one_off": clocked is not None,
        "enabled": enabled,
        "description": f"Campaign “{campaign.name}” ({campaign.get_schedule_display()})",
    }
    if task is None:
        # A row left behind by an earlier link (the campaign was re-created from a copy, or the
        # link was cleared by hand) has the same name: take it over.
        task = PeriodicTask.objects.filter(name=values["name"]).first() or PeriodicTask()
        old_clocked, old_crontab = task.clocked_id, task.crontab_id
    changed_schedule = (task.clocked_id, task.crontab_id) != (
        clocked.pk if clocked else None,
        cron.pk if cron else None,
    )
    for key, value in values.items():
        setattr(task, key, value)
    if changed_schedule:
        # A new time: beat must fire it again even if the old one already ran.
        task.last_run_at = None
        task.total_run_count = 0
    task.save()
    if campaign.periodic_task_id != task.pk:
        Campaign.objects.filter(pk=campaign.pk).update(periodic_task=task)
        campaign.periodic_task = task
    _drop_unused(clocked_id=old_clocked, crontab_id=old_crontab)
    return task


def _crontab_row(**fields: str) -> CrontabSchedule:
    existing = CrontabSchedule.objects.filter(**fields).order_by("pk").first()
    return existing or CrontabSchedule.objects.create(**fields)


def _drop_unused(*, clocked_id: int | None, crontab_id: int | None) -> None:
    """Delete schedule rows no task uses any more (only those: the delete would cascade to tasks)."""
    if clocked_id:
        ClockedSchedule.objects.filter(pk=clocked_id, periodictask__isnull=True).delete()
    if crontab_id:
        CrontabSchedule.objects.filter(pk=crontab_id, periodictask__isnull=True).delete()


def schedule_remove(*, campaign: Campaign) -> None:
    """Delete the campaign's beat row (and its schedule row when nothing else uses it)."""
    tasks = PeriodicTask.objects.filter(Q(name=periodic_task_name(campaign)) | Q(pk=campaign.periodic_task_id or 0))
    for task in tasks:
        clocked_id, crontab_id = task.clocked_id, task.crontab_id
        task.delete()
        _drop_unused(clocked_id=clocked_id, crontab_id=crontab_id)
    if campaign.periodic_task_id:
        Campaign.objects.filter(pk=campaign.pk).update(periodic_task=None)
        campaign.periodic_task = None


def schedule_set_enabled(*, campaign: Campaign, enabled: bool) -> None:
    """Stop (pause) or restart (resume) the campaign's beat row, if it has one."""
    if not campaign.periodic_task_id:
        return
    task = PeriodicTask.objects.filter(pk=campaign.periodic_task_id).first()
    if task is not None and task.enabled != enabled:
        task.enabled = enabled
        task.save()  # through save(): beat is told that its schedule changed


def next_occurrence(campaign: Campaign, now: dt.datetime | None = None) -> dt.datetime | None:
    """When the campaign's beat row fires next (for the UI), or None."""
    now = now or timezone.now()
    if campaign.schedule == Campaign.Schedule.RECURRING and campaign.crontab:
        try:
            return following_occurrence(campaign.crontab, after=now, zone=tenant_zone(campaign.tenant))
        except ValidationError:
            return None
    if campaign.send_at and needs_beat(campaign, now) and campaign.send_at > now:
        return campaign.send_at
    return None


# --- tasks --------------------------------------------------------------------------------------
def scheduled_run_start(*, campaign: Campaign, now: dt.datetime | None = None) -> CampaignRun | None:
    """Start the run for the occurrence that is due now, or return the one that exists (idempotent)."""
    now = now or timezone.now()
    early = campaign.schedule != Campaign.Schedule.RECURRING and campaign.send_at and campaign.send_at > now + EARLY
    if campaign.status not in (Campaign.Status.SCHEDULED, Campaign.Status.SENDING) or early:
        # Paused, cancelled, or moved to a later time after beat had sent this tick.
        logger.info(
            "campaign.beat_ignored",
            extra={"tenant_id": campaign.tenant_id, "campaign_id": campaign.pk, "status": campaign.status},
        )
        return None
    scheduled_for = occurrence_now(campaign, now)
    # run_start returns the run of this occurrence when one exists (CampaignRun is unique per
    # tenant, campaign and scheduled_for), so repeats and racing beat instances send nothing twice.
    run = sending.run_start(campaign=campaign, scheduled_for=scheduled_for)
    if run.status == CampaignRun.Status.SENDING:
        from campaigns.tasks import send_run

        tenant_id, run_id = run.tenant_id, run.pk
        transaction.on_commit(lambda: send_run.delay(tenant_id, run_id))
    return run


@tenant_task()
def start_scheduled_run(tenant_id: int, campaign_id: int) -> int | None:
    """Beat: start the campaign's run for this occurrence (one run per occurrence, however often called)."""
    campaign = Campaign.objects.select_related("tenant").filter(pk=campaign_id).first()
    if campaign is None:
        # The campaign was deleted without its schedule (e.g. in bulk): remove the orphan row.
        PeriodicTask.objects.filter(name=f"campaign {tenant_id}:{campaign_id}").delete()
        return None
    run = scheduled_run_start(campaign=campaign)
    return run.pk if run else None


def runs_stalled(*, tenant: Tenant, now: dt.datetime | None = None) -> list[CampaignRun]:
    """Sending runs with deliveries due now that nobody has claimed for ``STALLED_AFTER``."""
    now = now or timezone.now()
    cutoff = now - STALLED_AFTER
    deliveries = Delivery.objects.filter(tenant_id=tenant.pk, run_id=OuterRef("pk"))
    last_claim = deliveries.order_by().values("run_id").annotate(last=Max("claimed_at")).values("last")
    due = deliveries.filter(
        Q(status=Delivery.Status.PENDING, not_before__isnull=True)
        | Q(status=Delivery.Status.PENDING, not_before__lte=now)
        | Q(status=Delivery.Status.SENDING, claimed_at__lt=now - sending.STALE_CLAIM)
    )
    runs = (
        CampaignRun.objects.filter(tenant_id=tenant.pk, status=CampaignRun.Status.SENDING, started_at__lt=cutoff)
        .annotate(last_claim=Subquery(last_claim), has_due=Exists(due))
        .filter(Q(last_claim__isnull=True) | Q(last_claim__lt=cutoff), has_due=True)
    )
    return list(runs)


@tenant_task()
def resume_stalled_runs(tenant_id: int) -> list[int]:
    """Safety sweep: enqueue ``send_run`` again for runs whose task was lost (sending twice is harmless)."""
    from campaigns.tasks import send_run

    tenant = Tenant.objects.get(pk=tenant_id)
    ids = [run.pk for run in runs_stalled(tenant=tenant)]
    for run_id in ids:
        logger.warning("campaign.run_stalled", extra={"tenant_id": tenant_id, "run_id": run_id})
        send_run.delay(tenant_id, run_id)
    return ids


@app.task
def resume_stalled_runs_all() -> int:
    """Beat tick (every few minutes): each tenant re-enqueues its stalled runs."""
    return fan_out(resume_stalled_runs)
