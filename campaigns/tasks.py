"""Campaign tasks: send a run in claimed batches until every delivery is settled."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from campaigns.models import CampaignRun, Delivery
from campaigns.sending import (
    BATCH_SIZE,
    deliveries_claim_batch,
    deliveries_reclaim_stale,
    deliveries_send,
    run_finish_if_done,
    run_in_flight,
    run_next_due,
)
from segmentor.celery import tenant_task

# Held-back deliveries (retries, quiet hours, local times) are looked at again after at most this.
RECHECK_SECONDS = 60
MAX_RECHECK_SECONDS = 600  # below the Redis visibility timeout, so a waiting task is not redelivered
# A task hands over after this long, so one huge run does not hold a worker away from other tenants.
MAX_TASK_SECONDS = 300
# Tasks per run sending at once (a run's first task starts the others when there is enough to do).
DEFAULT_PARALLELISM = 2


def _parallelism() -> int:
    return max(1, int(getattr(settings, "CAMPAIGN_SEND_PARALLELISM", DEFAULT_PARALLELISM)))


def _due_count(run: CampaignRun, limit: int) -> int:
    now = timezone.now()
    due = Delivery.objects.filter(tenant_id=run.tenant_id, run=run, status=Delivery.Status.PENDING)
    return due.exclude(not_before__gt=now).order_by()[:limit].count()


# acks_late: a worker killed mid-batch leaves the message unacknowledged, so the broker hands it
# to another worker, which reclaims the stale deliveries and finishes the run. A lost database
# (a restart, a failover: the batch was put right by deliveries_send) retries after 1, 2, 4 … s,
# at most 5 min apart, for about an hour; the stalled-run sweep takes over after that.
@tenant_task(
    acks_late=True, reject_on_worker_lost=True, autoretry_for=(OperationalError, InterfaceError), max_retries=20,
    retry_backoff=1, retry_backoff_max=300, retry_jitter=False,
)  # fmt: skip
def send_run(tenant_id: int, run_id: int, helper: bool = False, fan_out: bool = True) -> dict[str, int]:
    """Send a run's due deliveries batch by batch; come back later for the held-back ones.

    The first task of a run (``helper`` False) starts ``CAMPAIGN_SEND_PARALLELISM - 1`` helpers
    when more than a batch is due (unless ``fan_out`` is False: it is the same task carrying on
    after ``MAX_TASK_SECONDS``, its helpers still run), and is the one that comes back for later
    work; helpers stop when nothing is left to claim. Claims stop when the run is paused or
    cancelled.
    """
    run = CampaignRun.objects.filter(pk=run_id).first()
    if run is None or run.status != CampaignRun.Status.SENDING:
        return {}
    totals = {"sent": 0, "skipped": 0, "failed": 0, "retried": 0, "deferred": 0}
    started = time.monotonic()
    if not helper:
        deliveries_reclaim_stale(run=run)
        helpers = _parallelism() - 1 if fan_out else 0
        if helpers and _due_count(run, BATCH_SIZE * 2) > BATCH_SIZE:
            for _ in range(helpers):
                send_run.apply_async((tenant_id, run_id), {"helper": True})
    while True:
        claim = deliveries_claim_batch(run=run)
        if not claim.ids:
            break
        outcome = deliveries_send(run=run, ids=claim.ids)
        for key in totals:
            totals[key] += getattr(outcome, key)
        if time.monotonic() - started > MAX_TASK_SECONDS:
            send_run.apply_async((tenant_id, run_id), {"helper": helper, "fan_out": False})
            return totals
    if not claim.run_open:
        return totals  # paused or cancelled: resuming enqueues a new task
    if run_finish_if_done(run=run) or helper:
        return totals  # done, or a helper with nothing left to claim (the first task comes back)
    if claim.wait is not None:
        wait = claim.wait  # the throttle's minute is used up
    else:
        # Held back (retries, quiet hours, local times) or still in another task's hands.
        due = run_next_due(run=run)
        wait = MAX_RECHECK_SECONDS if due is None else (due - timezone.now()).total_seconds()
        if run_in_flight(run=run):
            wait = min(wait, RECHECK_SECONDS)
    send_run.apply_async((tenant_id, run_id), countdown=min(max(wait, 1.0), MAX_RECHECK_SECONDS))
    return totals
