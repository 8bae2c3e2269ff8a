"""Campaign tasks: send a run in claimed batches until every delivery is settled."""

from __future__ import annotations

from campaigns.models import CampaignRun
from campaigns.sending import (
    deliveries_claim,
    deliveries_reclaim_stale,
    deliveries_send,
    run_finish_if_done,
)
from segmentor.celery import tenant_task

RECHECK_SECONDS = 60


# acks_late: a worker killed mid-batch leaves the message unacknowledged, so the broker hands it
# to another worker, which reclaims the stale deliveries and finishes the run.
@tenant_task(acks_late=True, reject_on_worker_lost=True)
def send_run(tenant_id: int, run_id: int) -> dict[str, int]:
    run = CampaignRun.objects.filter(pk=run_id).first()
    if run is None or run.status != CampaignRun.Status.SENDING:
        return {}
    totals = {"sent": 0, "skipped": 0, "failed": 0, "retried": 0}
    deliveries_reclaim_stale(run=run)
    while ids := deliveries_claim(run=run):
        outcome = deliveries_send(run=run, ids=ids)
        for key in totals:
            totals[key] += getattr(outcome, key)
    if not run_finish_if_done(run=run):
        # Deferred deliveries (retries, claims of a dead worker) remain: look again later.
        send_run.apply_async((tenant_id, run_id), countdown=RECHECK_SECONDS)
    return totals
