from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from segmentor.periodic import PERIODIC_TASKS

MANAGED_PREFIX = "segmentor: "


class Command(BaseCommand):
    help = "Install the periodic tasks declared in segmentor/periodic.py into the beat schedule."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        names = set()
        for spec in PERIODIC_TASKS:
            minute, hour, day_of_month, month_of_year, day_of_week = spec.crontab.split()
            schedule, _ = CrontabSchedule.objects.get_or_create(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
                timezone="UTC",
            )
            name = MANAGED_PREFIX + spec.name
            names.add(name)
            PeriodicTask.objects.update_or_create(
                name=name, defaults={"task": spec.task, "crontab": schedule, "interval": None, "enabled": True}
            )
        stale = PeriodicTask.objects.filter(name__startswith=MANAGED_PREFIX).exclude(name__in=names)
        removed, _ = stale.delete()
        self.stdout.write(f"{len(names)} periodic tasks installed, {removed} stale removed.")
