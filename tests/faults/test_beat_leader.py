"""Two beat schedulers at once fire each schedule once; the second takes over when the leader stops.

Both schedulers run in this process against the test database and publish to a queue of this test
on the real Redis broker; what "fired" means is counted there. They commit (the schedule is read
and written through Django's connection, the lock is taken on connections of their own).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
import time_machine
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from segmentor.beat import FOLLOWER_POLL_SECONDS, LeaderScheduler
from segmentor.celery import app

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def probe_queue() -> Iterator[str]:
    name = f"beat-probe-{uuid.uuid4().hex[:12]}"
    yield name
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(name)  # type: ignore[attr-defined]


def fired(queue: str) -> int:
    with app.connection_for_write() as conn:
        return int(conn.default_channel.client.llen(queue))  # type: ignore[attr-defined]


def every_minute(queue: str) -> PeriodicTask:
    """A schedule due now (its last run was five minutes ago), fired into ``queue``."""
    schedule = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    return PeriodicTask.objects.create(
        name="probe", task="tests.faults.probe", interval=schedule, queue=queue,
        last_run_at=timezone.now() - dt.timedelta(minutes=5),
    )  # fmt: skip


def tick(*schedulers, times: int = 3) -> None:
    for _ in range(times):
        for scheduler in schedulers:
            scheduler.tick()


def test_two_leader_schedulers_fire_once_and_the_other_takes_over_without_firing_again(probe_queue):
    every_minute(probe_queue)
    first, second = LeaderScheduler(app=app), LeaderScheduler(app=app)
    try:
        tick(first, second)
        assert fired(probe_queue) == 1
        assert (first.leading, second.leading) == (True, False)
        assert second.tick() == FOLLOWER_POLL_SECONDS

        # The leader's lock session ends under it (the process died, the database restarted).
        assert first.lock is not None and first.lock._connection is not None
        first.lock._connection.pgconn.finish()
        tick(second, first)
        assert (first.leading, second.leading) == (False, True)
        # The first wrote its last run when it fired, so the new leader does not fire it again.
        assert fired(probe_queue) == 1
        with time_machine.travel(timezone.now() + dt.timedelta(seconds=61)):
            tick(first, second)
        assert fired(probe_queue) == 2

        second.close()  # a leader that stops hands over at once
        tick(first)
        assert first.leading and fired(probe_queue) == 2
    finally:
        first.close()
        second.close()


def test_without_the_lock_two_database_schedulers_both_fire(probe_queue):
    """Why the lock exists: django-celery-beat's scheduler alone fires the schedule twice (each beat
    once, and here a third time: a schedule change seen in the middle of a tick rebuilds the heap from
    the entry as it was before it fired, which ``LeaderScheduler.reserve`` avoids)."""
    every_minute(probe_queue)
    first, second = DatabaseScheduler(app=app), DatabaseScheduler(app=app)
    try:
        tick(first, second)
        assert fired(probe_queue) >= 2
    finally:
        first.close()
        second.close()
